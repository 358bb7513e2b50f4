// Plugin runners through the shipped worker (docs/plugin-isolation.md): a plugin that crashes
// never takes the worker down, the tasks it held are back in their queue at once with no attempt
// counted, a well-behaved plugin keeps serving beside it, and a poison task is archived with the
// signal in its last error as asynq's Inspector reads it. Every task id is accounted for.
#include <gtest/gtest.h>
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
  PluginCrashTest()
      : dir_("wk-crashes"), redis_(test::PrivateRedis::Options{.persistent = false, .start = true}) {
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
  std::set<std::string> good;
  for (int i = 0; i < 7; ++i) good.insert(enqueue_task("crash:maybe", "good:1200"));
  const std::string poison = enqueue_task("crash:maybe", "poison:600");
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

}  // namespace
}  // namespace wk::faults
