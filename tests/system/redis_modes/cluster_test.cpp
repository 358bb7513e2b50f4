// The worker against a Redis Cluster (docs/operations.md, "Redis in production"): three masters
// made with `redis-cli --cluster create`, six queues whose slots fall on different nodes, 20k
// tasks drained with weighted priorities while the slot of a busy queue migrates to another node
// (MOVED, ASK and TRYAGAIN along the way); some tasks publish a follow-up on another node. Every
// task and follow-up runs, and `worker stats` agrees with a direct count read from the node that
// holds each queue.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "asynq/keys.hpp"
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

constexpr size_t kTasks = 20000;
constexpr size_t kQueues = 6;
constexpr size_t kChains = 500;  // of kTasks: each runs a follow-up on another node

// The node of `nodes` that serves `slot` in the ranges redis-cli gives three masters.
size_t node_of_slot(uint16_t slot) { return slot <= 5460 ? 0 : slot <= 10922 ? 1 : 2; }

int run(const std::vector<std::string>& argv, std::string* output = nullptr) {
  ChildProcess p(argv, test::inherited_env({}));
  const auto code = p.wait_exit(60s);
  if (output != nullptr) *output = p.output();
  return code.value_or(-1);
}

class WorkerOnACluster : public ::testing::Test {
 protected:
  WorkerOnACluster() : dir_("wk-cluster") {
    for (int i = 0; i < 3; ++i) {
      test::PrivateRedis::Options o;
      o.extra_args = {"--cluster-enabled",      "yes", "--cluster-config-file", "nodes.conf",
                      "--cluster-node-timeout", "5000"};
      nodes_.push_back(std::make_unique<test::PrivateRedis>(o));
    }
    std::vector<std::string> create{"redis-cli", "--cluster", "create"};
    for (const auto& n : nodes_) create.push_back("127.0.0.1:" + std::to_string(n->port()));
    create.insert(create.end(), {"--cluster-replicas", "0", "--cluster-yes"});
    std::string out;
    if (run(create, &out) != 0) ADD_FAILURE() << out;
    for (const auto& n : nodes_) {
      EXPECT_TRUE(test::eventually(
          [&] {
            auto c = n->connect();
            return std::string(c.command({"CLUSTER", "INFO"}).str()).find("cluster_state:ok") !=
                   std::string::npos;
          },
          30s, 50ms));
    }
    // Two queues on each node.
    std::vector<size_t> per_node(3, 0);
    for (int i = 0; queues_.size() < kQueues; ++i) {
      const std::string name = "cq" + std::to_string(i);
      const size_t node = node_of_slot(redis::key_slot(name));
      if (per_node[node] == 2) continue;
      ++per_node[node];
      queues_.push_back(name);
    }
    std::filesystem::create_directories(plugins_);
    std::filesystem::permissions(plugins_, std::filesystem::perms::owner_all);
    std::filesystem::copy_file(WK_FAULTS_PLUGIN, plugins_ / "faults.so");
  }

  std::string node_list() const {
    std::string out;
    for (const auto& n : nodes_)
      out += (out.empty() ? "" : ",") + std::string("127.0.0.1:") + std::to_string(n->port());
    return out;
  }

  redis::Settings cluster_settings() const {
    redis::Cluster::Options o;
    for (const auto& n : nodes_) o.seeds.push_back({"127.0.0.1", n->port()});
    o.connection.connect_timeout = std::chrono::milliseconds(500);
    redis::Settings s;
    s.cluster = std::make_shared<redis::Cluster>(o);
    return s;
  }

  // `command key` (GET, LLEN) on whichever node serves the key (the others answer MOVED): a count
  // read directly, without the worker's routing.
  long long direct(const std::string& command, const std::string& key) const {
    for (const auto& n : nodes_) {
      auto c = n->connect();
      const std::string_view argv[] = {command, key};
      auto reply = c.command_raw(argv);
      if (reply.is_error()) continue;
      if (reply.is_integer()) return reply.integer();
      return reply.is_nil() ? 0 : std::stoll(std::string(reply.str()));
    }
    ADD_FAILURE() << "no node serves " << key;
    return -1;
  }
  long long direct_get(const std::string& key) const { return direct("GET", key); }

  // Moves `slot` from node `from` to node `to` the way redis-cli --cluster reshard does: mark it
  // importing and migrating, MIGRATE its keys in batches, then give it to `to` everywhere.
  void migrate_slot(uint16_t slot, size_t from, size_t to) {
    auto source = nodes_[from]->connect();
    auto target = nodes_[to]->connect();
    const std::string source_id(source.command({"CLUSTER", "MYID"}).str());
    const std::string target_id(target.command({"CLUSTER", "MYID"}).str());
    const std::string s = std::to_string(slot);
    target.command({"CLUSTER", "SETSLOT", s, "IMPORTING", source_id});
    source.command({"CLUSTER", "SETSLOT", s, "MIGRATING", target_id});
    while (true) {
      auto keys = source.command({"CLUSTER", "GETKEYSINSLOT", s, "20"});
      if (keys.size() == 0) break;
      std::vector<std::string> argv{"MIGRATE", "127.0.0.1", std::to_string(nodes_[to]->port()), "", "0",
                                    "5000",    "KEYS"};
      for (size_t i = 0; i < keys.size(); ++i) argv.emplace_back(keys[i].str());
      const std::vector<std::string_view> views(argv.begin(), argv.end());
      source.command(views);
    }
    for (const auto& n : nodes_) {
      auto c = n->connect();
      c.command({"CLUSTER", "SETSLOT", s, "NODE", target_id});
    }
  }

  TempDir dir_;
  std::filesystem::path plugins_ = dir_ / "plugins";
  std::vector<std::unique_ptr<test::PrivateRedis>> nodes_;
  std::vector<std::string> queues_;
};

TEST_F(WorkerOnACluster, DrainsSixQueuesWhileASlotMigratesAndStatsAgree) {
  const auto runs_file = dir_ / "runs";
  std::set<std::string> ids;
  {
    redis::Pool pool(cluster_settings(), 1);
    queue::Client client(pool);
    task::EnqueueRequest r;
    r.type = "fault:record";
    r.payload = runs_file.string();
    r.max_retry = 25;
    for (size_t i = 0; i < kTasks - kChains; ++i) {
      r.queue = queues_[i % kQueues];
      ids.insert(client.enqueue(r));
    }
    // Tasks whose follow-up goes to a queue on another node: no transaction spans the two.
    const std::string& source = queues_[1];
    const auto elsewhere = std::find_if(queues_.begin(), queues_.end(), [&](const std::string& q) {
      return node_of_slot(redis::key_slot(q)) != node_of_slot(redis::key_slot(source));
    });
    ASSERT_NE(elsewhere, queues_.end());
    r.type = "fault:chain";
    r.queue = source;
    r.payload = *elsewhere + "\n" + runs_file.string();
    for (size_t i = 0; i < kChains; ++i) ids.insert("followup-" + client.enqueue(r));
  }
  for (const auto& q : queues_) {
    EXPECT_EQ(direct_get(asynq::processed_total_key(q)), 0) << q;
  }

  auto s = worker_settings(nodes_[0]->port(), plugins_, "cluster-host", queues_[0]);
  for (const char* replaced : {"REDIS_HOST", "REDIS_PORT"}) s.erase(replaced);
  s["REDIS_CLUSTER_NODES"] = node_list();
  s["WORKER_CONCURRENCY"] = "8";
  s["LOG_LEVEL"] = "info";
  std::string weights;
  for (size_t i = 0; i < kQueues; ++i)
    weights += (i == 0 ? "" : ",") + queues_[i] + "=" + std::to_string(6 - i);
  s["WORKER_QUEUES"] = weights;
  // asynq's lease: the migration pauses a queue's scripts for moments, not for a lease.
  use_engine_timings(s);
  ChildProcess worker({test::worker_binary(), "--plugins", plugins_.string()}, test::worker_env(s));
  ASSERT_TRUE(worker.await_line({"Starting job server", "cluster 127.0.0.1:"}, 20s)) << worker.output();

  const auto runs = [&] { return lines_of(runs_file); };
  // The heaviest queue's slot moves to the next node while the worker drains it.
  ASSERT_TRUE(test::eventually([&] { return runs().size() >= kTasks / 10; }, 120s, 20ms)) << worker.output();
  const uint16_t slot = redis::key_slot(queues_[0]);
  const size_t from = node_of_slot(slot);
  migrate_slot(slot, from, (from + 1) % 3);
  // Tasks were still waiting in the moved queue: the worker has to follow MOVED to reach them.
  const auto moved_pending =
      nodes_[(from + 1) % 3]->connect().command({"LLEN", asynq::pending_key(queues_[0])});
  EXPECT_GT(moved_pending.integer(), 0);

  const bool all_ran = test::eventually(
      [&] {
        const auto lines = runs();
        return std::set<std::string>(lines.begin(), lines.end()).size() >= kTasks;
      },
      240s, 100ms);
  ASSERT_TRUE(all_ran) << worker.output().substr(0, 20000);
  const auto lines = runs();
  EXPECT_EQ(std::set<std::string>(lines.begin(), lines.end()), ids);
  std::cout << "ran more than once: " << lines.size() - ids.size() << " of " << kTasks << "\n";

  // Nothing left anywhere, and `worker stats` says what the nodes hold.
  long long processed = 0;
  for (const auto& q : queues_) {
    EXPECT_TRUE(test::eventually([&] { return direct("LLEN", asynq::active_key(q)) == 0; }, 30s));
    processed += direct_get(asynq::processed_total_key(q));
  }
  // Counted exactly: the done script cannot be split by the migration.
  EXPECT_EQ(processed, static_cast<long long>(kTasks + kChains));
  const auto [stats_code, out] = run_worker_command({"stats", "--json"}, s);
  ASSERT_EQ(stats_code, 0) << out;
  for (const auto& q : queues_) {
    const std::string expected =
        "\"processed_total\": " + std::to_string(direct_get(asynq::processed_total_key(q)));
    const size_t at = out.find("\"queue\": \"" + q + "\"");
    ASSERT_NE(at, std::string::npos) << out;
    // The queue's object: its fields come before "queue" in the sorted JSON.
    const size_t start = out.rfind('{', at);
    EXPECT_NE(out.substr(start, at - start).find(expected), std::string::npos) << q << ":\n" << out;
    EXPECT_NE(out.substr(start, at - start).find("\"pending\": 0"), std::string::npos) << q << ":\n" << out;
  }
  EXPECT_EQ(worker.stop(10s), 0) << worker.output().substr(0, 20000);
}

}  // namespace
}  // namespace wk::faults
