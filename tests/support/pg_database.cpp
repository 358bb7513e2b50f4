#include "support/pg_database.hpp"

#include <gtest/gtest.h>

#include <memory>

#include "support/test_env.hpp"

namespace wk::test {

Database::Database() {
  const auto pg = pg_addr();
  const std::string conninfo = "host=" + pg.host + " port=" + std::to_string(pg.port) + " user=" + pg.user +
                               " dbname=" + pg.db + " connect_timeout=10";
  conn_ = PQconnectdb(conninfo.c_str());
  if (PQstatus(conn_) != CONNECTION_OK) {
    ADD_FAILURE() << "cannot connect to PostgreSQL: " << PQerrorMessage(conn_);
  }
}

Database::~Database() { PQfinish(conn_); }

std::vector<Database::Row> Database::exec(const std::string& sql, const std::vector<std::string>& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p.c_str());
  std::unique_ptr<PGresult, decltype(&PQclear)> res(
      PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                   nullptr, 0),
      &PQclear);
  std::vector<Row> rows;
  const auto status = PQresultStatus(res.get());
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    ADD_FAILURE() << "SQL failed: " << sql << ": " << PQerrorMessage(conn_);
    return rows;
  }
  for (int r = 0; r < PQntuples(res.get()); ++r) {
    Row row;
    for (int c = 0; c < PQnfields(res.get()); ++c) {
      row.push_back(PQgetisnull(res.get(), r, c) ? std::nullopt
                                                 : std::optional<std::string>(PQgetvalue(res.get(), r, c)));
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

std::optional<std::string> Database::scalar(const std::string& sql, const std::vector<std::string>& params) {
  auto rows = exec(sql, params);
  if (rows.empty() || rows[0].empty()) return std::nullopt;
  return rows[0][0];
}

}  // namespace wk::test
