#include <gtest/gtest.h>

#include "config/config.hpp"

namespace wk::config {
namespace {

TEST(Dotenv, ParsesAssignmentsCommentsQuotesAndExport) {
  const auto s = parse_dotenv(
      "# a comment\n"
      "\n"
      "REDIS_HOST=redis.local\n"
      "export REDIS_PORT=6380\n"
      "  DB_NAME = spaced  \n"
      "AI_COMMAND='claude -p \"$X\"'\n"
      "DB_PASSWORD=\"p\\\"w\\\\d\\n\"  # trailing comment\n"
      "WORKER_QUEUES=a=1,b=2 # comment after a value\n"
      "WORKER_NAME=a#b\n"
      "EMPTY=\n"
      "CRLF=yes\r\n");
  EXPECT_EQ(s.at("REDIS_HOST"), "redis.local");
  EXPECT_EQ(s.at("REDIS_PORT"), "6380");
  EXPECT_EQ(s.at("DB_NAME"), "spaced");
  EXPECT_EQ(s.at("AI_COMMAND"), "claude -p \"$X\"");
  EXPECT_EQ(s.at("DB_PASSWORD"), "p\"w\\d\n");
  EXPECT_EQ(s.at("WORKER_QUEUES"), "a=1,b=2");
  EXPECT_EQ(s.at("WORKER_NAME"), "a#b");
  EXPECT_EQ(s.at("EMPTY"), "");
  EXPECT_EQ(s.at("CRLF"), "yes");
  EXPECT_EQ(s.size(), 9u);
}

TEST(Dotenv, LaterAssignmentWins) { EXPECT_EQ(parse_dotenv("A=1\nA=2\n").at("A"), "2"); }

TEST(Dotenv, MalformedLineNamesFileAndLine) {
  try {
    parse_dotenv("A=1\nthis is not an assignment\n", "/etc/worker.env");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("/etc/worker.env:2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_dotenv("A=\"unterminated\n"), ConfigError);
  EXPECT_THROW(parse_dotenv("1A=x\n"), ConfigError);
  EXPECT_THROW(parse_dotenv("A B=x\n"), ConfigError);
  EXPECT_THROW(parse_dotenv("A='x' junk\n"), ConfigError);
}

}  // namespace
}  // namespace wk::config
