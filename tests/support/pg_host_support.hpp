#pragma once
// What the ABI tests that reach PostgreSQL through the plugin host share: settings for the test
// server, a database created once per suite, and a task run through the plugin host.
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "db/db.hpp"
#include "log/log.hpp"
#include "plugins/plugins.hpp"
#include "support/host_modes.hpp"
#include "support/test_env.hpp"
#include "task/task.hpp"

namespace wk::test {

// Settings for `dbname` on the test PostgreSQL (WK_TEST_PG_*).
inline db::Settings pg_settings(const std::string& dbname, int pool_size = 2) {
  const PgAddr addr = pg_addr();
  db::Settings s;
  s.host = addr.host;
  s.port = addr.port;
  s.user = addr.user;
  s.dbname = dbname;
  s.pool_size = pool_size;
  return s;
}

// Creates `dbname` unless it exists. Test cases run as separate processes, possibly at once.
inline void ensure_database(const std::string& dbname) {
  auto admin =
      db::make_pool(pg_settings(pg_addr().db), log::Logger::in_memory(log::Level::warn, log::Format::logfmt));
  try {
    admin->query("CREATE DATABASE " + dbname, {}, {});
  } catch (const db::Error& e) {
    // duplicate_database (an earlier run), or unique_violation (a parallel test process won).
    if (e.sqlstate() != "42P04" && e.sqlstate() != "23505") throw;
  }
}

// Runs `t` through `host` as the engine would, with a 30 s deadline; `t.id` and `t.queue` get a
// new UUID and "default" when empty.
inline task::Outcome dispatch_task(task::Dispatcher& host, task::Task& t, task::TaskServices& services) {
  if (t.id.empty()) t.id = task::new_uuid();
  if (t.queue.empty()) t.queue = "default";
  t.started_at = task::Clock::now();
  t.deadline = t.started_at + std::chrono::seconds(30);
  task::Cancellation cancellation;
  std::vector<task::EnqueueRequest> staged;
  task::Execution execution{t, cancellation, services, staged};
  return host.dispatch(execution);
}

}  // namespace wk::test
