// Process-level fault tests: the real `worker` binary, the
// fixture plugin in plugin/, a private redis-server per test (stopped and restarted where the
// test says so) and, for the database test, a private PostgreSQL. What each test proves is in
// docs/testing.md. Timings are shortened with the advanced settings (docs/configuration.md).
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "asynq/keys.hpp"
#include "fault_support.hpp"
#include "host/db/pg_fixture.hpp"
#include "support/child_process.hpp"
#include "support/private_postgres.hpp"
#include "support/private_redis.hpp"
#include "support/test_env.hpp"

namespace wk::faults {
namespace {

using namespace std::chrono_literals;
using test::ChildProcess;
using test::free_port;
using test::TempDir;
using test::worker_binary;
using test::worker_env;
using Clock = std::chrono::steady_clock;

constexpr const char* kQueue = "faults";

void touch(const std::filesystem::path& p) { std::ofstream(p) << "go"; }
bool file_exists(const std::filesystem::path& p) { return std::filesystem::exists(p); }
bool contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

// One private redis-server, a plugin directory with the fixture plugin (mode 0700, as the
// loader requires) and helpers to start workers against them.
class FaultTest : public ::testing::Test {
 protected:
  FaultTest()
      : dir_("wk-faults"), redis_([] {
          test::PrivateRedis::Options o;
          o.persistent = true;
          return o;
        }()) {
    std::filesystem::create_directories(plugins_);
    std::filesystem::permissions(plugins_, std::filesystem::perms::owner_all);
    std::filesystem::copy_file(WK_FAULTS_PLUGIN, plugins_ / "faults.so");
  }

  // Settings every worker of these tests gets; `extra` overrides.
  // `defaults`: settings of worker_settings() to leave unset (the worker's own default).
  std::unique_ptr<ChildProcess> start_worker(const std::string& name,
                                             std::map<std::string, std::string> extra = {},
                                             const std::vector<std::string>& defaults = {}) {
    auto s = worker_settings(redis_.port(), plugins_, name, kQueue);
    for (const auto& key : defaults) s.erase(key);
    for (auto& [k, v] : extra) s[k] = v;
    auto w = std::make_unique<ChildProcess>(
        std::vector<std::string>{worker_binary(), "--plugins", plugins_.string()}, worker_env(s));
    if (!w->await_line({"Starting queue engine"}, 15s)) {
      ADD_FAILURE() << name << " did not start:\n" << w->output();
    }
    return w;
  }

  std::string enqueue_task(const std::string& type, const std::string& payload, int max_retry = 3,
                           std::optional<std::chrono::seconds> retention = 300s) {
    task::EnqueueRequest r;
    r.type = type;
    r.queue = kQueue;
    r.payload = payload;
    r.max_retry = max_retry;
    r.retention = retention;
    return enqueue(redis_.settings(), r);
  }

  // A fault:block task released by `dir_/<name>`; returns {id, release path}.
  std::pair<std::string, std::filesystem::path> blocking_task(const std::string& name) {
    const auto release = dir_ / name;
    return {enqueue_task("fault:block", release.string()), release};
  }
  static std::filesystem::path started(const std::filesystem::path& release, int attempt) {
    return release.string() + ".started-" + std::to_string(attempt);
  }

  TempDir dir_;
  test::PrivateRedis redis_;
  std::filesystem::path plugins_ = dir_ / "plugins";
};

// A host SIGKILLed mid-task loses nothing. A second host's recoverer finds the expired
// lease, retries the task with the attempt counted and asynq's error text, and then runs it to
// completion.
TEST_F(FaultTest, SigkilledHostsTaskIsRecoveredByLeaseOnAnotherHost) {
  auto [id, release] = blocking_task("killed");
  {
    auto first = start_worker("first");
    ASSERT_TRUE(test::eventually([&] { return file_exists(started(release, 1)); })) << first->output();
    first->kill();
    EXPECT_EQ(first->wait_exit(1s), 128 + SIGKILL);
  }
  auto conn = redis_.connect();
  QueueView q{conn, kQueue};
  // Dead host, task still active with its lease: nothing was lost, nothing was written.
  EXPECT_EQ(q.list("active"), std::vector<std::string>{id});
  EXPECT_EQ(q.message(id)->retried, 0);

  auto second = start_worker("second");
  // Recovered (retry, delay 0), forwarded and running again as attempt 2 on the second host.
  ASSERT_TRUE(test::eventually([&] { return file_exists(started(release, 2)); }, 15s)) << second->output();
  EXPECT_TRUE(second->await_line({"Recovering a task whose lease expired: retrying", id}, 1s))
      << second->output();
  const auto msg = q.message(id);
  ASSERT_TRUE(msg);
  EXPECT_EQ(msg->retried, 1);
  EXPECT_EQ(msg->error_msg, "asynq: task lease expired");
  EXPECT_GT(msg->last_failed_at, 0);
  EXPECT_EQ(q.field(id, "state"), "active");

  touch(release);
  ASSERT_TRUE(test::eventually([&] { return contains(q.zset("completed"), id); })) << second->output();
  EXPECT_EQ(q.field(id, "state"), "completed");
  EXPECT_EQ(q.message(id)->retried, 1);
  EXPECT_TRUE(q.list("active").empty());
  EXPECT_TRUE(q.zset("retry").empty());
  EXPECT_FALSE(file_exists(started(release, 3)));  // ran exactly twice
  // asynq counts every finished attempt as processed, a failed one (the lost attempt) as failed too.
  EXPECT_EQ(conn.command({"GET", asynq::processed_total_key(kQueue)}).str(), "2");
  EXPECT_EQ(conn.command({"GET", asynq::failed_total_key(kQueue)}).str(), "1");
}

// A worker SIGKILLed with 8 tasks in flight and restarted at once: with the recoverer's own
// timings (not the shortened ones of the other tests), the 8 run again within the lease plus
// 10 s: the recoverer looks every 5 s, 2 s past expiry, and the retry is due at once.
TEST_F(FaultTest, OrphansOfAKilledWorkerRunAgainWithinTheLeasePlusTenSeconds) {
  std::vector<std::pair<std::string, std::filesystem::path>> tasks;
  for (int i = 0; i < 8; ++i) tasks.push_back(blocking_task("orphan-" + std::to_string(i)));
  std::map<std::string, std::string> settings = {{"WORKER_CONCURRENCY", "8"}, {"WORKER_LEASE", "5s"}};
  auto first = start_worker("first", settings, {"WORKER_RECOVERER_INTERVAL", "WORKER_RECOVERER_CUTOFF"});
  for (const auto& [id, release] : tasks) {
    ASSERT_TRUE(test::eventually([&] { return file_exists(started(release, 1)); })) << first->output();
  }
  first->kill();
  const auto killed = Clock::now();
  auto second = start_worker("second", settings, {"WORKER_RECOVERER_INTERVAL", "WORKER_RECOVERER_CUTOFF"});
  for (const auto& [id, release] : tasks) {
    ASSERT_TRUE(test::eventually([&] { return file_exists(started(release, 2)); }, 30s)) << second->output();
  }
  EXPECT_LT(Clock::now() - killed, 15s) << "lease (5 s) + 10 s";
  for (const auto& [id, release] : tasks) touch(release);
  auto conn = redis_.connect();
  QueueView q{conn, kQueue};
  ASSERT_TRUE(test::eventually([&] { return q.zset("completed").size() == tasks.size(); }))
      << second->output();
}

// A worker whose plugin directory is empty beside one that has the plugin: the first takes no
// task at all (it says so), so 2,000 tasks cost no failed attempt and all run on the second.
TEST_F(FaultTest, AWorkerWithoutPluginsTakesNoTasks) {
  const auto empty = dir_ / "no-plugins";
  std::filesystem::create_directories(empty);
  std::filesystem::permissions(empty, std::filesystem::perms::owner_all);
  ChildProcess idle({worker_binary(), "--plugins", empty.string()},
                    worker_env(worker_settings(redis_.port(), empty, "idle", kQueue)));
  ASSERT_TRUE(idle.await_line({"No plugin serves a task type", "no-plugins"}, 15s)) << idle.output();
  auto capable = start_worker("capable", {{"WORKER_CONCURRENCY", "4"}, {"LOG_LEVEL", "info"}});
  constexpr size_t kTasks = 2000;
  for (size_t i = 0; i < kTasks; ++i) enqueue_task("fault:quick", "");
  auto conn = redis_.connect();
  QueueView q{conn, kQueue};
  ASSERT_TRUE(test::eventually([&] { return q.zset("completed").size() == kTasks; }, 120s))
      << capable->output();
  EXPECT_TRUE(conn.command({"GET", asynq::failed_total_key(kQueue)}).is_nil()) << "no failed attempt";
  EXPECT_EQ(idle.count_lines({"Processing task"}), 0) << idle.output();
  EXPECT_TRUE(idle.running());
}

// SIGTERM with long tasks running. After WORKER_SHUTDOWN_TIMEOUT they are requeued at
// the tail of pending (dequeued next), no attempt counted; the worker exits 0; a new host
// finishes them.
TEST_F(FaultTest, SigtermRequeuesLongTasksWithoutCountingAnAttempt) {
  auto [a, release_a] = blocking_task("a");
  auto [b, release_b] = blocking_task("b");
  auto conn = redis_.connect();
  QueueView q{conn, kQueue};
  std::string waiting;
  {
    auto worker = start_worker("first");
    ASSERT_TRUE(test::eventually([&] {
      return file_exists(started(release_a, 1)) && file_exists(started(release_b, 1));
    })) << worker->output();
    waiting = enqueue_task("fault:quick", "");  // both slots busy: stays pending
    EXPECT_EQ(q.list("pending"), std::vector<std::string>{waiting});

    const auto t0 = Clock::now();
    worker->signal(SIGTERM);
    const auto code = worker->wait_exit(10s);
    const auto took = Clock::now() - t0;
    ASSERT_EQ(code, 0) << worker->output();
    EXPECT_GE(took, 1s);  // the running tasks had their grace period
    EXPECT_LT(took, 5s) << worker->output();
    EXPECT_EQ(worker->count_lines({"Task finished", "result=requeued"}), 2) << worker->output();
    EXPECT_TRUE(worker->await_line({"Worker stopped"}, 1s));
  }
  // LPUSH-ed producer task at the head, requeued tasks RPUSH-ed at the tail (next to dequeue).
  const auto pending = q.list("pending");
  ASSERT_EQ(pending.size(), 3u);
  EXPECT_EQ(pending[0], waiting);
  EXPECT_TRUE(contains(pending, a) && contains(pending, b));
  EXPECT_TRUE(q.list("active").empty());
  for (const auto& id : {a, b}) {
    EXPECT_EQ(q.field(id, "state"), "pending");
    EXPECT_EQ(q.message(id)->retried, 0);
    EXPECT_EQ(q.message(id)->error_msg, "");
  }
  EXPECT_FALSE(conn.command({"GET", asynq::failed_total_key(kQueue)}).is_string());

  touch(release_a);
  touch(release_b);
  auto second = start_worker("second");
  ASSERT_TRUE(test::eventually([&] { return q.zset("completed").size() == 3; })) << second->output();
  for (const auto& id : {a, b}) EXPECT_EQ(q.message(id)->retried, 0);
}

// Redis frozen (SIGSTOP) while a task runs: SIGTERM with a 2 s shutdown timeout still ends the
// worker within the timeout plus a few seconds, whatever its Redis calls wait for; the task it
// could not requeue keeps its lease (recovered once it expires).
TEST_F(FaultTest, ShutdownIsBoundedWhenRedisHangs) {
  auto [id, release] = blocking_task("frozen");
  auto worker = start_worker("frozen", {{"WORKER_SHUTDOWN_TIMEOUT", "2s"}});
  ASSERT_TRUE(test::eventually([&] { return file_exists(started(release, 1)); })) << worker->output();
  redis_.signal(SIGSTOP);
  const auto t0 = Clock::now();
  worker->signal(SIGTERM);
  const auto code = worker->wait_exit(10s);
  redis_.signal(SIGCONT);
  ASSERT_TRUE(code.has_value()) << "still running 10 s after SIGTERM:\n" << worker->output();
  EXPECT_LT(Clock::now() - t0, 10s);
  EXPECT_EQ(worker->count_lines({"Shutdown did not finish in time", "recovered by their leases"}), 1)
      << worker->output();
  auto conn = redis_.connect();
  QueueView q{conn, kQueue};
  EXPECT_EQ(q.list("active"), std::vector<std::string>{id}) << "left to its lease, not lost";
}

// A second SIGTERM during the grace period requeues at once.
TEST_F(FaultTest, SecondSignalRequeuesAtOnce) {
  auto [id, release] = blocking_task("long");
  auto worker = start_worker("first", {{"WORKER_SHUTDOWN_TIMEOUT", "60s"}});
  ASSERT_TRUE(test::eventually([&] { return file_exists(started(release, 1)); })) << worker->output();
  worker->signal(SIGTERM);
  ASSERT_TRUE(worker->await_line({"Shutting down queue engine"}));
  const auto t0 = Clock::now();
  worker->signal(SIGTERM);
  ASSERT_EQ(worker->wait_exit(10s), 0) << worker->output();
  EXPECT_LT(Clock::now() - t0, 5s);  // not the 60 s grace
  EXPECT_EQ(worker->count_lines({"Second stop signal"}), 1) << worker->output();
  EXPECT_EQ(worker->count_lines({"Task finished", "result=requeued", id}), 1) << worker->output();
  auto conn = redis_.connect();
  QueueView q{conn, kQueue};
  EXPECT_EQ(q.list("pending"), std::vector<std::string>{id});
  EXPECT_EQ(q.message(id)->retried, 0);
}

// A handler that never returns and ignores cancellation cannot hold shutdown hostage.
TEST_F(FaultTest, HandlerIgnoringCancellationDoesNotBlockShutdown) {
  const auto marker = dir_ / "stubborn";
  const auto id = enqueue_task("fault:stubborn", marker.string());
  // The engine deliberately leaks its internals when it abandons a handler thread (the process is
  // exiting): an ASan build must not turn that into a failing exit status.
  std::string asan = std::getenv("ASAN_OPTIONS") != nullptr ? std::getenv("ASAN_OPTIONS") : "";
  auto worker =
      start_worker("first", {{"ASAN_OPTIONS", asan + (asan.empty() ? "" : ":") + "detect_leaks=0"}});
  ASSERT_TRUE(test::eventually([&] { return file_exists(started(marker, 1)); })) << worker->output();
  const auto t0 = Clock::now();
  worker->signal(SIGTERM);
  const auto code = worker->wait_exit(15s);
  const auto took = Clock::now() - t0;
  ASSERT_TRUE(code) << "worker still running 15 s after SIGTERM:\n" << worker->output();
  EXPECT_EQ(*code, 0) << worker->output();
  // Shutdown timeout 1 s + the engine's wait for cancelled handlers (max(timeout, 1 s)) + the
  // plugin host's grace (the same timeout), about 3 s; the bound leaves room for a loaded ASan
  // machine while still catching a shutdown that waits for the handler (60 s).
  EXPECT_LT(took, 12s) << worker->output();
  EXPECT_EQ(worker->count_lines({"Shutdown: requeueing unfinished task", id}), 1) << worker->output();
  EXPECT_EQ(worker->count_lines({"ignored cancellation"}), 1) << worker->output();
  auto conn = redis_.connect();
  QueueView q{conn, kQueue};
  EXPECT_EQ(q.list("pending"), std::vector<std::string>{id});
  EXPECT_TRUE(q.list("active").empty());
  EXPECT_EQ(q.message(id)->retried, 0);
}

// Redis stops (a real outage: the process exits) while tasks run; they finish during
// the outage; once Redis is back (same port, same data from its append-only file) their outcome
// is written within the lease. One outage line, one recovery line; the worker keeps serving.
TEST_F(FaultTest, RedisOutageWhileTasksRunOutcomeWrittenWhenBack) {
  auto [a, release_a] = blocking_task("a");
  auto [b, release_b] = blocking_task("b");
  auto worker = start_worker("first", {{"WORKER_LEASE", "20s"}, {"WORKER_RECOVERER_CUTOFF", "30s"}});
  ASSERT_TRUE(test::eventually([&] {
    return file_exists(started(release_a, 1)) && file_exists(started(release_b, 1));
  })) << worker->output();

  redis_.stop();
  ASSERT_TRUE(worker->await_line({"Redis unavailable"})) << worker->output();
  touch(release_a);
  touch(release_b);
  // Both handlers returned while Redis was away: their completions wait in the syncer.
  ASSERT_TRUE(test::eventually([&] {
    return file_exists(release_a.string() + ".returned-1") && file_exists(release_b.string() + ".returned-1");
  })) << worker->output();
  redis_.start();
  ASSERT_TRUE(worker->await_line({"Redis available again"}, 15s)) << worker->output();

  auto conn = redis_.connect();
  QueueView q{conn, kQueue};
  ASSERT_TRUE(test::eventually([&] { return q.zset("completed").size() == 2; }, 15s)) << worker->output();
  EXPECT_TRUE(q.list("active").empty());
  for (const auto& id : {a, b}) {
    EXPECT_EQ(q.field(id, "state"), "completed");
    EXPECT_EQ(q.message(id)->retried, 0);  // written by the attempt itself, not recovered
  }
  EXPECT_FALSE(file_exists(started(release_a, 2)));
  EXPECT_FALSE(file_exists(started(release_b, 2)));

  // Keeps serving after the outage.
  const auto after = enqueue_task("fault:quick", "");
  ASSERT_TRUE(test::eventually([&] { return contains(q.zset("completed"), after); })) << worker->output();
  // The outage was logged, as an error naming the failed operation, and so was the recovery.
  EXPECT_EQ(worker->count_lines({"level=ERROR", "Redis unavailable", "op="}), 1) << worker->output();
  EXPECT_EQ(worker->count_lines({"level=INFO", "Redis available again"}), 1) << worker->output();
  EXPECT_TRUE(worker->running());
}

// Through the shipped binary: /healthz, /readyz and /metrics on WORKER_METRICS_ADDR.
// Readiness names each failing dependency (Redis, PostgreSQL) and recovers with it; liveness
// stays 200 throughout, since the worker reconnects by itself.
TEST_F(FaultTest, HealthEndpointsOfTheWorkerFollowRedisAndPostgres) {
  test::PrivatePostgres pg;
  const int port = free_port();
  auto worker = start_worker("first", {{"DB_PORT", std::to_string(pg.port())},
                                       {"DB_USERNAME", pg.role()},
                                       {"DB_PASSWORD", pg.password()},
                                       {"DB_NAME", pg.database()},
                                       {"WORKER_METRICS_ADDR", "127.0.0.1:" + std::to_string(port)}});
  ASSERT_TRUE(worker->await_line({"Serving metrics and health"})) << worker->output();
  httplib::Client http("127.0.0.1", port);
  http.set_connection_timeout(2s);
  http.set_read_timeout(10s);
  auto get = [&](const char* path) -> std::pair<int, std::string> {
    const auto res = http.Get(path);
    return res ? std::pair{res->status, res->body} : std::pair{0, std::string()};
  };
  auto ready_is = [&](int status, const std::string& body) {
    return test::eventually([&] { return get("/readyz") == std::pair{status, body}; }, 20s);
  };

  EXPECT_TRUE(ready_is(200, "redis ok\npostgres ok\nplugins ok\n")) << get("/readyz").second;
  EXPECT_EQ(get("/healthz").first, 200);
  const std::string metrics = get("/metrics").second;
  EXPECT_NE(metrics.find("autodevs_worker_plugins_loaded 1\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("autodevs_worker_redis_up 1\n"), std::string::npos) << metrics;

  pg.stop();
  EXPECT_TRUE(ready_is(503, "redis ok\npostgres failed\nplugins ok\n")) << get("/readyz").second;
  EXPECT_EQ(get("/healthz").first, 200);
  pg.start();
  EXPECT_TRUE(ready_is(200, "redis ok\npostgres ok\nplugins ok\n")) << get("/readyz").second;

  redis_.stop();
  EXPECT_TRUE(ready_is(503, "redis failed\npostgres ok\nplugins ok\n")) << get("/readyz").second;
  EXPECT_EQ(get("/healthz").first, 200);
  redis_.start();
  EXPECT_TRUE(ready_is(200, "redis ok\npostgres ok\nplugins ok\n"))
      << get("/readyz").second << worker->output();
  EXPECT_TRUE(worker->running());
}

// The local-lease rule (protocol §7.6): Redis is away for longer than the lease (2 s)
// while a task finishes. Its success waits in the syncer only until the lease expires and is
// then dropped; once Redis is back the recoverer owns the task and retries it. The handler's
// late success is never written.
TEST_F(FaultTest, ASuccessThatOutlivesItsLeaseIsDroppedAndTheTaskRecovered) {
  auto [id, release] = blocking_task("late");
  auto worker = start_worker("first", {{"WORKER_RETRY_DELAY", "1h"}});  // it stays in retry
  ASSERT_TRUE(test::eventually([&] { return file_exists(started(release, 1)); })) << worker->output();
  redis_.stop();
  ASSERT_TRUE(worker->await_line({"Redis unavailable"})) << worker->output();
  touch(release);
  ASSERT_TRUE(test::eventually([&] { return file_exists(release.string() + ".returned-1"); }))
      << worker->output();
  ASSERT_TRUE(worker->await_line({"Dropping a queued write: the task's lease has expired", id}, 15s))
      << worker->output();
  redis_.start();

  auto conn = redis_.connect();
  QueueView q{conn, kQueue};
  ASSERT_TRUE(test::eventually([&] { return contains(q.zset("retry"), id); }, 15s)) << worker->output();
  EXPECT_EQ(q.field(id, "state"), "retry");
  EXPECT_EQ(q.message(id)->error_msg, "asynq: task lease expired");
  EXPECT_EQ(q.message(id)->retried, 1);
  EXPECT_TRUE(q.zset("completed").empty());
  EXPECT_TRUE(q.list("active").empty());
  EXPECT_TRUE(worker->running());
}

// PostgreSQL stops mid-run. Database tasks fail retryably ("database unavailable"),
// other tasks keep being served, the same database tasks succeed once PostgreSQL is back, and
// the pool never holds more server connections than DB_POOL_SIZE.
// A 5 s PostgreSQL restart while 1,000 database tasks drain costs (almost) no attempts: tasks
// whose handler found the database away go back to their queue uncounted once it answers again
// (docs/database.md); other tasks are served meanwhile; the pool never exceeds DB_POOL_SIZE.
TEST_F(FaultTest, PostgresOutageCostsDatabaseTasksNoAttempts) {
  test::PrivatePostgres pg;
  std::atomic<int> max_connections{0};
  std::atomic<bool> sampling{true};
  std::atomic<int> samples{0};
  std::thread sampler([&] {
    std::optional<dbtest::Sql> sql;
    while (sampling) {
      try {
        if (!sql) sql.emplace("127.0.0.1", pg.port(), "postgres", "postgres");
        const int n = std::stoi(
            sql->scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = '" + pg.role() + "'"));
        int seen = max_connections.load();
        while (n > seen && !max_connections.compare_exchange_weak(seen, n)) {
        }
        ++samples;
      } catch (const std::exception&) {
        sql.reset();  // server stopped: sample again once it is back
      }
      std::this_thread::sleep_for(2ms);
    }
  });
  struct Join {
    std::atomic<bool>& flag;
    std::thread& t;
    ~Join() {
      flag = false;
      t.join();
    }
  } join{sampling, sampler};

  auto worker = start_worker("first", {{"DB_PORT", std::to_string(pg.port())},
                                       {"DB_USERNAME", pg.role()},
                                       {"DB_PASSWORD", pg.password()},
                                       {"DB_NAME", pg.database()},
                                       {"DB_POOL_SIZE", "3"},
                                       {"WORKER_CONCURRENCY", "6"},
                                       {"WORKER_RETRY_DELAY", "1s"},
                                       {"LOG_LEVEL", "info"}});
  auto conn = redis_.connect();
  QueueView q{conn, kQueue};

  constexpr size_t kTasks = 1000;
  std::vector<std::string> db_tasks;
  for (size_t i = 0; i < kTasks; ++i) db_tasks.push_back(enqueue_task("fault:db", "", 25));
  ASSERT_TRUE(test::eventually([&] { return q.zset("completed").size() >= 100; }, 60s)) << worker->output();

  pg.stop();
  std::vector<std::string> others;
  for (int i = 0; i < 3; ++i) others.push_back(enqueue_task("fault:quick", ""));
  // Non-database tasks are served while the database is down.
  ASSERT_TRUE(test::eventually([&] {
    const auto done = q.zset("completed");
    return std::all_of(others.begin(), others.end(),
                       [&](const std::string& id) { return contains(done, id); });
  })) << worker->output();
  std::this_thread::sleep_for(5s);  // the outage itself, as long as the scenario says
  pg.start();

  ASSERT_TRUE(test::eventually([&] { return q.zset("completed").size() == kTasks + others.size(); }, 180s))
      << worker->output();
  size_t retried = 0;
  for (const auto& id : db_tasks) retried += q.message(id)->retried > 0 ? 1 : 0;
  EXPECT_LE(retried, kTasks / 100) << "tasks that had an attempt counted";
  const auto failed = conn.command({"GET", asynq::failed_total_key(kQueue)});
  EXPECT_LE(failed.is_nil() ? 0 : std::stoll(std::string(failed.str())),
            static_cast<long long>(kTasks / 100));
  EXPECT_TRUE(q.zset("archived").empty());
  EXPECT_GE(worker->count_lines({"Requeueing task without counting an attempt", "dependency unavailable"}), 1)
      << worker->output();
  EXPECT_TRUE(worker->running());
  EXPECT_GT(samples.load(), 0);
  EXPECT_GE(max_connections.load(), 1);
  EXPECT_LE(max_connections.load(), 3) << "more server connections than DB_POOL_SIZE";
}

// Bad input: nothing crashes, other tasks are served, and each bad task ends where its rule says
// (a bad payload: archived; an unknown type: docs/queue-engine.md, "Tasks no plugin serves"; a
// malformed message: "Malformed messages" there).
TEST_F(FaultTest, BadInputIsLoggedAndContainedWhileOthersAreServed) {
  // The shipped worktree plugin is the JSON plugin (it creates its tables at start-up, so it
  // needs a database: this test process's own on the test server).
  std::filesystem::copy_file(WK_WORKTREE_PLUGIN, plugins_ / "autodevs_worktree.so");
  const auto pg = test::pg_addr();
  auto conn = redis_.connect();
  QueueView q{conn, kQueue};

  // A malformed protobuf in pending, as a broken producer would leave it.
  const std::string garbage_id = "garbage-0001";
  const std::string garbage("\x0a\xff\xff\xff\xff\x0f junk", 11);
  conn.command({"SADD", "asynq:queues", kQueue});
  conn.command({"HSET", asynq::task_key(kQueue, garbage_id), "msg", garbage, "state", "pending"});
  conn.command({"LPUSH", asynq::pending_key(kQueue), garbage_id});
  const auto not_json = enqueue_task("worktree:remove", "this is {not JSON");
  const auto unknown = enqueue_task("no:such-type", "{}", /*max_retry=*/1);

  auto worker = start_worker("first", {{"DB_HOST", pg.host},
                                       {"DB_PORT", std::to_string(pg.port)},
                                       {"DB_USERNAME", pg.user},
                                       {"DB_NAME", dbtest::test_database()},
                                       {"WORKTREE_BASE_DIR", (dir_ / "worktrees").string()},
                                       {"WORKER_UNHANDLED_TIMEOUT", "0s"}});
  ASSERT_TRUE(worker->await_line({"Plugins loaded", "loaded=2"})) << worker->output();
  const auto good = enqueue_task("fault:quick", "");

  // Not JSON: permanent failure, archived at once with the reason.
  ASSERT_TRUE(test::eventually([&] { return contains(q.zset("archived"), not_json); })) << worker->output();
  EXPECT_NE(q.message(not_json)->error_msg.find("not valid JSON"), std::string::npos)
      << q.message(not_json)->error_msg;
  EXPECT_EQ(q.message(not_json)->retried, 0);

  // Unknown type: retried (max_retry 1), then archived with asynq's ServeMux text.
  ASSERT_TRUE(test::eventually([&] { return contains(q.zset("archived"), unknown); })) << worker->output();
  EXPECT_EQ(q.message(unknown)->error_msg, "handler not found for task \"no:such-type\"");
  EXPECT_EQ(q.message(unknown)->retried, 1);

  // The good task is served.
  ASSERT_TRUE(test::eventually([&] { return contains(q.zset("completed"), good); })) << worker->output();

  // Malformed message: archived with the reason, logged once with its id; nothing left active.
  ASSERT_TRUE(test::eventually([&] { return contains(q.zset("archived"), garbage_id); })) << worker->output();
  EXPECT_NE(q.message(garbage_id)->error_msg.find("undecodable message"), std::string::npos);
  EXPECT_EQ(q.message(garbage_id)->payload, garbage);
  EXPECT_EQ(
      worker->count_lines({"level=ERROR", "Archived a malformed task message", "task_id=" + garbage_id}), 1)
      << worker->output();
  // Still serving, still alive.
  const auto later = enqueue_task("fault:quick", "");
  ASSERT_TRUE(test::eventually([&] { return contains(q.zset("completed"), later); })) << worker->output();
  EXPECT_TRUE(worker->running());
  EXPECT_TRUE(q.list("active").empty());
  worker->signal(SIGTERM);
  EXPECT_EQ(worker->wait_exit(10s), 0) << worker->output();
}

// Every kind of entry the engine cannot serve ends archived with its reason, logged once with its
// id, and the shipped binary's `tasks show` / `tasks delete` handle it (docs/queue-engine.md,
// "Malformed messages").
TEST_F(FaultTest, EachMalformedMessageKindIsArchivedOnceAndCanBeDeleted) {
  auto conn = redis_.connect();
  QueueView q{conn, kQueue};
  asynq::TaskMessage valid;
  valid.type = "fault:quick";
  valid.id = "someone-else";
  valid.queue = kQueue;
  const std::string encoded = asynq::encode(valid);
  static constexpr char kRandom[] = "\xff\xfe\x00\x13 not a protobuf";
  struct Kind {
    std::string id;
    std::optional<std::string> msg;  // nullopt: no task hash at all
    std::string reason;
  };
  const std::vector<Kind> kinds = {
      {"random-bytes", std::string(kRandom, sizeof kRandom - 1), "undecodable message"},
      {"truncated", encoded.substr(0, encoded.size() / 2), "undecodable message"},
      {"empty", std::string(), "its message is empty"},
      {"no-hash", std::nullopt, "its hash has no message"},
      {"other-id", encoded, "names task \"someone-else\""},
  };
  conn.command({"SADD", "asynq:queues", kQueue});
  for (const auto& k : kinds) {
    if (k.msg) conn.command({"HSET", asynq::task_key(kQueue, k.id), "msg", *k.msg, "state", "pending"});
    conn.command({"LPUSH", asynq::pending_key(kQueue), k.id});
  }
  const auto settings = worker_settings(redis_.port(), plugins_, "admin", kQueue);
  const auto admin = [&](std::vector<std::string> args) {
    args.insert(args.begin(), worker_binary());
    ChildProcess p(args, worker_env(settings));
    const int code = p.wait_exit(15s).value_or(-1);
    return std::pair{code, p.output()};
  };
  // Still pending: listed, and shown in hex.
  const auto [show_code, shown] = admin({"tasks", "show", "--queue", kQueue, "random-bytes"});
  EXPECT_EQ(show_code, 0) << shown;
  EXPECT_NE(shown.find("undecodable"), std::string::npos) << shown;
  EXPECT_NE(shown.find("fffe0013"), std::string::npos) << shown;

  auto worker = start_worker("first");
  const auto good = enqueue_task("fault:quick", "");
  ASSERT_TRUE(test::eventually([&] { return contains(q.zset("completed"), good); })) << worker->output();
  for (const auto& k : kinds) {
    ASSERT_TRUE(test::eventually([&] { return contains(q.zset("archived"), k.id); }))
        << k.id << worker->output();
    const auto archived = q.message(k.id);
    ASSERT_TRUE(archived) << k.id;
    EXPECT_EQ(archived->id, k.id);
    EXPECT_EQ(archived->queue, kQueue);
    EXPECT_NE(archived->error_msg.find(k.reason), std::string::npos) << k.id << ": " << archived->error_msg;
    EXPECT_EQ(q.field(k.id, "state"), "archived");
  }
  EXPECT_TRUE(q.list("active").empty());
  EXPECT_TRUE(q.list("pending").empty());
  // After the next task, each was still logged exactly once (the dequeue's and the recoverer's
  // archive cannot both take effect: the script checks that the entry is still active).
  const auto second = enqueue_task("fault:quick", "");
  ASSERT_TRUE(test::eventually([&] { return contains(q.zset("completed"), second); })) << worker->output();
  for (const auto& k : kinds) {
    EXPECT_EQ(worker->count_lines({"Archived a malformed task message", "queue=faults", "task_id=" + k.id}),
              1)
        << k.id << "\n"
        << worker->output();
  }
  for (const auto& k : kinds) {
    const auto [code, out] = admin({"tasks", "delete", "--queue", kQueue, k.id});
    EXPECT_EQ(code, 0) << out;
    EXPECT_FALSE(q.exists(k.id)) << k.id;
  }
  EXPECT_TRUE(q.zset("archived").empty());
  EXPECT_TRUE(worker->running());
}

// A Redis outage logs one outage line and one recovery line, not one per loop or connection.
TEST_F(FaultTest, RedisOutageLogsExactlyOneOutageAndOneRecoveryLine) {
  auto [a, release_a] = blocking_task("a");
  auto worker = start_worker("first", {{"WORKER_LEASE", "20s"}, {"WORKER_RECOVERER_CUTOFF", "30s"}});
  ASSERT_TRUE(test::eventually([&] { return file_exists(started(release_a, 1)); })) << worker->output();
  redis_.stop();
  ASSERT_TRUE(worker->await_line({"Redis unavailable"})) << worker->output();
  touch(release_a);
  ASSERT_TRUE(test::eventually([&] { return file_exists(release_a.string() + ".returned-1"); }));
  redis_.start();
  ASSERT_TRUE(worker->await_line({"Redis available again"}, 15s)) << worker->output();
  auto conn = redis_.connect();
  QueueView q{conn, kQueue};
  ASSERT_TRUE(test::eventually([&] { return contains(q.zset("completed"), a); }, 15s)) << worker->output();
  // Let every loop (recoverer 200 ms, forwarder 100 ms, heartbeat 300 ms) run several times.
  for (int i = 0; i < 10; ++i) {
    const auto id = enqueue_task("fault:quick", "");
    ASSERT_TRUE(test::eventually([&] { return contains(q.zset("completed"), id); })) << worker->output();
  }
  ASSERT_TRUE(worker->await_line({"msg=\"Task finished\""}));
  EXPECT_EQ(worker->count_lines({"Redis unavailable"}), 1) << worker->output();
  EXPECT_EQ(worker->count_lines({"Redis available again"}), 1) << worker->output();
}

// Two workers archiving 30,000 failing tasks as fast as they can: every task hash left is listed
// in the archive (the archive script writes the task's hash before trimming, so a task trimmed
// by its own archive leaves no hash; docs/queue-engine.md).
TEST_F(FaultTest, AnArchiveFloodLeavesNoUnlistedTaskHash) {
  constexpr size_t kTasks = 30000;
  task::EnqueueRequest r;
  r.type = "fault:fail";
  r.queue = kQueue;
  r.max_retry = 0;
  enqueue_many(redis_.settings(), r, kTasks);
  const std::map<std::string, std::string> fast = {{"WORKER_CONCURRENCY", "16"}};
  auto a = start_worker("a", fast);
  auto b = start_worker("b", fast);
  auto conn = redis_.connect();
  const auto failed = [&] {
    const auto v = conn.command({"GET", asynq::failed_total_key(kQueue)});
    return v.is_nil() ? 0LL : std::stoll(std::string(v.str()));
  };
  ASSERT_TRUE(test::eventually([&] { return failed() == static_cast<long long>(kTasks); }, 300s))
      << failed() << "\n"
      << a->output() << b->output();
  long long hashes = 0;
  std::string cursor = "0";
  do {
    auto page =
        conn.command({"SCAN", cursor, "MATCH", asynq::task_key_prefix(kQueue) + "*", "COUNT", "1000"});
    cursor = std::string(page[0].str());
    hashes += static_cast<long long>(page[1].size());
  } while (cursor != "0");
  const long long archived = conn.command({"ZCARD", asynq::archived_key(kQueue)}).integer();
  EXPECT_GT(archived, 0);
  EXPECT_LE(archived, 10000);
  EXPECT_EQ(hashes, archived);
}

// A malformed message a worker left in active (asynq's dequeue leaves one there) must not stop
// lease recovery of the other tasks, and is archived itself once its lease has expired.
TEST_F(FaultTest, MalformedMessageDoesNotBlockLeaseRecovery) {
  auto conn = redis_.connect();
  QueueView q{conn, kQueue};
  const std::string garbage_id = "garbage-0002";
  const std::string garbage("\x0a\xff\xff\xff\xff\x0f junk", 11);
  auto [id, release] = blocking_task("victim");
  {
    auto first = start_worker("first");
    ASSERT_TRUE(test::eventually([&] { return file_exists(started(release, 1)); })) << first->output();
    first->kill();
  }
  // As an asynq server leaves it: in active, with a lease that has run out, never decoded; so it
  // is in the same lease-expired listing as the victim.
  conn.command({"HSET", asynq::task_key(kQueue, garbage_id), "msg", garbage, "state", "active"});
  conn.command({"LPUSH", asynq::active_key(kQueue), garbage_id});
  conn.command({"ZADD", asynq::lease_key(kQueue), "1", garbage_id});
  auto second = start_worker("second");
  EXPECT_TRUE(test::eventually([&] { return file_exists(started(release, 2)); }, 10s)) << second->output();
  EXPECT_TRUE(test::eventually([&] { return contains(q.zset("archived"), garbage_id); })) << second->output();
  EXPECT_FALSE(contains(q.list("active"), garbage_id));
}

}  // namespace
}  // namespace wk::faults
