// The host's PostgreSQL pool: lazy connections, bounded waits, outage tracking, transactions,
// the once-helper and plugin migrations. See docs/database.md.
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>

#include "db/connection.hpp"
#include "db/db.hpp"

namespace wk::db {
namespace {

using detail::CallLimits;
using detail::Connection;
using detail::ResultHandle;
using detail::Statement;
using detail::SteadyClock;
using detail::WakeSignal;

// Host-owned tables. Created on the first connection of each pool, under a transaction-level
// advisory lock: concurrent CREATE TABLE IF NOT EXISTS from several workers can otherwise fail
// on the catalog's unique index.
constexpr const char* kHostSchema =
    "SELECT pg_advisory_xact_lock(7301151501262519313);"
    "CREATE TABLE IF NOT EXISTS wk_task_once ("
    "  key text PRIMARY KEY,"
    "  created_at timestamptz NOT NULL DEFAULT now());"
    "CREATE TABLE IF NOT EXISTS wk_plugin_migrations ("
    "  plugin_id text NOT NULL,"
    "  version bigint NOT NULL,"
    "  name text NOT NULL,"
    "  applied_at timestamptz NOT NULL DEFAULT now(),"
    "  PRIMARY KEY (plugin_id, version));";

constexpr uint32_t kInt8Oid = 20;
constexpr uint32_t kTextOid = 25;
// How long healthy() and rollback may take at most.
constexpr auto kHealthTimeout = std::chrono::seconds(2);
constexpr auto kRollbackTimeout = std::chrono::seconds(5);

// The advisory lock key of a plugin's migrations: FNV-1a 64 of a fixed prefix and the id,
// stable across processes and versions (unlike std::hash).
int64_t migration_lock_key(std::string_view plugin_id) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  auto mix = [&](std::string_view text) {
    for (unsigned char ch : text) {
      hash ^= ch;
      hash *= 0x100000001b3ULL;
    }
  };
  mix("wk_plugin_migrations:");
  mix(plugin_id);
  return static_cast<int64_t>(hash);
}

Param text_param(std::string value, uint32_t oid = kTextOid) {
  Param param;
  param.type_oid = oid;
  param.value = std::move(value);
  return param;
}

class PgResult final : public Result {
 public:
  explicit PgResult(ResultHandle result) : result_(std::move(result)) {}
  size_t rows() const override { return static_cast<size_t>(PQntuples(result_.get())); }
  size_t columns() const override { return static_cast<size_t>(PQnfields(result_.get())); }
  std::string_view column_name(size_t col) const override {
    const char* name = col < columns() ? PQfname(result_.get(), static_cast<int>(col)) : nullptr;
    return name != nullptr ? name : "";
  }
  uint32_t column_type(size_t col) const override {
    return col < columns() ? PQftype(result_.get(), static_cast<int>(col)) : 0;
  }
  bool is_null(size_t row, size_t col) const override {
    return !in_range(row, col) ||
           PQgetisnull(result_.get(), static_cast<int>(row), static_cast<int>(col)) != 0;
  }
  std::string_view value(size_t row, size_t col) const override {
    if (is_null(row, col)) return {};
    const int r = static_cast<int>(row), c = static_cast<int>(col);
    return {PQgetvalue(result_.get(), r, c), static_cast<size_t>(PQgetlength(result_.get(), r, c))};
  }
  uint64_t rows_affected() const override {
    const char* text = PQcmdTuples(result_.get());
    return (text != nullptr && *text != '\0') ? std::stoull(text) : 0;
  }

 private:
  bool in_range(size_t row, size_t col) const { return row < rows() && col < columns(); }
  ResultHandle result_;
};

class PoolCore;

// A connection taken from the pool; returns it (or discards it, if broken) on destruction.
class Lease {
 public:
  Lease(std::shared_ptr<PoolCore> core, std::unique_ptr<Connection> conn)
      : core_(std::move(core)), conn_(std::move(conn)) {}
  Lease(Lease&&) noexcept = default;
  Lease& operator=(Lease&&) noexcept = delete;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  ~Lease() { release(); }
  Connection& operator*() const noexcept { return *conn_; }
  Connection* operator->() const noexcept { return conn_.get(); }
  explicit operator bool() const noexcept { return conn_ != nullptr; }
  void release() noexcept;

 private:
  std::shared_ptr<PoolCore> core_;
  std::unique_ptr<Connection> conn_;
};

// Per call: the deadline converted to the steady clock, and a cancellation hook that wakes
// whatever the call waits on (the pool's condition variable, or poll() on the socket).
class CallScope {
 public:
  CallScope(std::shared_ptr<PoolCore> pool, const CallOptions& options);
  ~CallScope();
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;
  const CallLimits& limits() const noexcept { return limits_; }

 private:
  CallLimits limits_;
  std::shared_ptr<WakeSignal> wake_;
  task::Cancellation::Token token_ = 0;
};

class PoolCore : public std::enable_shared_from_this<PoolCore> {
 public:
  PoolCore(Settings settings, const log::Logger& logger)
      : settings_(std::move(settings)),
        logger_(logger.with({{"component", "db"},
                             {"db_host", settings_.host},
                             {"db_port", settings_.port},
                             {"db_name", settings_.dbname},
                             {"db_user", settings_.user}})) {
    if (settings_.pool_size < 1) settings_.pool_size = 1;
  }

  const Settings& settings() const noexcept { return settings_; }

  // Takes an idle connection that still looks alive, or opens one while under pool_size, or
  // waits (no longer than the deadline) for one to come back.
  Lease acquire(const CallLimits& limits) {
    std::unique_lock lock(mu_);
    for (;;) {
      if (limits.cancelled())
        throw Error(ErrorKind::cancelled, "", "cancelled while waiting for a database connection");
      if (!idle_.empty()) {
        // Most recently used first: it is the one most likely to be warm and alive.
        Lease lease(shared_from_this(), std::move(idle_.back()));
        idle_.pop_back();
        lock.unlock();
        if (usable(*lease, limits)) return lease;
        lease->mark_broken();
        lease.release();  // closes it and frees the slot
        lock.lock();
        continue;
      }
      if (open_ < settings_.pool_size) {
        ++open_;  // reserve the slot while connecting without the lock
        lock.unlock();
        std::unique_ptr<Connection> conn;
        try {
          conn = Connection::open(settings_, limits);
        } catch (const Error& error) {
          slot_failed();
          if (error.kind() == ErrorKind::unavailable) note_down(error.what());
          throw;
        } catch (...) {
          slot_failed();
          throw;
        }
        note_up();
        Lease lease(shared_from_this(), std::move(conn));
        ensure_host_schema(*lease, limits);
        return lease;
      }
      if (limits.deadline) {
        if (cv_.wait_until(lock, *limits.deadline) == std::cv_status::timeout && idle_.empty() &&
            open_ >= settings_.pool_size) {
          throw Error(ErrorKind::deadline, "",
                      "deadline exceeded waiting for a database connection (all " +
                          std::to_string(settings_.pool_size) + " in use)");
        }
      } else {
        cv_.wait(lock);
      }
    }
  }

  // Takes back a leased connection: idle again if healthy, otherwise closed.
  void give_back(std::unique_ptr<Connection> conn) noexcept {
    if (!conn) return;
    const bool keep = !conn->broken() && PQstatus(conn->raw()) == CONNECTION_OK &&
                      PQtransactionStatus(conn->raw()) == PQTRANS_IDLE;
    if (!keep) conn.reset();  // PQfinish outside the lock
    {
      std::lock_guard lock(mu_);
      if (keep) {
        conn->touch();
        idle_.push_back(std::move(conn));
      } else {
        --open_;
      }
    }
    cv_.notify_one();
  }

  // Called by a connection slot that failed to open (no Lease was made for it).
  void slot_failed() noexcept {
    {
      std::lock_guard lock(mu_);
      --open_;
    }
    cv_.notify_one();
  }

  void wake_waiters() {
    std::lock_guard lock(mu_);  // pairs with the waiter's check of cancelled() under mu_
    cv_.notify_all();
  }

  // One log line when the database goes away, one when it is back; none per query.
  void note_down(std::string_view reason) {
    std::vector<std::unique_ptr<Connection>> stale;
    {
      std::lock_guard lock(mu_);
      if (state_ != State::down) {
        state_ = State::down;
        state_seen_down_.store(true, std::memory_order_relaxed);
        logger_.warn("database unavailable", {{"error", std::string(reason)}});
      }
      // The idle ones most likely died with the server: close them now rather than fail one
      // call each after the server is back.
      open_ -= static_cast<int>(idle_.size());
      stale.swap(idle_);
    }
    cv_.notify_all();
  }

  void note_up() {
    std::lock_guard lock(mu_);
    if (state_ == State::down) logger_.info("database available again");
    if (state_ == State::unknown) logger_.info("database connected");
    state_ = State::up;
    state_seen_down_.store(false, std::memory_order_relaxed);
  }

  bool known_down() {
    std::lock_guard lock(mu_);
    return state_ == State::down;
  }

  // True when a connection is free or could be opened (healthy() should not wait behind busy
  // handlers: a pool that is fully in use is in use, not unready).
  bool has_capacity() {
    std::lock_guard lock(mu_);
    return !idle_.empty() || open_ < settings_.pool_size;
  }

  // Runs one statement on a leased connection with the call's limits; outage bookkeeping.
  // `timeout_scope`: set statement_timeout for the session, for the transaction, or (COMMIT:
  // a SET in a failed transaction would fail itself) not at all.
  enum class Timeout { session, transaction, none };
  ResultHandle run(Connection& conn, const Statement& statement, const CallLimits& limits,
                   Timeout timeout_scope) {
    try {
      if (timeout_scope != Timeout::none)
        conn.apply_statement_timeout(limits, timeout_scope == Timeout::transaction);
      ResultHandle result = conn.run(statement, limits);
      if (state_seen_down_.load(std::memory_order_relaxed)) note_up();
      return result;
    } catch (const Error& error) {
      if (error.kind() == ErrorKind::unavailable) note_down(error.what());
      throw;
    }
  }

  std::unique_ptr<Result> checked(ResultHandle handle) const {
    const PGresult* result = handle.get();
    const size_t rows = static_cast<size_t>(PQntuples(result));
    if (rows > settings_.max_rows) {
      throw Error(ErrorKind::too_large, "",
                  "result has " + std::to_string(rows) + " rows, over the limit of " +
                      std::to_string(settings_.max_rows));
    }
    size_t bytes = 0;
    const int columns = PQnfields(result);
    for (int row = 0; row < static_cast<int>(rows); ++row) {
      for (int col = 0; col < columns; ++col) bytes += static_cast<size_t>(PQgetlength(result, row, col));
    }
    if (bytes > settings_.max_bytes) {
      throw Error(ErrorKind::too_large, "",
                  "result has " + std::to_string(bytes) + " bytes, over the limit of " +
                      std::to_string(settings_.max_bytes));
    }
    return std::make_unique<PgResult>(std::move(handle));
  }

  const log::Logger& logger() const noexcept { return logger_; }

 private:
  enum class State { unknown, up, down };

  bool usable(Connection& conn, const CallLimits& limits) {
    if (!conn.looks_alive()) return false;
    if (SteadyClock::now() - conn.last_used() < settings_.idle_check_after) return true;
    // Idle for a while: a firewall or a server restart may have dropped it silently.
    CallLimits check = limits;
    const auto check_deadline =
        SteadyClock::now() + std::min<SteadyClock::duration>(kHealthTimeout, settings_.connect_timeout);
    if (!check.deadline || *check.deadline > check_deadline) check.deadline = check_deadline;
    try {
      conn.run(Statement{"SELECT 1"}, check);
      return true;
    } catch (const Error& error) {
      if (error.kind() == ErrorKind::cancelled) throw;
      return false;
    }
  }

  void ensure_host_schema(Connection& conn, const CallLimits& limits) {
    if (schema_ready_.load(std::memory_order_acquire)) return;
    try {
      run(conn, Statement{kHostSchema}, limits, Timeout::session);
      schema_ready_.store(true, std::memory_order_release);
    } catch (const Error& error) {
      if (error.kind() != ErrorKind::sql) throw;
      // E.g. no CREATE privilege: plugins that use neither once() nor migrations still work;
      // those that do get the server's error then.
      logger_.warn("cannot create the host's tables", {{"error", error.what()}});
    }
  }

  Settings settings_;
  log::Logger logger_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Connection>> idle_;
  int open_ = 0;  // idle + leased + being opened; never above pool_size
  State state_ = State::unknown;
  std::atomic<bool> state_seen_down_{false};
  std::atomic<bool> schema_ready_{false};

  friend class Lease;
};

void Lease::release() noexcept {
  if (core_ && conn_) core_->give_back(std::move(conn_));
}

CallScope::CallScope(std::shared_ptr<PoolCore> pool, const CallOptions& options) {
  if (options.deadline) {
    limits_.deadline = SteadyClock::now() + (*options.deadline - std::chrono::system_clock::now());
  }
  if (options.cancellation != nullptr) {
    limits_.cancellation = options.cancellation;
    wake_ = std::make_shared<WakeSignal>();
    limits_.wake = wake_.get();
    // The callback may run on another thread, even after remove() (the Cancellation takes
    // callbacks out of its list before running them): it owns what it touches.
    token_ = options.cancellation->on_cancel([wake = wake_, pool = std::move(pool)](task::CancelReason) {
      wake->fire();
      pool->wake_waiters();
    });
  }
}

CallScope::~CallScope() {
  if (limits_.cancellation != nullptr && token_ != 0) limits_.cancellation->remove(token_);
}

class PgTransaction final : public Transaction {
 public:
  PgTransaction(std::shared_ptr<PoolCore> core, Lease lease, const CallOptions& options)
      : core_(std::move(core)), lease_(std::move(lease)), begin_options_(options) {}
  ~PgTransaction() override { rollback(); }

  std::unique_ptr<Result> query(std::string_view sql, const std::vector<Param>& params,
                                const CallOptions& options) override {
    CallScope scope(core_, options);
    Connection& conn = open_connection();
    try {
      return core_->checked(core_->run(conn, Statement{sql, &params, options.binary_results}, scope.limits(),
                                       PoolCore::Timeout::transaction));
    } catch (const Error&) {
      if (conn.broken()) end();
      throw;
    }
  }

  void commit() override {
    // The deadline of begin(), not its cancellation: a handler that commits gets its commit.
    CallOptions options = begin_options_;
    options.cancellation = nullptr;
    CallScope scope(core_, options);
    Connection& conn = open_connection();
    ResultHandle result;
    try {
      result = core_->run(conn, Statement{"COMMIT"}, scope.limits(), PoolCore::Timeout::none);
    } catch (const Error& error) {
      // A server error (a deferred constraint) rolled the transaction back; anything else
      // leaves its outcome unknown and the connection is never reused.
      if (error.kind() != ErrorKind::sql) conn.mark_broken();
      end();
      throw;
    }
    end();
    // COMMIT of a transaction that already failed succeeds with the tag ROLLBACK.
    if (std::string_view(PQcmdStatus(result.get())) != "COMMIT") {
      throw Error(ErrorKind::sql, "25P02",
                  "commit failed: an earlier statement failed, the transaction was rolled back");
    }
  }

  void rollback() override {
    if (!lease_) return;
    try {
      CallOptions options;
      options.deadline = std::chrono::system_clock::now() + kRollbackTimeout;
      CallScope scope(core_, options);
      lease_->run(Statement{"ROLLBACK"}, scope.limits());
    } catch (...) {
      lease_->mark_broken();  // closing the connection rolls back on the server anyway
    }
    end();
  }

  // Runs a script of several statements (simple protocol) inside the transaction.
  void script(const std::string& sql) {
    Connection& conn = open_connection();
    try {
      core_->run(conn, Statement{sql}, CallLimits{}, PoolCore::Timeout::transaction);
    } catch (const Error&) {
      if (conn.broken()) end();
      throw;
    }
  }

  bool once(std::string_view key) override {
    const std::vector<Param> params{text_param(std::string(key))};
    auto result = query("INSERT INTO wk_task_once (key) VALUES ($1) ON CONFLICT (key) DO NOTHING", params,
                        begin_options_);
    return result->rows_affected() == 1;
  }

 private:
  Connection& open_connection() {
    if (!lease_) throw Error(ErrorKind::invalid, "", "the transaction is no longer open");
    return *lease_;
  }
  void end() noexcept {
    if (!lease_) return;
    lease_->transaction_ended();
    lease_.release();
  }

  std::shared_ptr<PoolCore> core_;
  Lease lease_;
  CallOptions begin_options_;
};

class PgPool final : public Pool {
 public:
  PgPool(const Settings& settings, const log::Logger& logger)
      : core_(std::make_shared<PoolCore>(settings, logger)) {}

  std::unique_ptr<Result> query(std::string_view sql, const std::vector<Param>& params,
                                const CallOptions& options) override {
    CallScope scope(core_, options);
    Lease lease = core_->acquire(scope.limits());
    return core_->checked(core_->run(*lease, Statement{sql, &params, options.binary_results}, scope.limits(),
                                     PoolCore::Timeout::session));
  }

  std::unique_ptr<Transaction> begin(const CallOptions& options) override { return begin_pg(options); }

  void migrate(std::string_view plugin_id, const std::vector<Migration>& migrations) override {
    if (plugin_id.empty()) throw Error(ErrorKind::invalid, "", "migrate: empty plugin id");
    for (size_t i = 0; i < migrations.size(); ++i) {
      if (migrations[i].version <= 0 || (i > 0 && migrations[i].version <= migrations[i - 1].version)) {
        throw Error(ErrorKind::invalid, "", "migrate: versions must be positive and strictly increasing");
      }
    }
    const std::string plugin(plugin_id);
    const std::set<int64_t> applied = applied_versions(plugin);
    for (const Migration& migration : migrations) {
      if (applied.count(migration.version) == 0) apply(plugin, migration);
    }
  }

  bool healthy() override {
    if (!core_->has_capacity()) return !core_->known_down();
    try {
      CallOptions options;
      options.deadline = std::chrono::system_clock::now() + kHealthTimeout;
      query("SELECT 1", {}, options);
      return true;
    } catch (const Error&) {
      return false;
    }
  }

 private:
  std::unique_ptr<PgTransaction> begin_pg(const CallOptions& options) {
    CallScope scope(core_, options);
    Lease lease = core_->acquire(scope.limits());
    core_->run(*lease, Statement{"BEGIN"}, scope.limits(), PoolCore::Timeout::session);
    return std::make_unique<PgTransaction>(core_, std::move(lease), options);
  }

  std::set<int64_t> applied_versions(const std::string& plugin) {
    auto result =
        query("SELECT version FROM wk_plugin_migrations WHERE plugin_id = $1", {text_param(plugin)}, {});
    std::set<int64_t> versions;
    for (size_t row = 0; row < result->rows(); ++row)
      versions.insert(std::stoll(std::string(result->value(row, 0))));
    return versions;
  }

  // One version in one transaction: lock, re-check (another worker may have applied it while
  // we waited for the lock), run, record.
  void apply(const std::string& plugin, const Migration& migration) {
    auto tx = begin_pg({});
    tx->query("SELECT pg_advisory_xact_lock($1)",
              {text_param(std::to_string(migration_lock_key(plugin)), kInt8Oid)}, {});
    const std::vector<Param> key{text_param(plugin), text_param(std::to_string(migration.version), kInt8Oid)};
    if (tx->query("SELECT 1 FROM wk_plugin_migrations WHERE plugin_id = $1 AND version = $2", key, {})
            ->rows() > 0) {
      return;  // rolled back by ~Transaction; nothing to do
    }
    try {
      tx->script(migration.sql);
    } catch (const Error& error) {
      throw Error(error.kind(), error.sqlstate(),
                  "migration " + plugin + " v" + std::to_string(migration.version) + " (" + migration.name +
                      ") failed: " + error.what());
    }
    tx->query("INSERT INTO wk_plugin_migrations (plugin_id, version, name) VALUES ($1, $2, $3)",
              {key[0], key[1], text_param(migration.name)}, {});
    tx->commit();
    core_->logger().info("applied migration",
                         {{"plugin", plugin}, {"version", migration.version}, {"migration", migration.name}});
  }

  std::shared_ptr<PoolCore> core_;
};

}  // namespace

std::unique_ptr<Pool> make_pool(const Settings& settings, const log::Logger& logger) {
  return std::make_unique<PgPool>(settings, logger);
}

}  // namespace wk::db
