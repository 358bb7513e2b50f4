#pragma once
// Internal to wk_db: one libpq connection driven in non-blocking mode, so every wait on the
// server is bounded by the call's deadline and interruptible by the task's cancellation.
#include <libpq-fe.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "db/db.hpp"
#include "task/task.hpp"

namespace wk::db::detail {

using SteadyClock = std::chrono::steady_clock;

struct ConnDeleter {
  void operator()(PGconn* conn) const noexcept { PQfinish(conn); }
};
struct ResultDeleter {
  void operator()(PGresult* result) const noexcept { PQclear(result); }
};
using ConnHandle = std::unique_ptr<PGconn, ConnDeleter>;
using ResultHandle = std::unique_ptr<PGresult, ResultDeleter>;

// An eventfd that a Cancellation callback writes to, so a thread blocked in poll() on the
// database socket wakes at once. Shared (shared_ptr) with the callback: a callback that the
// Cancellation already took out of its list may still run after the call ended.
class WakeSignal {
 public:
  WakeSignal();
  ~WakeSignal();
  WakeSignal(const WakeSignal&) = delete;
  WakeSignal& operator=(const WakeSignal&) = delete;
  void fire() noexcept;
  int fd() const noexcept { return fd_; }

 private:
  int fd_ = -1;
};

// What bounds one call: a deadline on the steady clock (immune to wall-clock jumps) and the
// task's cancellation, with the signal that wakes a blocked wait when it fires.
struct CallLimits {
  std::optional<SteadyClock::time_point> deadline;
  task::Cancellation* cancellation = nullptr;
  WakeSignal* wake = nullptr;

  bool cancelled() const noexcept { return cancellation != nullptr && cancellation->cancelled(); }
  bool expired() const noexcept { return deadline && SteadyClock::now() >= *deadline; }
};

// Replaces every occurrence of `secret` in `text` (libpq never echoes the password, but an
// error message is the last place it could leak from, so we make sure).
std::string redact(std::string text, std::string_view secret);

// One statement (or, with params == nullptr, a simple-protocol script of several statements).
struct Statement {
  std::string_view sql;
  const std::vector<Param>* params = nullptr;
  bool binary_results = false;
};

class Connection {
 public:
  // Connects without blocking past limits.deadline or Settings::connect_timeout. Throws
  // Error(unavailable) on failure, Error(deadline|cancelled) when the call gave up first.
  static std::unique_ptr<Connection> open(const Settings& settings, const CallLimits& limits);

  PGconn* raw() const noexcept { return conn_.get(); }
  // Broken connections are closed instead of returning to the pool.
  bool broken() const noexcept { return broken_; }
  void mark_broken() noexcept { broken_ = true; }
  // False when libpq or the socket already tell us the server is gone (no round trip).
  bool looks_alive();

  // Runs `statement` and returns its (last) result. Throws Error classified as in db.hpp;
  // marks the connection broken when it cannot be trusted any more.
  ResultHandle run(const Statement& statement, const CallLimits& limits);

  // Sets statement_timeout from the time left before limits.deadline (0 = none), with SET
  // LOCAL inside a transaction. Skips the round trip when the value is already in force.
  void apply_statement_timeout(const CallLimits& limits, bool in_transaction);
  // A transaction ended: SET LOCAL values are gone, the session value is in force again.
  void transaction_ended() noexcept { local_timeout_ms_.reset(); }

  SteadyClock::time_point last_used() const noexcept { return last_used_; }
  void touch() noexcept { last_used_ = SteadyClock::now(); }

 private:
  Connection(ConnHandle conn, std::string secret) : conn_(std::move(conn)), secret_(std::move(secret)) {}
  // Waits until libpq can hand out the next result without blocking.
  void wait_ready(const CallLimits& limits, bool& cancel_requested);
  [[noreturn]] void fail_lost(std::string_view what);

  ConnHandle conn_;
  std::string secret_;
  bool broken_ = false;
  long long session_timeout_ms_ = 0;  // statement_timeout at session level (server default 0)
  std::optional<long long> local_timeout_ms_;
  SteadyClock::time_point last_used_ = SteadyClock::now();
};

}  // namespace wk::db::detail
