#pragma once
// PostgreSQL for handlers: a libpq connection pool owned by the host (docs/database.md).
// This header is the contract the plugin layer's host API (pg_* functions) is written against.
// Behaviour (limits, timeouts, outages, once, migrations) is described in docs/database.md.
//
// Every call may throw db::Error. Its kind says what the caller should do:
//   unavailable  the database cannot be reached (connect failed, connection lost); retry later.
//                The message starts with "database unavailable: ".
//   sql          the server rejected the statement; sqlstate() holds PG_DIAG_SQLSTATE.
//   deadline     CallOptions::deadline passed (waiting for a connection, or statement_timeout).
//   cancelled    CallOptions::cancellation fired; a running query was cancelled on the server.
//   too_large    the result has more rows or bytes than Settings::max_rows / max_bytes.
//   invalid      misuse (closed transaction, bad migration list, COPY, too many parameters).
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "log/log.hpp"
#include "task/task.hpp"

namespace wk::db {

struct Settings {
  std::string host = "localhost";
  int port = 5432;
  std::string user = "postgres";
  std::string password;  // never logged
  std::string dbname = "autodevs";
  std::string sslmode = "disable";
  int pool_size = 4;
  std::chrono::seconds connect_timeout{5};
  // A pooled connection idle longer than this gets a round trip ("SELECT 1") before reuse;
  // younger ones only get the free local checks (PQstatus, pending input on the socket).
  std::chrono::seconds idle_check_after{30};
  std::string application_name = "autodevs-worker";  // shown in pg_stat_activity
  size_t max_rows = 100000;                          // per result
  size_t max_bytes = size_t{64} * 1024 * 1024;       // per result
};

enum class ErrorKind { unavailable, sql, deadline, cancelled, too_large, invalid };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string sqlstate, const std::string& message)
      : std::runtime_error(message), kind_(kind), sqlstate_(std::move(sqlstate)) {}
  ErrorKind kind() const noexcept { return kind_; }
  const std::string& sqlstate() const noexcept { return sqlstate_; }

 private:
  ErrorKind kind_;
  std::string sqlstate_;
};

// A query parameter ($1, $2, ...). type_oid 0 lets the server infer the type; binary values use
// the type's binary send format (bytea: the raw bytes).
struct Param {
  bool is_null = false;
  bool binary = false;
  uint32_t type_oid = 0;
  std::string value;
};

// Per call: when to give up and what cancels it (the task's). No deadline = wait as long as it
// takes (only host-side calls such as migrations should do that).
struct CallOptions {
  std::optional<std::chrono::system_clock::time_point> deadline;
  task::Cancellation* cancellation = nullptr;
  bool binary_results = false;
};

// An owned query result (PGresult).
class Result {
 public:
  virtual ~Result() = default;
  virtual size_t rows() const = 0;
  virtual size_t columns() const = 0;
  virtual std::string_view column_name(size_t col) const = 0;
  virtual uint32_t column_type(size_t col) const = 0;
  virtual bool is_null(size_t row, size_t col) const = 0;
  // Text or binary (CallOptions::binary_results) bytes; "" for NULL. Valid while *this lives.
  virtual std::string_view value(size_t row, size_t col) const = 0;
  virtual uint64_t rows_affected() const = 0;
};

// One connection held for several statements; rolled back on destruction unless committed.
// Queries run with the options given to each call; commit() honours the deadline given to
// begin() but not its cancellation (a handler that decides to commit gets its commit);
// rollback() never fails and always returns the connection to the pool (or discards it).
class Transaction {
 public:
  virtual ~Transaction() = default;
  virtual std::unique_ptr<Result> query(std::string_view sql, const std::vector<Param>& params,
                                        const CallOptions& options) = 0;
  virtual void commit() = 0;
  virtual void rollback() = 0;
  // Effectively-once: records `key` in this transaction. True the first time; false when a
  // committed transaction already recorded it.
  virtual bool once(std::string_view key) = 0;
};

struct Migration {
  int64_t version = 0;
  std::string name;
  std::string sql;
};

class Pool {
 public:
  virtual ~Pool() = default;
  // Autocommit statement on a pooled connection.
  virtual std::unique_ptr<Result> query(std::string_view sql, const std::vector<Param>& params,
                                        const CallOptions& options) = 0;
  virtual std::unique_ptr<Transaction> begin(const CallOptions& options) = 0;
  // Applies the migrations of `plugin_id` not applied yet, under an advisory lock, each version
  // in its own transaction, recorded in wk_plugin_migrations. Versions must be > 0 and strictly
  // increasing (else ErrorKind::invalid).
  virtual void migrate(std::string_view plugin_id, const std::vector<Migration>& migrations) = 0;
  // True when a connection can be had and answers (used by /readyz).
  virtual bool healthy() = 0;
};

// Lazy: connects on first use; the host starts and serves without a reachable database.
std::unique_ptr<Pool> make_pool(const Settings& settings, const log::Logger& logger);

}  // namespace wk::db
