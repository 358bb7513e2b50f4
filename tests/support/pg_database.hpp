#pragma once
// A plain libpq connection to the test PostgreSQL (WK_TEST_PG_*), for tests that check what a
// worker wrote. Errors fail the test (ADD_FAILURE) instead of throwing.
#include <libpq-fe.h>

#include <optional>
#include <string>
#include <vector>

namespace wk::test {

class Database {
 public:
  Database();
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  using Row = std::vector<std::optional<std::string>>;
  // Runs one statement with text parameters.
  std::vector<Row> exec(const std::string& sql, const std::vector<std::string>& params = {});
  // The first column of the first row, if any.
  std::optional<std::string> scalar(const std::string& sql, const std::vector<std::string>& params = {});

 private:
  PGconn* conn_ = nullptr;
};

}  // namespace wk::test
