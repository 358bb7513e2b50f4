#pragma once
// Helpers for the db integration tests: a plain libpq connection for checking what the pool
// did (independent of the code under test) and a database of our own on the test server. A
// private PostgreSQL server that a test may stop and restart is test::PrivatePostgres
// (support/private_postgres.hpp).
#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "db/db.hpp"

namespace wk::dbtest {

// A blocking admin connection; throws std::runtime_error on any failure.
class Sql {
 public:
  Sql(const std::string& host, int port, const std::string& user, const std::string& dbname);
  std::vector<std::vector<std::optional<std::string>>> rows(const std::string& sql);
  std::string scalar(const std::string& sql);  // first column of the first row
  void exec(const std::string& sql) { rows(sql); }

 private:
  struct Closer {
    void operator()(PGconn* conn) const noexcept { PQfinish(conn); }
  };
  std::unique_ptr<PGconn, Closer> conn_;
};

// This test process's own database on the server of WK_TEST_PG_* (created on first use,
// dropped at exit), so parallel test processes never see each other's rows or connections.
const std::string& test_database();
Sql admin_sql();   // connected to test_database() as the admin user
Sql server_sql();  // connected to the server's maintenance database (WK_TEST_PG_DB)
db::Settings test_settings(int pool_size, const std::string& application_name);
// Server connections of `application_name` to test_database(), seen in pg_stat_activity.
int connections_of(const std::string& application_name);
// A name no other test (process) uses: prefix + pid + counter.
std::string unique_name(const std::string& prefix);

}  // namespace wk::dbtest
