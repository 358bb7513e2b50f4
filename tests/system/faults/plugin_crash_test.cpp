// Plugin runners through the shipped worker (docs/plugin-isolation.md): a plugin that crashes
// never takes the worker down, the tasks it held are back in their queue at once with no attempt
// counted, a well-behaved plugin keeps serving beside it, and a poison task is archived with the
// signal in its last error as asynq's Inspector reads it. Every task id is accounted for.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "asynq/keys.hpp"
#include "fault_support.hpp"
#include "support/child_process.hpp"
#include "support/private_redis.hpp"
#include "support/test_env.hpp"

namespace wk::faults {
namespace {

using namespace std::chrono_literals;
using test::ChildProcess;
using test::TempDir;

constexpr const char* kQueue = "crashes";

bool contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

class PluginCrashTest : public ::testing::Test {
 protected:
  PluginCrashTest() : dir_("wk-crashes"), redis_() {
    std::filesystem::create_directories(plugins_);
    std::filesystem::permissions(plugins_, std::filesystem::perms::owner_all);
    std::filesystem::copy_file(WK_CRASHY_PLUGIN, plugins_ / "crashy.so");
    std::filesystem::copy_file(WK_FAULTS_PLUGIN, plugins_ / "faults.so");
  }

  std::unique_ptr<ChildProcess> start_worker(int concurrency) {
    auto s = worker_settings(redis_.port(), plugins_, "crash-host", kQueue);
    s["WORKER_CONCURRENCY"] = std::to_string(concurrency);
    auto w = std::make_unique<ChildProcess>(
        std::vector<std::string>{test::worker_binary(), "--plugins", plugins_.string()}, test::worker_env(s));
    if (!w->await_line({"Starting queue engine"}, 20s)) ADD_FAILURE() << "no start:\n" << w->output();
    return w;
  }
  std::string enqueue_task(const std::string& type, const std::string& payload) {
    task::EnqueueRequest r;
    r.type = type;
    r.queue = kQueue;
    r.payload = payload;
    r.max_retry = 5;
    r.retention = std::chrono::seconds(600);  // keep the result to read it
    return enqueue(redis_.settings(), r);
  }

  TempDir dir_;
  test::PrivateRedis redis_;
  std::filesystem::path plugins_ = dir_ / "plugins";
};

TEST_F(PluginCrashTest, ASegfaultHandsItsTasksBackAtOnceAndTheOtherPluginKeepsServing) {
  auto worker = start_worker(4);
  auto conn = redis_.connect();
  QueueView q{conn, kQueue};
  const auto release = dir_ / "release";
  const std::string waiting = enqueue_task("crash:wait", release.string());
  ASSERT_TRUE(worker->await_line({"Processing task", waiting}, 10s)) << worker->output();
  // Hold what comes back in pending, where the test can see it.
  conn.command({"SET", asynq::paused_key(kQueue), "1"});
  const std::string crashing = enqueue_task("crash:segv", "");
  conn.command({"DEL", asynq::paused_key(kQueue)});
  ASSERT_TRUE(worker->await_line({"Processing task", crashing}, 10s)) << worker->output();
  conn.command({"SET", asynq::paused_key(kQueue), "1"});
  ASSERT_TRUE(worker->await_line({"plugin runner died", "signal=SIGSEGV", waiting, crashing}, 10s))
      << worker->output();
  // Back in pending within a second, no attempt counted, nothing in active.
  EXPECT_TRUE(test::eventually(
      [&] {
        const auto pending = q.list("pending");
        return contains(pending, waiting) && contains(pending, crashing);
      },
      1s))
      << worker->output();
  for (const auto& id : {waiting, crashing}) {
    EXPECT_EQ(q.message(id)->retried, 0) << id;
    EXPECT_EQ(q.field(id, "state"), "pending") << id;
  }
  EXPECT_TRUE(q.list("active").empty());
  EXPECT_TRUE(worker->running());

  // The other plugin serves meanwhile and after; the crashy one comes back.
  conn.command({"DEL", asynq::paused_key(kQueue)});
  std::vector<std::string> quick;
  for (int i = 0; i < 40; ++i) quick.push_back(enqueue_task("fault:quick", ""));
  std::ofstream(release) << "go";
  // The poison task crashes twice alone (suspect, then counted) and is archived.
  ASSERT_TRUE(test::eventually([&] { return contains(q.zset("archived"), crashing); }, 30s))
      << worker->output();
  ASSERT_TRUE(test::eventually([&] { return q.zset("completed").size() == quick.size() + 1; }, 30s))
      << worker->output();
  EXPECT_TRUE(contains(q.zset("completed"), waiting));
  const auto poison = q.message(crashing);
  ASSERT_TRUE(poison);
  EXPECT_EQ(poison->error_msg, "plugin test.crashy crashed (SIGSEGV) while running this task 2 times");
  EXPECT_EQ(q.field(crashing, "state"), "archived");
  EXPECT_EQ(conn.command({"GET", "wk:crashes:{" + std::string(kQueue) + "}:" + crashing}).str(), "2");
  EXPECT_GT(conn.command({"TTL", "wk:crashes:{" + std::string(kQueue) + "}:" + crashing}).integer(), 0);
  EXPECT_EQ(q.message(waiting)->retried, 0);
  EXPECT_TRUE(worker->running()) << "the worker never exits";
  EXPECT_EQ(worker->stop(10s), 0) << worker->output();
}

// One poison task among seven good ones of the same plugin, all in flight together: only the
// poison task is archived, the seven complete, no attempt is counted for any of them, and
// every id ends done or archived.
TEST_F(PluginCrashTest, OnlyThePoisonTaskAmongEightInFlightIsArchived) {
  auto worker = start_worker(8);
  auto conn = redis_.connect();
  QueueView q{conn, kQueue};
  const auto gate = dir_ / "all-in-flight";
  std::set<std::string> good;
  for (int i = 0; i < 7; ++i) good.insert(enqueue_task("crash:maybe", "good:500:" + gate.string()));
  const std::string poison = enqueue_task("crash:maybe", "poison:0:" + gate.string());
  // Handed to the plugin, all eight (a task in active may still wait for its thread).
  ASSERT_TRUE(test::eventually([&] {
    return worker->count_lines({"Processing task", "crash:maybe"}) == 8;
  })) << worker->output();
  std::ofstream(gate) << "go";
  ASSERT_TRUE(worker->await_line({"plugin runner died", "tasks_in_flight=8"}, 20s)) << worker->output();
  ASSERT_TRUE(test::eventually([&] { return contains(q.zset("archived"), poison); }, 90s))
      << worker->output();
  ASSERT_TRUE(test::eventually([&] { return q.zset("completed").size() == good.size(); }, 60s))
      << worker->output();
  for (const auto& id : q.zset("completed")) {
    EXPECT_TRUE(good.count(id)) << id;
    EXPECT_EQ(q.message(id)->retried, 0) << id;
    EXPECT_EQ(q.field(id, "result"), "ok") << id;
  }
  EXPECT_EQ(q.zset("archived"), std::vector<std::string>{poison});
  EXPECT_EQ(q.message(poison)->error_msg,
            "plugin test.crashy crashed (SIGSEGV) while running this task 2 times");
  EXPECT_EQ(q.message(poison)->retried, 0);
  EXPECT_TRUE(q.list("pending").empty());
  EXPECT_TRUE(q.list("active").empty());
  EXPECT_EQ(worker->count_lines({"poison task archived", poison}), 1);
  EXPECT_TRUE(worker->running());
}

// What an operator sees: crashes in /metrics and `worker plugins`, a plugin whose init failed
// named by /readyz (the worker serves the others), `worker plugins check --init` catching it
// before deployment, and SIGHUP rescanning instead of killing the worker.
TEST_F(PluginCrashTest, CrashesAndRefusalsAreVisibleAndSighupRescans) {
  std::filesystem::copy_file(std::filesystem::path(WK_CRASHY_PLUGIN).parent_path() / "init_failure.so",
                             plugins_ / "init_failure.so");
  const int port = test::free_port();
  auto s = worker_settings(redis_.port(), plugins_, "visible-host", kQueue);
  s["WORKER_METRICS_ADDR"] = "127.0.0.1:" + std::to_string(port);
  ChildProcess worker({test::worker_binary(), "--plugins", plugins_.string()}, test::worker_env(s));
  ASSERT_TRUE(worker.await_line({"Starting queue engine"}, 20s)) << worker.output();
  httplib::Client http("127.0.0.1", port);

  const auto ready = http.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 503);
  EXPECT_NE(ready->body.find("plugins failed: init_failure.so refused (init failed"), std::string::npos)
      << ready->body;

  const std::string crashing = enqueue_task("crash:segv", "");
  ASSERT_TRUE(worker.await_line({"poison task archived", crashing}, 30s)) << worker.output();
  const auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(
      metrics->body.find("autodevs_worker_plugin_crashes_total{plugin=\"test.crashy\",reason=\"SIGSEGV\"} 3"),
      std::string::npos)
      << metrics->body;
  EXPECT_NE(metrics->body.find(
                "autodevs_worker_plugin_info{plugin=\"test.crashy\",version=\"0.0.1\",state=\"serving\"} 1"),
            std::string::npos);
  EXPECT_NE(metrics->body.find("autodevs_worker_plugin_runner_resident_bytes{plugin=\"test.faults\"}"),
            std::string::npos);

  auto env = test::worker_env(s);
  const auto listed = test::run({test::worker_binary(), "plugins"}, env, 20s);
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find("test.crashy"), std::string::npos) << listed.out;
  EXPECT_NE(listed.out.find("refused"), std::string::npos) << listed.out;
  const auto as_json = test::run({test::worker_binary(), "plugins", "--json"}, env, 20s);
  EXPECT_NE(as_json.out.find(R"("crashes":3)"), std::string::npos) << as_json.out;

  const auto check = test::run({test::worker_binary(), "plugins", "check", "--init",
                                (plugins_ / "init_failure.so").string(), (plugins_ / "faults.so").string()},
                               env, 60s);
  EXPECT_EQ(check.exit_code, 1) << check.out << check.err;
  EXPECT_NE(check.out.find("init_failure.so: init FAILED: init failed (status -1): config.missing"),
            std::string::npos)
      << check.out;
  EXPECT_NE(check.out.find("faults.so: init OK"), std::string::npos) << check.out;

  worker.signal(SIGHUP);
  EXPECT_TRUE(worker.await_line({"rescanning plugins", "reason=SIGHUP"}, 10s)) << worker.output();
  EXPECT_TRUE(worker.running());
  EXPECT_EQ(worker.stop(10s), 0) << worker.output();
}

// Hot swap through the shipped worker with all 8 slots busy on v1: v2 copied in and renamed
// takes new tasks within 2 s, v1's tasks finish on v1, none is lost or runs twice; a broken v3
// is refused and v2 keeps serving; SIGHUP rescans.
TEST_F(PluginCrashTest, HotSwapUnderLoad) {
  std::filesystem::remove(plugins_ / "crashy.so");
  std::filesystem::remove(plugins_ / "faults.so");
  auto deploy = [&](int version) {
    const auto tmp = plugins_ / ".swap.so.tmp";
    std::filesystem::copy_file(
        std::filesystem::path(WK_SWAP_FIXTURE_DIR) / ("swap_v" + std::to_string(version) + ".so"), tmp,
        std::filesystem::copy_options::overwrite_existing);
    std::filesystem::rename(tmp, plugins_ / "swap.so");
  };
  deploy(1);
  auto worker = start_worker(8);
  auto conn = redis_.connect();
  QueueView q{conn, kQueue};
  std::vector<std::string> first;
  for (int i = 0; i < 8; ++i) first.push_back(enqueue_task("swap:work", "1500"));
  ASSERT_TRUE(test::eventually([&] {
    return worker->count_lines({"Processing task", "swap:work"}) == 8;
  })) << worker->output();

  deploy(2);
  ASSERT_TRUE(worker->await_line({"plugin updated", "to_version=2"}, 2s)) << worker->output();
  std::vector<std::string> second;
  for (int i = 0; i < 8; ++i) second.push_back(enqueue_task("swap:work", "10"));
  ASSERT_TRUE(test::eventually([&] { return q.zset("completed").size() == 16; }, 30s)) << worker->output();
  for (const auto& id : first) EXPECT_EQ(q.field(id, "result"), "v1") << id;
  for (const auto& id : second) EXPECT_EQ(q.field(id, "result"), "v2") << id;
  for (const auto& id : q.zset("completed")) EXPECT_EQ(q.message(id)->retried, 0);
  EXPECT_EQ(conn.command({"GET", asynq::processed_total_key(kQueue)}).str(), "16") << "each task ran once";
  EXPECT_TRUE(worker->await_line({"plugin runner drained and stopped", "version=1"}, 10s))
      << worker->output();

  deploy(3);
  ASSERT_TRUE(
      worker->await_line({"plugin update refused", "serving_version=2", "this version cannot start"}, 10s))
      << worker->output();
  const std::string after = enqueue_task("swap:work", "0");
  ASSERT_TRUE(test::eventually([&] { return contains(q.zset("completed"), after); }, 10s))
      << worker->output();
  EXPECT_EQ(q.field(after, "result"), "v2");

  worker->signal(SIGHUP);
  EXPECT_TRUE(worker->await_line({"rescanning plugins", "reason=SIGHUP"}, 10s)) << worker->output();
  EXPECT_TRUE(worker->running());
  EXPECT_EQ(worker->stop(10s), 0) << worker->output();
}

// A handler deaf to cancellation that never returns holds only its own task and slot: it fails
// at its deadline plus the engine's grace (its own fault: an attempt counted), another thread
// takes its slot, the other plugin keeps serving, and a stop still ends the worker in bounds
// (its runner is killed after the shutdown grace).
TEST_F(PluginCrashTest, AHandlerThatHangsHoldsOnlyItsOwnTask) {
  auto worker = start_worker(2);
  auto conn = redis_.connect();
  QueueView q{conn, kQueue};
  task::EnqueueRequest hang;
  hang.type = "crash:hang";
  hang.queue = kQueue;
  hang.max_retry = 0;
  hang.timeout = std::chrono::seconds(1);
  const std::string hung = enqueue(redis_.settings(), hang);
  ASSERT_TRUE(worker->await_line({"Processing task", hung}, 10s)) << worker->output();
  std::vector<std::string> quick;
  for (int i = 0; i < 20; ++i) quick.push_back(enqueue_task("fault:quick", ""));
  ASSERT_TRUE(test::eventually([&] { return q.zset("completed").size() == quick.size(); }, 20s))
      << worker->output();
  ASSERT_TRUE(test::eventually([&] { return contains(q.zset("archived"), hung); }, 20s)) << worker->output();
  EXPECT_EQ(q.message(hung)->error_msg, "context deadline exceeded");
  EXPECT_TRUE(worker->running());
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(worker->stop(20s), 0) << worker->output();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s) << "shutdown grace (1 s) plus a few seconds";
}

// Every way a runner dies, through the shipped worker, with the well-behaved plugin busy beside
// it: the worker never exits, the good plugin's tasks in flight finish normally (once), the
// crashed task is back in pending within a second with retried unchanged, it is archived at the
// crash limit with the reason in its last error, and every task id ends done or archived.
struct CrashKind {
  std::string name;    // crash:<name>
  std::string reason;  // how the runner's death is described
  std::map<std::string, std::string> settings;
};

class EveryCrashKind : public PluginCrashTest, public ::testing::WithParamInterface<CrashKind> {};

TEST_P(EveryCrashKind, TheWorkerSurvivesTheOtherPluginServesAndNoTaskIsLost) {
  const CrashKind& kind = GetParam();
  auto s = worker_settings(redis_.port(), plugins_, "crash-host", kQueue);
  s["WORKER_CONCURRENCY"] = "4";
  for (const auto& [k, v] : kind.settings) s[k] = v;
  ChildProcess worker({test::worker_binary(), "--plugins", plugins_.string()}, test::worker_env(s));
  ASSERT_TRUE(worker.await_line({"Starting queue engine"}, 20s)) << worker.output();
  auto conn = redis_.connect();
  QueueView q{conn, kQueue};

  // Two tasks of the good plugin in flight, then the one that will die.
  std::vector<std::pair<std::string, std::filesystem::path>> blocked;
  for (const char* name : {"block-a", "block-b"}) {
    const auto release = dir_ / name;
    blocked.emplace_back(enqueue_task("fault:block", release.string()), release);
  }
  for (const auto& [id, release] : blocked) {
    ASSERT_TRUE(test::eventually([&] { return std::filesystem::exists(release.string() + ".started-1"); }))
        << worker.output();
  }
  const auto trigger = dir_ / "die-now";
  const std::string dying = enqueue_task("crash:" + kind.name, "after:" + trigger.string());
  ASSERT_TRUE(worker.await_line({"Processing task", dying}, 10s)) << worker.output();
  conn.command({"SET", asynq::paused_key(kQueue), "1"});  // keep what comes back in pending
  std::ofstream(trigger) << "go";
  ASSERT_TRUE(worker.await_line({"plugin runner died", kind.reason, dying}, 20s)) << worker.output();
  EXPECT_TRUE(test::eventually([&] { return q.list("pending") == std::vector<std::string>{dying}; }, 1s))
      << worker.output();
  EXPECT_EQ(q.message(dying)->retried, 0);
  EXPECT_EQ(q.list("active").size(), blocked.size()) << "the good plugin's tasks still run";

  conn.command({"DEL", asynq::paused_key(kQueue)});
  std::vector<std::string> quick;
  for (int i = 0; i < 30; ++i) quick.push_back(enqueue_task("fault:quick", ""));
  for (const auto& [id, release] : blocked) std::ofstream(release) << "go";
  ASSERT_TRUE(test::eventually([&] { return contains(q.zset("archived"), dying); }, 60s)) << worker.output();
  ASSERT_TRUE(
      test::eventually([&] { return q.zset("completed").size() == quick.size() + blocked.size(); }, 30s))
      << worker.output();
  const std::string error = q.message(dying)->error_msg;
  EXPECT_EQ(error.rfind("plugin test.crashy " + kind.reason, 0), 0u) << error;
  EXPECT_NE(error.find("while running this task 2 times"), std::string::npos) << error;
  EXPECT_EQ(q.message(dying)->retried, 0);
  for (const auto& [id, release] : blocked) {
    EXPECT_EQ(q.message(id)->retried, 0);
    EXPECT_FALSE(std::filesystem::exists(release.string() + ".started-2")) << "ran once";
  }
  EXPECT_TRUE(q.list("pending").empty());
  EXPECT_TRUE(q.list("active").empty());
  EXPECT_TRUE(q.zset("retry").empty());
  EXPECT_TRUE(worker.running()) << "the worker never exits";
  EXPECT_EQ(worker.stop(10s), 0) << worker.output();
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, EveryCrashKind,
    ::testing::Values(
        CrashKind{"segv", "crashed (SIGSEGV)", {}}, CrashKind{"abort", "crashed (SIGABRT)", {}},
        CrashKind{"exit", "exited with status 3", {}},
        CrashKind{"alloc", "memory limit", {{"WORKER_PLUGIN_MEMORY_MAX", "test.crashy=1GiB"}}},
        CrashKind{"stall", "no answer to liveness checks", {{"WORKER_PLUGIN_LIVENESS_TIMEOUT", "1s"}}}),
    [](const auto& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace wk::faults
