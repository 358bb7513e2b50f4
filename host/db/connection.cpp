#include "db/connection.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <system_error>

namespace wk::db::detail {
namespace {

using std::chrono::milliseconds;

// After the deadline the server's statement_timeout should answer by itself; silence this
// long after it means the server or the network is gone, and the connection is given up.
constexpr auto kServerGrace = std::chrono::seconds(2);
// How long a cancel request may take to be confirmed before the connection is given up.
constexpr auto kCancelGrace = std::chrono::seconds(5);

struct CancelDeleter {
  void operator()(PGcancel* cancel) const noexcept { PQfreeCancel(cancel); }
};

// libpq messages end in a newline and may span lines ("...failed: Connection refused\n\tIs the
// server running..."); a log line and an error message want one line.
std::string one_line(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool pending_space = false;
  for (char ch : text) {
    if (ch == '\n' || ch == '\r' || ch == '\t' || ch == ' ') {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(ch);
  }
  return out;
}

int poll_timeout_ms(std::optional<SteadyClock::time_point> until) {
  if (!until) return -1;
  const auto left = std::chrono::ceil<milliseconds>(*until - SteadyClock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, INT_MAX));
}

std::optional<SteadyClock::time_point> earliest(std::optional<SteadyClock::time_point> a,
                                                std::optional<SteadyClock::time_point> b) {
  if (!a) return b;
  if (!b) return a;
  return std::min(*a, *b);
}

// Server notices (RAISE NOTICE, the FATAL a terminating backend sends an idle client) would go
// to stderr with libpq's default processor; the host's log format is ours alone.
void drop_notice(void*, const char*) {}

}  // namespace

WakeSignal::WakeSignal() : fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
}

WakeSignal::~WakeSignal() { ::close(fd_); }

void WakeSignal::fire() noexcept {
  const uint64_t one = 1;
  // Non-blocking; a full counter still leaves the fd readable, which is all we need.
  if (::write(fd_, &one, sizeof one) < 0) {
  }
}

std::string redact(std::string text, std::string_view secret) {
  if (secret.empty()) return text;
  for (size_t at = text.find(secret); at != std::string::npos; at = text.find(secret, at + 3)) {
    text.replace(at, secret.size(), "***");
  }
  return text;
}

std::unique_ptr<Connection> Connection::open(const Settings& settings, const CallLimits& limits) {
  if (limits.cancelled())
    throw Error(ErrorKind::cancelled, "", "cancelled before connecting to the database");
  const std::string port = std::to_string(settings.port);
  const std::string connect_timeout =
      std::to_string(std::max<long long>(settings.connect_timeout.count(), 1));
  std::vector<const char*> keys;
  std::vector<const char*> values;
  auto add = [&](const char* key, const std::string& value) {
    keys.push_back(key);
    values.push_back(value.c_str());
  };
  static const std::string kOn = "1", kIdle = "30", kInterval = "10", kCount = "3", kUtf8 = "UTF8";
  // Keywords, never a conninfo string: nothing in a value can add options, and there is no
  // string holding the password that could end up in a log.
  add("host", settings.host);
  add("port", port);
  add("user", settings.user);
  if (!settings.password.empty()) add("password", settings.password);
  add("dbname", settings.dbname);
  add("sslmode", settings.sslmode);
  add("connect_timeout", connect_timeout);
  add("application_name", settings.application_name);
  add("client_encoding", kUtf8);
  // Keepalives notice a peer that vanished without closing (about a minute) even when no
  // deadline bounds the call.
  add("keepalives", kOn);
  add("keepalives_idle", kIdle);
  add("keepalives_interval", kInterval);
  add("keepalives_count", kCount);
  keys.push_back(nullptr);
  values.push_back(nullptr);

  // Non-blocking connect: libpq's own connect_timeout only applies to the blocking calls, and
  // a call's deadline or cancellation must be able to cut the attempt short.
  ConnHandle conn(PQconnectStartParams(keys.data(), values.data(), /*expand_dbname=*/0));
  if (!conn)
    throw Error(ErrorKind::unavailable, "08001", "database unavailable: cannot allocate a connection");
  PQsetNoticeProcessor(conn.get(), drop_notice, nullptr);

  const auto timeout_at = SteadyClock::now() + settings.connect_timeout;
  const bool deadline_first = limits.deadline && *limits.deadline < timeout_at;
  const auto give_up_at = deadline_first ? *limits.deadline : timeout_at;
  PostgresPollingStatusType state =
      PQstatus(conn.get()) == CONNECTION_BAD ? PGRES_POLLING_FAILED : PGRES_POLLING_WRITING;
  while (state != PGRES_POLLING_OK) {
    if (state == PGRES_POLLING_FAILED) {
      throw Error(ErrorKind::unavailable, "08001",
                  "database unavailable: " + redact(one_line(PQerrorMessage(conn.get())), settings.password));
    }
    if (limits.cancelled())
      throw Error(ErrorKind::cancelled, "", "cancelled while connecting to the database");
    if (SteadyClock::now() >= give_up_at) {
      if (deadline_first)
        throw Error(ErrorKind::deadline, "", "deadline exceeded while connecting to the database");
      throw Error(ErrorKind::unavailable, "08001",
                  std::string("database unavailable: no connection to ")
                      .append(settings.host)
                      .append(":")
                      .append(port)
                      .append(" within ")
                      .append(connect_timeout)
                      .append("s"));
    }
    pollfd fds[2] = {
        {PQsocket(conn.get()), static_cast<short>(state == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0},
        {limits.wake != nullptr ? limits.wake->fd() : -1, POLLIN, 0}};
    const int rc = ::poll(fds, limits.wake != nullptr ? 2 : 1, poll_timeout_ms(give_up_at));
    if (rc > 0 && fds[0].revents != 0) state = PQconnectPoll(conn.get());
  }
  if (PQsetnonblocking(conn.get(), 1) != 0) {
    throw Error(ErrorKind::unavailable, "08001",
                "database unavailable: cannot switch the connection to non-blocking mode");
  }
  return std::unique_ptr<Connection>(new Connection(std::move(conn), settings.password));
}

bool Connection::looks_alive() {
  PGconn* conn = raw();
  if (PQstatus(conn) != CONNECTION_OK || PQtransactionStatus(conn) != PQTRANS_IDLE) return false;
  // An idle connection has nothing to read unless the server wrote to it: a terminating
  // backend's FATAL, then end of file. The end of file may come a little after the FATAL (the
  // backend cleans up before it exits), so input that is not a notification already means the
  // connection is going: libpq keeps such an error as a notice and still reports CONNECTION_OK.
  for (int round = 0; round < 3; ++round) {
    pollfd fd{PQsocket(conn), POLLIN, 0};
    if (::poll(&fd, 1, 0) <= 0) break;
    if (PQconsumeInput(conn) == 0 || PQstatus(conn) != CONNECTION_OK) return false;
    bool notified = false;
    while (PGnotify* note = PQnotifies(conn)) {
      PQfreemem(note);
      notified = true;
    }
    if (!notified) return false;
  }
  return PQstatus(conn) == CONNECTION_OK;
}

void Connection::fail_lost(std::string_view what) {
  broken_ = true;
  throw Error(ErrorKind::unavailable, "08006", "database unavailable: " + redact(one_line(what), secret_));
}

namespace {
struct WaitState {
  bool cancel_requested = false;
  std::optional<SteadyClock::time_point> cancel_give_up;
};
}  // namespace

ResultHandle Connection::run(const Statement& statement, const CallLimits& limits) {
  if (limits.cancelled()) throw Error(ErrorKind::cancelled, "", "query not sent: the task was cancelled");
  if (limits.expired()) throw Error(ErrorKind::deadline, "", "query not sent: the deadline has passed");
  PGconn* conn = raw();
  const std::string sql(statement.sql);  // libpq wants it NUL-terminated
  int sent = 0;
  if (statement.params != nullptr) {
    const auto& params = *statement.params;
    if (params.size() > 65535) throw Error(ErrorKind::invalid, "", "more than 65535 query parameters");
    std::vector<Oid> types(params.size());
    std::vector<const char*> values(params.size());
    std::vector<int> lengths(params.size());
    std::vector<int> formats(params.size());
    for (size_t i = 0; i < params.size(); ++i) {
      const Param& param = params[i];
      if (param.value.size() > static_cast<size_t>(INT_MAX)) {
        throw Error(ErrorKind::invalid, "",
                    "query parameter $" + std::to_string(i + 1) + " is larger than 2 GiB");
      }
      types[i] = param.type_oid;
      values[i] = param.is_null ? nullptr : param.value.data();
      lengths[i] = static_cast<int>(param.value.size());
      formats[i] = param.binary ? 1 : 0;
    }
    sent = PQsendQueryParams(conn, sql.c_str(), static_cast<int>(params.size()), types.data(), values.data(),
                             lengths.data(), formats.data(), statement.binary_results ? 1 : 0);
  } else {
    sent = PQsendQuery(conn, sql.c_str());
  }
  if (sent == 0) {
    if (PQstatus(conn) == CONNECTION_BAD) fail_lost(PQerrorMessage(conn));
    throw Error(ErrorKind::invalid, "", redact(one_line(PQerrorMessage(conn)), secret_));
  }

  WaitState wait;
  ResultHandle kept;
  ResultHandle first_error;
  for (;;) {
    // Waits until the next result (or the end of results) is available without blocking.
    for (;;) {
      const int flushed = PQflush(conn);
      if (flushed < 0) fail_lost(PQerrorMessage(conn));
      if (flushed == 0) {
        if (PQconsumeInput(conn) == 0) fail_lost(PQerrorMessage(conn));
        if (PQisBusy(conn) == 0) break;
      }
      if (!wait.cancel_requested && limits.cancelled()) {
        // Ask the server to stop the statement; it answers with SQLSTATE 57014, after which
        // the connection is clean and goes back to the pool.
        wait.cancel_requested = true;
        wait.cancel_give_up = SteadyClock::now() + kCancelGrace;
        if (std::unique_ptr<PGcancel, CancelDeleter> cancel{PQgetCancel(conn)}) {
          char reason[256];
          PQcancel(cancel.get(), reason, sizeof reason);
        }
      }
      const auto server_give_up =
          limits.deadline ? std::optional(*limits.deadline + kServerGrace) : std::nullopt;
      const auto give_up = earliest(server_give_up, wait.cancel_give_up);
      if (give_up && SteadyClock::now() >= *give_up) {
        // The server is not answering: the connection's state is unknown, so it is closed.
        broken_ = true;
        if (wait.cancel_requested) {
          throw Error(ErrorKind::cancelled, "57014",
                      "task cancelled; the database did not confirm the cancel, connection closed");
        }
        throw Error(ErrorKind::deadline, "57014",
                    "deadline exceeded and the database did not answer; connection closed");
      }
      const bool watch_wake = limits.wake != nullptr && !wait.cancel_requested;
      pollfd fds[2] = {{PQsocket(conn), static_cast<short>(POLLIN | (flushed == 1 ? POLLOUT : 0)), 0},
                       {watch_wake ? limits.wake->fd() : -1, POLLIN, 0}};
      if (::poll(fds, watch_wake ? 2 : 1, poll_timeout_ms(give_up)) < 0 && errno != EINTR) {
        fail_lost(std::string("poll: ") + std::strerror(errno));
      }
    }
    ResultHandle result(PQgetResult(conn));
    if (!result) break;
    switch (PQresultStatus(result.get())) {
      case PGRES_COPY_IN:
      case PGRES_COPY_OUT:
      case PGRES_COPY_BOTH:
        // The protocol now expects COPY data we cannot supply: the connection is unusable.
        broken_ = true;
        throw Error(ErrorKind::invalid, "", "COPY is not supported through the host's database API");
      case PGRES_FATAL_ERROR:
      case PGRES_BAD_RESPONSE:
        if (!first_error) first_error = std::move(result);
        break;
      default:
        kept = std::move(result);
        break;
    }
  }

  if (first_error) {
    const PGresult* error = first_error.get();
    auto field = [&](int code) {
      const char* text = PQresultErrorField(error, code);
      return std::string(text != nullptr ? text : "");
    };
    const std::string sqlstate = field(PG_DIAG_SQLSTATE);
    std::string message = field(PG_DIAG_MESSAGE_PRIMARY);
    if (message.empty()) message = one_line(PQresultErrorMessage(error));
    const bool lost = PQstatus(conn) == CONNECTION_BAD || sqlstate.starts_with("08") || sqlstate == "57P01" ||
                      sqlstate == "57P02" || sqlstate == "57P03";
    if (lost) {
      broken_ = true;
      throw Error(ErrorKind::unavailable, sqlstate.empty() ? "08006" : sqlstate,
                  "database unavailable: " + redact(one_line(message), secret_));
    }
    const std::string detail = field(PG_DIAG_MESSAGE_DETAIL);
    if (!detail.empty()) message += " (" + detail + ")";
    message = redact(one_line(message + " [SQLSTATE " + sqlstate + "]"), secret_);
    if (sqlstate == "57014") {
      // A cancel we sent, or statement_timeout (which we set from the deadline).
      if (wait.cancel_requested) throw Error(ErrorKind::cancelled, sqlstate, "task cancelled: " + message);
      if (limits.deadline) throw Error(ErrorKind::deadline, sqlstate, "deadline exceeded: " + message);
    }
    throw Error(ErrorKind::sql, sqlstate, message);
  }
  if (PQstatus(conn) == CONNECTION_BAD) fail_lost(PQerrorMessage(conn));
  if (!kept) throw Error(ErrorKind::invalid, "", "the database returned no result");
  touch();
  return kept;
}

void Connection::apply_statement_timeout(const CallLimits& limits, bool in_transaction) {
  long long wanted_ms = 0;
  if (limits.deadline) {
    const auto left = std::chrono::ceil<milliseconds>(*limits.deadline - SteadyClock::now()).count();
    wanted_ms = std::max<long long>(left, 1);
  }
  const long long in_force = in_transaction && local_timeout_ms_ ? *local_timeout_ms_ : session_timeout_ms_;
  if (wanted_ms == in_force) return;
  // An integer we formatted ourselves: nothing to escape.
  const std::string sql =
      std::string(in_transaction ? "SET LOCAL statement_timeout = " : "SET statement_timeout = ") +
      std::to_string(wanted_ms);
  run(Statement{sql}, limits);
  if (in_transaction) {
    local_timeout_ms_ = wanted_ms;
  } else {
    session_timeout_ms_ = wanted_ms;
  }
}

}  // namespace wk::db::detail
