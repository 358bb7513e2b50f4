// The worker under Sentinel (docs/operations.md, "Redis in production"): one master, one
// replica, three sentinels. 20k tasks are enqueued and replicated (WAIT) before the fault; while
// they drain the master is killed with SIGKILL, the sentinels promote the replica, and the worker
// follows it. Every task runs; the runs beyond one per task are counted (a task runs twice where
// the old master had acknowledged an outcome that it never passed to the replica).
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "fault_support.hpp"
#include "queue/client.hpp"
#include "support/child_process.hpp"
#include "support/private_redis.hpp"
#include "support/test_env.hpp"

namespace wk::faults {
namespace {

using namespace std::chrono_literals;
using test::ChildProcess;
using test::TempDir;

constexpr const char* kQueue = "sentinel";
constexpr const char* kMaster = "wkmaster";
constexpr size_t kTasks = 20000;

// One `redis-server --sentinel` with a config file of its own (Sentinel rewrites it).
class PrivateSentinel {
 public:
  PrivateSentinel(const std::filesystem::path& dir, int master_port) : port_(test::free_port()) {
    const auto conf = dir / ("sentinel-" + std::to_string(port_) + ".conf");
    std::ofstream(conf) << "port " << port_ << "\nbind 127.0.0.1\ndir " << dir.string() << "\n"
                        << "sentinel monitor " << kMaster << " 127.0.0.1 " << master_port << " 2\n"
                        << "sentinel down-after-milliseconds " << kMaster << " 1000\n"
                        << "sentinel failover-timeout " << kMaster << " 5000\n";
    process_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{"redis-server", conf.string(), "--sentinel"}, test::inherited_env({}));
  }
  int port() const { return port_; }
  redis::Settings settings() const {
    redis::Settings s;
    s.host = "127.0.0.1";
    s.port = port_;
    s.connect_timeout = 500ms;
    return s;
  }
  // The sentinel answers, sees the replica and the two other sentinels: a failover can happen.
  bool ready() const {
    try {
      redis::Connection c(settings());
      return c.command({"SENTINEL", "replicas", kMaster}).size() == 1 &&
             c.command({"SENTINEL", "sentinels", kMaster}).size() == 2;
    } catch (const redis::Error&) {
      return false;
    }
  }
  std::string output() const { return process_->output(); }

 private:
  int port_;
  std::unique_ptr<ChildProcess> process_;
};

bool is_master(const test::PrivateRedis& server) {
  try {
    auto c = server.connect();
    return c.command({"ROLE"})[0].str() == "master";
  } catch (const redis::Error&) {
    return false;
  }
}

TEST(WorkerUnderSentinel, FollowsAFailoverAndEveryTaskRuns) {
  TempDir dir("wk-sentinel");
  const auto plugins = dir / "plugins";
  std::filesystem::create_directories(plugins);
  std::filesystem::permissions(plugins, std::filesystem::perms::owner_all);
  std::filesystem::copy_file(WK_FAULTS_PLUGIN, plugins / "faults.so");
  const auto runs_file = dir / "runs";

  test::PrivateRedis master;
  test::PrivateRedis::Options replica_options;
  replica_options.extra_args = {"--replicaof", "127.0.0.1", std::to_string(master.port())};
  test::PrivateRedis replica(replica_options);
  std::vector<std::unique_ptr<PrivateSentinel>> sentinels;
  std::string sentinel_list;
  for (int i = 0; i < 3; ++i) {
    sentinels.push_back(std::make_unique<PrivateSentinel>(dir.path(), master.port()));
    sentinel_list +=
        (i == 0 ? "" : ",") + std::string("127.0.0.1:") + std::to_string(sentinels.back()->port());
  }
  for (const auto& s : sentinels) {
    ASSERT_TRUE(test::eventually([&] { return s->ready(); }, 60s, 100ms)) << s->output();
  }

  // 20k tasks, replicated before the fault.
  std::set<std::string> ids;
  {
    redis::Pool pool(master.settings(), 1);
    queue::Client client(pool);
    task::EnqueueRequest r;
    r.type = "fault:record";
    r.queue = kQueue;
    r.payload = runs_file.string();
    r.max_retry = 25;
    for (size_t i = 0; i < kTasks; ++i) ids.insert(client.enqueue(r));
    auto c = master.connect();
    ASSERT_EQ(c.command({"WAIT", "1", "10000"}).integer(), 1);
  }

  auto s = worker_settings(master.port(), plugins, "sentinel-host", kQueue);
  for (const char* replaced : {"REDIS_HOST", "REDIS_PORT"}) s.erase(replaced);
  s["REDIS_SENTINELS"] = sentinel_list;
  s["REDIS_SENTINEL_MASTER"] = kMaster;
  s["WORKER_CONCURRENCY"] = "8";
  s["LOG_LEVEL"] = "info";
  // asynq's lease (30 s), not the fault tests' short one: a failover of a few seconds leaves the
  // syncer the time to write the outcomes the dead master lost, so a task runs twice only where
  // the old master acknowledged an outcome that never reached the replica.
  use_engine_timings(s);
  ChildProcess worker({test::worker_binary(), "--plugins", plugins.string()}, test::worker_env(s));
  ASSERT_TRUE(worker.await_line({"Starting job server", "via sentinels"}, 20s)) << worker.output();

  const auto runs = [&] { return lines_of(runs_file); };
  ASSERT_TRUE(test::eventually([&] { return runs().size() >= kTasks / 4; }, 120s, 20ms)) << worker.output();
  master.signal(SIGKILL);
  const auto killed_at = std::chrono::steady_clock::now();
  const size_t runs_at_kill = runs().size();

  ASSERT_TRUE(test::eventually([&] { return is_master(replica); }, 60s, 100ms)) << sentinels[0]->output();
  EXPECT_TRUE(worker.await_line({"Redis failover announced by a sentinel", kMaster}, 30s)) << worker.output();
  // Resumed: tasks run again (beyond the few that were finishing when the master died).
  ASSERT_TRUE(test::eventually([&] { return runs().size() > runs_at_kill + 100; }, 60s, 20ms));
  const auto resumed_after =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - killed_at);
  RecordProperty("resumed_after_ms", static_cast<int>(resumed_after.count()));
  std::cout << "resumed " << resumed_after.count() << " ms after the kill\n";
  // Every task ran, and none is left in any state on the new master.
  const bool all_ran = test::eventually(
      [&] {
        const auto lines = runs();
        return std::set<std::string>(lines.begin(), lines.end()).size() >= kTasks;
      },
      180s, 100ms);
  ASSERT_TRUE(all_ran) << worker.output().substr(0, 20000);
  auto conn = replica.connect();
  QueueView q{conn, kQueue};
  EXPECT_TRUE(test::eventually([&] { return q.list("active").empty(); }, 60s, 100ms));
  EXPECT_TRUE(q.list("pending").empty());
  EXPECT_TRUE(q.zset("retry").empty());
  EXPECT_TRUE(q.zset("archived").empty());

  const auto lines = runs();
  const std::set<std::string> ran(lines.begin(), lines.end());
  EXPECT_EQ(ran, ids);
  const size_t twice = lines.size() - ran.size();
  // The tasks whose success the old master acknowledged but never replicated: what the worker
  // finished in the last moment of replication lag before the kill (none in most runs here).
  RecordProperty("ran_more_than_once", static_cast<int>(twice));
  std::cout << "ran more than once: " << twice << " of " << kTasks << "\n";
  EXPECT_LT(twice, kTasks / 20);

  // The one-shot commands find the new master through the same settings.
  const auto [enqueue_code, enqueue_out] =
      run_worker_command({"enqueue", "--type", "fault:quick", "--queue", kQueue, "--retention", "1h"}, s);
  ASSERT_EQ(enqueue_code, 0) << enqueue_out;
  const std::string late_id = enqueue_out.substr(0, enqueue_out.find('\n'));
  // On the new master, and run there by the worker (kept as completed for the retention).
  EXPECT_TRUE(test::eventually([&] { return q.field(late_id, "state") == "completed"; }, 30s, 20ms))
      << late_id << " " << q.field(late_id, "state").value_or("(no task)");
  const auto [stats_code, stats_out] = run_worker_command({"stats", "--json"}, s);
  EXPECT_EQ(stats_code, 0) << stats_out;
  EXPECT_NE(stats_out.find("\"queue\": \"sentinel\""), std::string::npos) << stats_out;
  EXPECT_EQ(worker.stop(10s), 0) << worker.output().substr(0, 20000);
}

}  // namespace
}  // namespace wk::faults
