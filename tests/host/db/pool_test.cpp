// The pool against the real test PostgreSQL (WK_TEST_PG_*), in a database of this process.
#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <thread>

#include "db/db.hpp"
#include "log/log.hpp"
#include "pg_fixture.hpp"
#include "support/test_env.hpp"

namespace wk::db {
namespace {

using namespace std::chrono_literals;
using dbtest::admin_sql;
using dbtest::connections_of;
using dbtest::test_settings;
using dbtest::unique_name;

constexpr uint32_t kInt4 = 23, kBytea = 17, kText = 25;

Param text(std::string value, uint32_t oid = 0) {
  Param param;
  param.type_oid = oid;
  param.value = std::move(value);
  return param;
}
Param binary(std::string value, uint32_t oid) {
  Param param = text(std::move(value), oid);
  param.binary = true;
  return param;
}
Param null_param(uint32_t oid = 0) {
  Param param;
  param.type_oid = oid;
  param.is_null = true;
  return param;
}
CallOptions within(std::chrono::milliseconds budget, task::Cancellation* cancellation = nullptr) {
  CallOptions options;
  options.deadline = std::chrono::system_clock::now() + budget;
  options.cancellation = cancellation;
  return options;
}

// Runs `call` and returns the db::Error it throws (fails the test if it throws none).
template <class Call>
Error error_of(Call&& call) {
  try {
    call();
  } catch (const Error& error) {
    return error;
  }
  ADD_FAILURE() << "expected a db::Error";
  return Error(ErrorKind::invalid, "", "none thrown");
}

struct PoolTest : ::testing::Test {
  log::Logger logger = log::Logger::in_memory(log::Level::debug, log::Format::logfmt);
  std::string app = unique_name("wk_pool");
  std::unique_ptr<Pool> make(int pool_size) { return make_pool(test_settings(pool_size, app), logger); }
  std::string scalar(Pool& pool, const std::string& sql) {
    auto result = pool.query(sql, {}, within(5s));
    return std::string(result->value(0, 0));
  }
};

TEST_F(PoolTest, ParamsWithNullAndByteaInTextAndBinaryForms) {
  auto pool = make(2);
  const std::string table = unique_name("params");
  pool->query("CREATE TABLE " + table + " (id int, b bytea, s text)", {}, within(5s));
  const std::string raw("\x00\xff\x01", 3);
  // Binary bytea is the raw bytes; text bytea is the server's hex form. Both store the same.
  auto inserted = pool->query("INSERT INTO " + table + " VALUES ($1, $2, $3), ($4, $5, $6)",
                              {text("1"), binary(raw, kBytea), null_param(kText), text("2"),
                               text("\\x00ff01", kBytea), text("hello")},
                              within(5s));
  EXPECT_EQ(inserted->rows_affected(), 2u);

  auto as_text = pool->query("SELECT id, b, s FROM " + table + " ORDER BY id", {}, within(5s));
  ASSERT_EQ(as_text->rows(), 2u);
  ASSERT_EQ(as_text->columns(), 3u);
  EXPECT_EQ(as_text->column_name(1), "b");
  EXPECT_EQ(as_text->column_type(0), kInt4);
  EXPECT_EQ(as_text->column_type(1), kBytea);
  EXPECT_EQ(as_text->column_type(2), kText);
  EXPECT_EQ(as_text->value(0, 1), "\\x00ff01");
  EXPECT_EQ(as_text->value(1, 1), "\\x00ff01");
  EXPECT_TRUE(as_text->is_null(0, 2));
  EXPECT_EQ(as_text->value(0, 2), "");
  EXPECT_FALSE(as_text->is_null(1, 2));
  EXPECT_EQ(as_text->value(1, 2), "hello");

  CallOptions binary_results = within(5s);
  binary_results.binary_results = true;
  auto as_binary = pool->query("SELECT id, b FROM " + table + " WHERE b = $1 ORDER BY id",
                               {binary(raw, kBytea)}, binary_results);
  ASSERT_EQ(as_binary->rows(), 2u);
  EXPECT_EQ(as_binary->value(0, 0), std::string("\x00\x00\x00\x01", 4));  // int4, network order
  EXPECT_EQ(as_binary->value(0, 1), raw);
  EXPECT_EQ(as_binary->value(1, 1), raw);

  auto updated = pool->query("UPDATE " + table + " SET s = $1 WHERE s IS NULL OR s = $2",
                             {text("x"), text("hello")}, within(5s));
  EXPECT_EQ(updated->rows_affected(), 2u);
  EXPECT_EQ(updated->rows(), 0u);
}

TEST_F(PoolTest, ServerErrorsCarrySqlstateAndLeaveThePoolUsable) {
  auto pool = make(1);
  auto division = error_of([&] { pool->query("SELECT 1 / $1::int", {text("0")}, within(5s)); });
  EXPECT_EQ(division.kind(), ErrorKind::sql);
  EXPECT_EQ(division.sqlstate(), "22012");
  EXPECT_NE(std::string(division.what()).find("division by zero"), std::string::npos) << division.what();

  const std::string table = unique_name("uniq");
  pool->query("CREATE TABLE " + table + " (k text PRIMARY KEY)", {}, within(5s));
  pool->query("INSERT INTO " + table + " VALUES ('a')", {}, within(5s));
  auto duplicate = error_of([&] { pool->query("INSERT INTO " + table + " VALUES ('a')", {}, within(5s)); });
  EXPECT_EQ(duplicate.kind(), ErrorKind::sql);
  EXPECT_EQ(duplicate.sqlstate(), "23505");

  auto syntax = error_of([&] { pool->query("SELEC 1", {}, within(5s)); });
  EXPECT_EQ(syntax.sqlstate(), "42601");
  // The extended protocol takes one statement: a second one is refused, not run.
  auto two = error_of([&] { pool->query("SELECT 1; SELECT 2", {}, within(5s)); });
  EXPECT_EQ(two.kind(), ErrorKind::sql);

  EXPECT_EQ(scalar(*pool, "SELECT 41 + 1"), "42");
}

TEST_F(PoolTest, RowAndByteLimitsAreTooLarge) {
  auto settings = test_settings(1, app);
  settings.max_rows = 10;
  settings.max_bytes = 1000;
  auto pool = make_pool(settings, logger);
  EXPECT_EQ(pool->query("SELECT generate_series(1, 10)", {}, within(5s))->rows(), 10u);
  EXPECT_EQ(error_of([&] { pool->query("SELECT generate_series(1, 11)", {}, within(5s)); }).kind(),
            ErrorKind::too_large);
  EXPECT_EQ(pool->query("SELECT repeat('x', 1000)", {}, within(5s))->value(0, 0).size(), 1000u);
  EXPECT_EQ(error_of([&] { pool->query("SELECT repeat('x', 1001)", {}, within(5s)); }).kind(),
            ErrorKind::too_large);
  EXPECT_EQ(scalar(*pool, "SELECT 1"), "1");
}

TEST_F(PoolTest, CommitRollbackAndDestroyedTransactionsReturnTheirConnection) {
  auto pool = make(1);  // one connection: a leaked one would make the next call time out
  const std::string table = unique_name("tx");
  pool->query("CREATE TABLE " + table + " (v text)", {}, within(5s));

  auto committed = pool->begin(within(5s));
  committed->query("INSERT INTO " + table + " VALUES ($1)", {text("kept")}, within(5s));
  committed->commit();
  EXPECT_EQ(error_of([&] { committed->query("SELECT 1", {}, within(5s)); }).kind(), ErrorKind::invalid);

  auto rolled_back = pool->begin(within(5s));
  rolled_back->query("INSERT INTO " + table + " VALUES ($1)", {text("undone")}, within(5s));
  rolled_back->rollback();

  {
    auto abandoned = pool->begin(within(5s));
    abandoned->query("INSERT INTO " + table + " VALUES ($1)", {text("abandoned")}, within(5s));
  }  // destroyed without commit

  auto values = admin_sql().rows("SELECT v FROM " + table);
  ASSERT_EQ(values.size(), 1u);
  EXPECT_EQ(values[0][0], "kept");
  EXPECT_EQ(scalar(*pool, "SELECT count(*) FROM " + table), "1");

  // A failed statement aborts the transaction: commit reports it instead of pretending.
  auto failed = pool->begin(within(5s));
  failed->query("INSERT INTO " + table + " VALUES ($1)", {text("lost")}, within(5s));
  EXPECT_EQ(error_of([&] { failed->query("SELECT 1/0", {}, within(5s)); }).sqlstate(), "22012");
  EXPECT_EQ(error_of([&] { failed->commit(); }).kind(), ErrorKind::sql);
  EXPECT_EQ(scalar(*pool, "SELECT count(*) FROM " + table), "1");
}

// A handler that does its work at most once per task id, whatever the deliveries.
void handle_delivery(Pool& pool, const std::string& table, const std::string& task_id) {
  auto tx = pool.begin(within(10s));
  if (!tx->once("test:" + task_id)) return;  // already done: roll back, report success
  tx->query("INSERT INTO " + table + " (task_id) VALUES ($1)", {text(task_id)}, within(10s));
  tx->commit();
}

TEST_F(PoolTest, OnceMakesATaskDeliveredTwiceLeaveOneRow) {
  auto pool = make(4);
  const std::string table = unique_name("once");
  pool->query("CREATE TABLE " + table + " (task_id text)", {}, within(5s));
  const std::string sequential = unique_name("task"), concurrent = unique_name("task");

  handle_delivery(*pool, table, sequential);
  handle_delivery(*pool, table, sequential);

  std::latch go(2);
  auto deliver = [&] {
    go.arrive_and_wait();
    handle_delivery(*pool, table, concurrent);
  };
  std::thread first(deliver), second(deliver);
  first.join();
  second.join();

  auto sql = admin_sql();
  EXPECT_EQ(sql.scalar("SELECT count(*) FROM " + table + " WHERE task_id = '" + sequential + "'"), "1");
  EXPECT_EQ(sql.scalar("SELECT count(*) FROM " + table + " WHERE task_id = '" + concurrent + "'"), "1");
  EXPECT_EQ(sql.scalar("SELECT count(*) FROM wk_task_once WHERE key IN ('test:" + sequential +
                       "', 'test:" + concurrent + "')"),
            "2");

  // A rolled-back once() records nothing: the next delivery does the work.
  const std::string retried = unique_name("task");
  {
    auto tx = pool->begin(within(5s));
    EXPECT_TRUE(tx->once("test:" + retried));
  }
  handle_delivery(*pool, table, retried);
  EXPECT_EQ(sql.scalar("SELECT count(*) FROM " + table + " WHERE task_id = '" + retried + "'"), "1");
}

TEST_F(PoolTest, AcquireGivesUpAtTheDeadlineWhenThePoolIsExhausted) {
  auto pool = make(1);
  auto holder = pool->begin(within(10s));
  const auto started = std::chrono::steady_clock::now();
  auto error = error_of([&] { pool->query("SELECT 1", {}, within(200ms)); });
  const auto waited = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(error.kind(), ErrorKind::deadline) << error.what();
  EXPECT_GE(waited, 150ms);
  EXPECT_LT(waited, 3s);

  // A cancellation ends the wait too.
  task::Cancellation cancellation;
  std::atomic<bool> done{false};
  ErrorKind kind = ErrorKind::sql;
  std::thread waiter([&] {
    kind = error_of([&] {
             pool->query("SELECT 1", {}, CallOptions{std::nullopt, &cancellation, false});
           }).kind();
    done = true;
  });
  cancellation.cancel(task::CancelReason::shutdown);
  EXPECT_TRUE(test::eventually([&] { return done.load(); }, 5s));
  waiter.join();
  EXPECT_EQ(kind, ErrorKind::cancelled);

  holder.reset();  // the connection comes back
  EXPECT_EQ(scalar(*pool, "SELECT 'free'"), "free");
}

TEST_F(PoolTest, CancellationCancelsTheRunningQuery) {
  auto pool = make(1);
  task::Cancellation cancellation;
  std::atomic<bool> done{false};
  std::optional<Error> error;
  std::thread runner([&] {
    error = error_of([&] { pool->query("SELECT pg_sleep(30)", {}, within(60s, &cancellation)); });
    done = true;
  });
  // Cancel only once the server is really running it.
  ASSERT_TRUE(test::eventually([&] {
    return admin_sql().scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = '" + app +
                              "' AND state = 'active' AND query LIKE '%pg_sleep(30)%'") == "1";
  }));
  const auto cancelled_at = std::chrono::steady_clock::now();
  cancellation.cancel(task::CancelReason::requested);
  EXPECT_TRUE(test::eventually([&] { return done.load(); }, 10s));
  runner.join();
  EXPECT_LT(std::chrono::steady_clock::now() - cancelled_at, 5s);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->kind(), ErrorKind::cancelled) << error->what();
  EXPECT_EQ(error->sqlstate(), "57014");
  // The same (only) connection is clean and serves the next call.
  EXPECT_EQ(scalar(*pool, "SELECT 'after'"), "after");
  EXPECT_EQ(connections_of(app), 1);

  // Already cancelled: nothing is sent.
  EXPECT_EQ(error_of([&] { pool->query("SELECT 1", {}, within(5s, &cancellation)); }).kind(),
            ErrorKind::cancelled);
}

TEST_F(PoolTest, StatementTimeoutFollowsTheDeadline) {
  auto pool = make(1);
  // Connected first: the 300 ms are the statement's, not also the connect's on a loaded machine.
  ASSERT_EQ(scalar(*pool, "SELECT 1"), "1");
  auto error = error_of([&] { pool->query("SELECT pg_sleep(30)", {}, within(300ms)); });
  EXPECT_EQ(error.kind(), ErrorKind::deadline) << error.what();
  EXPECT_EQ(error.sqlstate(), "57014");

  auto setting = [&](const CallOptions& options) {
    // pg_settings.setting is plain milliseconds ("9998"; current_setting() would say "10s").
    return std::string(
        pool->query("SELECT setting FROM pg_settings WHERE name = 'statement_timeout'", {}, options)
            ->value(0, 0));
  };
  const long long ms = std::stoll(setting(within(10s)));
  EXPECT_GT(ms, 8000);
  EXPECT_LE(ms, 10000);
  EXPECT_EQ(setting(CallOptions{}), "0");  // no deadline, no timeout

  // Inside a transaction the timeout is local to it and follows each call's deadline.
  auto tx = pool->begin(within(20s));
  auto in_tx = error_of([&] { tx->query("SELECT pg_sleep(30)", {}, within(300ms)); });
  EXPECT_EQ(in_tx.kind(), ErrorKind::deadline);
  tx->rollback();
  EXPECT_EQ(setting(CallOptions{}), "0");
}

TEST_F(PoolTest, ServerConnectionsNeverExceedPoolSize) {
  constexpr int kPoolSize = 3;
  auto pool = make(kPoolSize);
  const std::string table = unique_name("load");
  pool->query("CREATE TABLE " + table + " (v int)", {}, within(5s));

  std::atomic<bool> running{true};
  std::atomic<int> most_seen{0};
  std::thread monitor([&] {
    auto sql = admin_sql();
    const std::string count = "SELECT count(*) FROM pg_stat_activity WHERE application_name = '" + app + "'";
    while (running) {
      most_seen = std::max(most_seen.load(), std::stoi(sql.scalar(count)));
      std::this_thread::sleep_for(2ms);  // sampling period, not a wait for an event
    }
  });

  std::atomic<int> failures{0};
  std::vector<std::thread> workers;
  for (int worker = 0; worker < 8; ++worker) {
    workers.emplace_back([&, worker] {
      for (int op = 0; op < 30; ++op) {
        try {
          switch ((worker + op) % 5) {
            case 0:
              pool->query("INSERT INTO " + table + " VALUES ($1)", {text(std::to_string(op))}, within(10s));
              break;
            case 1: {
              auto tx = pool->begin(within(10s));
              tx->query("INSERT INTO " + table + " VALUES (1)", {}, within(10s));
              tx->commit();
              break;
            }
            case 2: {
              auto tx = pool->begin(within(10s));  // abandoned
              tx->query("SELECT count(*) FROM " + table, {}, within(10s));
              break;
            }
            case 3:
              error_of([&] { pool->query("SELECT 1/0", {}, within(10s)); });
              break;
            default: {
              auto tx = pool->begin(within(10s));
              error_of([&] { tx->query("SELECT nope", {}, within(10s)); });
              break;  // destroyed in the failed state
            }
          }
        } catch (const Error& error) {
          ++failures;
          ADD_FAILURE() << error.what();
        }
      }
    });
  }
  for (auto& worker : workers) worker.join();
  running = false;
  monitor.join();

  EXPECT_EQ(failures.load(), 0);
  EXPECT_GE(most_seen.load(), 1);
  EXPECT_LE(most_seen.load(), kPoolSize);
  EXPECT_LE(connections_of(app), kPoolSize);
  EXPECT_EQ(scalar(*pool, "SELECT 'still serving'"), "still serving");
  pool.reset();
  EXPECT_TRUE(test::eventually([&] { return connections_of(app) == 0; }));
}

TEST_F(PoolTest, MigrationsApplyOnceWhenManyWorkersStartTogether) {
  const std::string plugin = unique_name("plugin");
  const std::string table = unique_name("migrated");
  const std::vector<Migration> v1{
      {1, "create", "CREATE TABLE " + table + " (x int); INSERT INTO " + table + " VALUES (1)"}};

  constexpr int kWorkers = 8;
  std::latch go(kWorkers);
  std::atomic<int> failures{0};
  std::vector<std::thread> workers;
  for (int i = 0; i < kWorkers; ++i) {
    workers.emplace_back([&] {
      auto pool = make(1);  // each worker its own pool, as separate processes would
      go.arrive_and_wait();
      try {
        pool->migrate(plugin, v1);
      } catch (const Error& error) {
        ++failures;
        ADD_FAILURE() << error.what();
      }
    });
  }
  for (auto& worker : workers) worker.join();
  EXPECT_EQ(failures.load(), 0);

  auto sql = admin_sql();
  EXPECT_EQ(sql.scalar("SELECT count(*) FROM " + table), "1");
  EXPECT_EQ(sql.scalar("SELECT count(*) FROM wk_plugin_migrations WHERE plugin_id = '" + plugin + "'"), "1");

  // Later: a new version is applied alone; a failing one is not recorded and changes nothing.
  auto pool = make(1);
  std::vector<Migration> v2 = v1;
  v2.push_back({2, "add column", "ALTER TABLE " + table + " ADD COLUMN y int DEFAULT 7"});
  pool->migrate(plugin, v2);
  pool->migrate(plugin, v2);
  EXPECT_EQ(sql.scalar("SELECT count(*) FROM " + table), "1");
  EXPECT_EQ(sql.scalar("SELECT y FROM " + table), "7");

  std::vector<Migration> v3 = v2;
  v3.push_back({3, "broken", "INSERT INTO " + table + " VALUES (2); SELECT no_such_column FROM " + table});
  auto failed = error_of([&] { pool->migrate(plugin, v3); });
  EXPECT_EQ(failed.kind(), ErrorKind::sql);
  EXPECT_EQ(failed.sqlstate(), "42703");
  EXPECT_NE(std::string(failed.what()).find("v3 (broken)"), std::string::npos) << failed.what();
  EXPECT_EQ(sql.scalar("SELECT count(*) FROM " + table), "1");
  EXPECT_EQ(sql.scalar("SELECT string_agg(version::text || ':' || name, ',' ORDER BY version) FROM "
                       "wk_plugin_migrations WHERE plugin_id = '" +
                       plugin + "'"),
            "1:create,2:add column");

  EXPECT_EQ(error_of([&] {
              pool->migrate(plugin, {{2, "b", "SELECT 1"}, {1, "a", "SELECT 1"}});
            }).kind(),
            ErrorKind::invalid);
}

TEST_F(PoolTest, ADeadIdleConnectionIsReplacedAtCheckout) {
  for (const auto idle_check : {std::chrono::seconds(30), std::chrono::seconds(0)}) {
    auto settings = test_settings(1, app);
    settings.idle_check_after = idle_check;  // 0: also the SELECT 1 round trip on checkout
    auto pool = make_pool(settings, logger);
    const std::string first_pid = scalar(*pool, "SELECT pg_backend_pid()");
    admin_sql().exec("SELECT pg_terminate_backend(" + first_pid + ")");
    ASSERT_TRUE(test::eventually([&] { return connections_of(app) == 0; }));
    // The caller never sees the dead connection: it is dropped and a new one opened.
    EXPECT_NE(scalar(*pool, "SELECT pg_backend_pid()"), first_pid);
  }
  for (const auto& line : logger.lines())
    EXPECT_EQ(line.find("database unavailable"), std::string::npos) << line;
}

TEST_F(PoolTest, HealthyAndLazyStartWithoutADatabase) {
  auto pool = make(1);
  EXPECT_TRUE(pool->healthy());

  // Nothing listens there: the pool is made anyway, and calls fail as unavailable.
  auto settings = test_settings(2, app);
  settings.host = "127.0.0.1";
  settings.port = 1;
  auto nowhere = make_pool(settings, logger);
  EXPECT_FALSE(nowhere->healthy());
  auto error = error_of([&] { nowhere->query("SELECT 1", {}, within(5s)); });
  EXPECT_EQ(error.kind(), ErrorKind::unavailable);
  EXPECT_TRUE(std::string(error.what()).starts_with("database unavailable: ")) << error.what();
  EXPECT_EQ(error_of([&] { nowhere->begin(within(5s)); }).kind(), ErrorKind::unavailable);
}

}  // namespace
}  // namespace wk::db
