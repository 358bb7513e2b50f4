// PostgreSQL going away and coming back, on a private server this test owns; the password of
// a real password-protected role never shows in a log line or an error.
#include <gtest/gtest.h>

#include "db/db.hpp"
#include "log/log.hpp"
#include "pg_fixture.hpp"
#include "support/private_postgres.hpp"
#include "support/test_env.hpp"

namespace wk::db {
namespace {

using namespace std::chrono_literals;

CallOptions within(std::chrono::milliseconds budget) {
  CallOptions options;
  options.deadline = std::chrono::system_clock::now() + budget;
  return options;
}

size_t lines_with(const std::vector<std::string>& lines, const std::string& needle) {
  size_t count = 0;
  for (const auto& line : lines) count += line.find(needle) != std::string::npos ? 1 : 0;
  return count;
}

Settings private_settings(const test::PrivatePostgres& server, const std::string& password) {
  Settings settings;
  settings.host = "127.0.0.1";
  settings.port = server.port();
  settings.user = server.role();
  settings.password = password;
  settings.dbname = server.database();
  settings.pool_size = 2;
  settings.connect_timeout = 3s;
  return settings;
}

TEST(DbOutage, StoppedServerGivesUnavailableThenThePoolRecovers) {
  test::PrivatePostgres server;
  auto logger = log::Logger::in_memory(log::Level::trace, log::Format::logfmt);
  auto pool = make_pool(private_settings(server, server.password()), logger);
  std::vector<std::string> errors;

  EXPECT_EQ(pool->query("SELECT current_user", {}, within(5s))->value(0, 0), server.role());
  auto open_tx = pool->begin(within(30s));  // holds the second connection across the outage
  EXPECT_TRUE(pool->healthy());

  server.stop();
  for (int attempt = 0; attempt < 5; ++attempt) {
    try {
      pool->query("SELECT 1", {}, within(5s));
      ADD_FAILURE() << "query succeeded with the server stopped";
    } catch (const Error& error) {
      EXPECT_EQ(error.kind(), ErrorKind::unavailable) << error.what();
      EXPECT_TRUE(std::string(error.what()).starts_with("database unavailable: ")) << error.what();
      errors.emplace_back(error.what());
    }
  }
  try {
    open_tx->query("SELECT 1", {}, within(5s));
    ADD_FAILURE() << "a transaction survived the server";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::unavailable) << error.what();
    errors.emplace_back(error.what());
  }
  open_tx.reset();
  EXPECT_FALSE(pool->healthy());

  server.start();
  ASSERT_TRUE(test::eventually(
      [&] {
        try {
          return pool->query("SELECT 'back'", {}, within(2s))->value(0, 0) == "back";
        } catch (const Error& error) {
          errors.emplace_back(error.what());
          return false;
        }
      },
      20s, 20ms));
  EXPECT_TRUE(pool->healthy());
  pool->query("SELECT 2", {}, within(5s));

  const auto lines = logger.lines();
  EXPECT_EQ(lines_with(lines, "msg=\"database unavailable\""), 1u) << ::testing::PrintToString(lines);
  EXPECT_EQ(lines_with(lines, "msg=\"database available again\""), 1u) << ::testing::PrintToString(lines);
  for (const auto& line : lines) EXPECT_EQ(line.find(server.password()), std::string::npos) << line;
  for (const auto& error : errors) EXPECT_EQ(error.find(server.password()), std::string::npos) << error;
}

TEST(DbOutage, WrongPasswordIsUnavailableAndNeverShown) {
  test::PrivatePostgres server;
  auto logger = log::Logger::in_memory(log::Level::trace, log::Format::json);
  const std::string wrong = "Wrong-" + server.password();
  auto pool = make_pool(private_settings(server, wrong), logger);
  try {
    pool->query("SELECT 1", {}, within(5s));
    ADD_FAILURE() << "connected with a wrong password";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::unavailable);
    const std::string message = error.what();
    EXPECT_NE(message.find("password authentication failed"), std::string::npos) << message;
    EXPECT_EQ(message.find(wrong), std::string::npos) << message;
    EXPECT_EQ(message.find(server.password()), std::string::npos) << message;
  }
  EXPECT_FALSE(pool->healthy());
  const auto lines = logger.lines();
  EXPECT_EQ(lines_with(lines, "database unavailable"), 1u) << ::testing::PrintToString(lines);
  for (const auto& line : lines) EXPECT_EQ(line.find(server.password()), std::string::npos) << line;

  // And the right one works on the same server.
  auto good = make_pool(private_settings(server, server.password()), logger);
  EXPECT_EQ(good->query("SELECT 1", {}, within(5s))->value(0, 0), "1");
}

}  // namespace
}  // namespace wk::db
