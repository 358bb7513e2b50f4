#include "pg_fixture.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <random>
#include <stdexcept>

#include "support/test_env.hpp"

namespace wk::dbtest {
namespace {

std::string random_hex(size_t chars) {
  std::random_device device;
  std::string out;
  for (size_t i = 0; i < chars; ++i) out.push_back("0123456789abcdef"[device() % 16]);
  return out;
}

// Drops this process's database at exit (gtest environments are torn down after all tests).
class DropTestDatabase : public ::testing::Environment {
 public:
  void TearDown() override {
    if (name_.empty()) return;
    try {
      server_sql().exec("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
    } catch (const std::exception&) {
      // Leaves a stray database behind at worst; the test result stands.
    }
  }
  std::string name_;
};

DropTestDatabase* drop_environment() {
  static DropTestDatabase* environment = [] {
    auto* env = new DropTestDatabase();
    ::testing::AddGlobalTestEnvironment(env);  // gtest owns it
    return env;
  }();
  return environment;
}

}  // namespace

Sql::Sql(const std::string& host, int port, const std::string& user, const std::string& dbname) {
  const std::string port_text = std::to_string(port);
  const char* keys[] = {"host", "port", "user", "dbname", nullptr};
  const char* values[] = {host.c_str(), port_text.c_str(), user.c_str(), dbname.c_str(), nullptr};
  conn_.reset(PQconnectdbParams(keys, values, 0));
  if (PQstatus(conn_.get()) != CONNECTION_OK) {
    throw std::runtime_error(std::string("admin connection failed: ") + PQerrorMessage(conn_.get()));
  }
}

std::vector<std::vector<std::optional<std::string>>> Sql::rows(const std::string& sql) {
  std::unique_ptr<PGresult, void (*)(PGresult*)> result(PQexec(conn_.get(), sql.c_str()), PQclear);
  const auto status = PQresultStatus(result.get());
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    throw std::runtime_error("admin query failed: " + sql + ": " + PQresultErrorMessage(result.get()));
  }
  std::vector<std::vector<std::optional<std::string>>> out;
  for (int row = 0; row < PQntuples(result.get()); ++row) {
    auto& cells = out.emplace_back();
    for (int col = 0; col < PQnfields(result.get()); ++col) {
      if (PQgetisnull(result.get(), row, col) != 0) {
        cells.emplace_back(std::nullopt);
      } else {
        cells.emplace_back(std::string(PQgetvalue(result.get(), row, col),
                                       static_cast<size_t>(PQgetlength(result.get(), row, col))));
      }
    }
  }
  return out;
}

std::string Sql::scalar(const std::string& sql) {
  auto all = rows(sql);
  if (all.empty() || all[0].empty() || !all[0][0]) throw std::runtime_error("no value from: " + sql);
  return *all[0][0];
}

Sql server_sql() {
  const auto addr = test::pg_addr();
  return Sql(addr.host, addr.port, addr.user, addr.db);
}

const std::string& test_database() {
  static const std::string name = [] {
    std::string db = "wk_db_test_" + std::to_string(::getpid()) + "_" + random_hex(6);
    server_sql().exec("CREATE DATABASE " + db);
    drop_environment()->name_ = db;
    return db;
  }();
  return name;
}

Sql admin_sql() {
  const auto addr = test::pg_addr();
  return Sql(addr.host, addr.port, addr.user, test_database());
}

db::Settings test_settings(int pool_size, const std::string& application_name) {
  const auto addr = test::pg_addr();
  db::Settings settings;
  settings.host = addr.host;
  settings.port = addr.port;
  settings.user = addr.user;
  settings.dbname = test_database();
  settings.pool_size = pool_size;
  settings.connect_timeout = std::chrono::seconds(3);
  settings.application_name = application_name;
  return settings;
}

int connections_of(const std::string& application_name) {
  return std::stoi(admin_sql().scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = '" +
                                      test_database() + "' AND application_name = '" + application_name +
                                      "'"));
}

std::string unique_name(const std::string& prefix) {
  static std::atomic<int> counter{0};
  return prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
}

}  // namespace wk::dbtest
