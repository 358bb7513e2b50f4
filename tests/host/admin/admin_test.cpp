// The admin commands against a real Redis (DB 7), after building a state with tasks in every
// state through queue::Client and RedisBroker's own operations (the way a worker gets there).
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <sstream>

#include "admin/commands.hpp"
#include "admin/inspector.hpp"
#include "asynq/keys.hpp"
#include "queue/broker_redis.hpp"
#include "support/redis_env.hpp"
#include "support/test_env.hpp"

namespace wk::test {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

constexpr int kDb = 7;

redis::Settings settings() { return test_redis_settings(kDb); }

struct Output {
  int code = -1;
  std::string out, err;
};

// Parses argv as the worker's command line would (the admin part of it) and runs it.
Output cli(std::vector<std::string> args, const redis::Settings& redis = settings()) {
  CLI::App app{"worker"};
  admin::Commands commands(app);
  args.insert(args.begin(), "worker");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  Output o;
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    o.code = 2;
    o.err = e.what();
    return o;
  }
  EXPECT_TRUE(commands.selected());
  std::ostringstream out, err;
  o.code = commands.run(redis, out, err);
  o.out = out.str();
  o.err = err.str();
  return o;
}

class AdminTest : public ::testing::Test {
 protected:
  void SetUp() override {
    conn_ = std::make_unique<redis::Connection>(settings());
    conn_->command({"FLUSHDB"});
    queue::RedisBrokerSettings bs;
    bs.redis = settings();
    broker_ = std::make_unique<queue::RedisBroker>(
        bs, log::Logger::in_memory(log::Level::warn, log::Format::logfmt));
    // Every state in queue "ops": 2 pending (one unique), 1 active, 1 scheduled, 1 retry,
    // 2 archived, 1 completed; and an "other" queue with one pending task.
    pending_ = enqueue("email", {}, true);
    dequeue_into_state("active_t", [](queue::Broker&, const asynq::TaskMessage&) {});
    scheduled_ = enqueue("later", std::chrono::system_clock::now() + 1h);
    dequeue_into_state("retry_t", [](queue::Broker& b, const asynq::TaskMessage& m) {
      b.retry(m, std::chrono::system_clock::now() + 1h, "boom", true);
    });
    archived_ = dequeue_into_state(
        "arch_t", [](queue::Broker& b, const asynq::TaskMessage& m) { b.archive(m, "dead"); });
    archived2_ = dequeue_into_state(
        "arch_t", [](queue::Broker& b, const asynq::TaskMessage& m) { b.archive(m, "dead again"); });
    dequeue_into_state(
        "done_t", [](queue::Broker& b, const asynq::TaskMessage& m) { b.mark_complete(m, {}); }, 3600s);
    pending2_ = enqueue("email2");
    task::EnqueueRequest other;
    other.type = "x";
    other.queue = "other";
    broker_->client().enqueue(other);
  }
  void TearDown() override { conn_->command({"FLUSHDB"}); }

  std::string enqueue(const std::string& type, std::optional<task::Clock::time_point> at = {},
                      bool unique = false) {
    task::EnqueueRequest r;
    r.type = type;
    r.queue = "ops";
    r.payload = R"({"n":1})";
    r.process_at = at;
    if (unique) r.unique_ttl = 1h;
    return broker_->client().enqueue(r);
  }
  // Enqueues a task of `type`, dequeues it (it is the only pending one at that moment: the
  // others are enqueued after) and applies `finish`.
  template <class Finish>
  std::string dequeue_into_state(const std::string& type, Finish finish,
                                 std::optional<std::chrono::seconds> retention = {}) {
    task::EnqueueRequest r;
    r.type = type;
    r.queue = "ops";
    r.payload = "{}";
    r.retention = retention;
    r.max_retry = 5;
    const auto id = broker_->client().enqueue(r);
    // Pending holds `pending_` (enqueued first) at the tail: take tasks until ours comes, and
    // put the others back at the tail in order (requeue).
    std::vector<asynq::TaskMessage> others;
    std::optional<asynq::TaskMessage> mine;
    while (!mine) {
      auto d = broker_->dequeue({"ops"}, 30s);
      if (!d) throw std::runtime_error("task not found in pending");
      if (d->msg.id == id)
        mine = d->msg;
      else
        others.push_back(d->msg);
    }
    for (auto it = others.rbegin(); it != others.rend(); ++it) broker_->requeue(*it);
    finish(*broker_, *mine);
    return id;
  }
  std::string state_of(const std::string& id, const std::string& q = "ops") {
    auto r = conn_->command({"HGET", asynq::task_key(q, id), "state"});
    return r.is_nil() ? "" : std::string(r.str());
  }

  std::unique_ptr<redis::Connection> conn_;
  std::unique_ptr<queue::RedisBroker> broker_;
  std::string pending_, pending2_, scheduled_, archived_, archived2_;
};

TEST_F(AdminTest, StatsShowsEveryStateAndCounters) {
  const auto o = cli({"stats", "--queue", "ops", "--json"});
  ASSERT_EQ(o.code, 0) << o.err;
  const auto j = json::parse(o.out)["queues"][0];
  EXPECT_EQ(j["queue"], "ops");
  EXPECT_EQ(j["pending"], 2);
  EXPECT_EQ(j["active"], 1);
  EXPECT_EQ(j["scheduled"], 1);
  EXPECT_EQ(j["retry"], 1);
  EXPECT_EQ(j["archived"], 2);
  EXPECT_EQ(j["completed"], 1);
  EXPECT_EQ(j["size"], 8);
  EXPECT_EQ(j["processed_today"], 4);  // retry + 2 archive + complete (protocol §6.24)
  EXPECT_EQ(j["failed_today"], 3);
  EXPECT_EQ(j["paused"], false);
  EXPECT_GE(j["latency_ms"].get<long long>(), 0);

  const auto all = cli({"stats"});
  ASSERT_EQ(all.code, 0) << all.err;
  EXPECT_NE(all.out.find("QUEUE"), std::string::npos);
  EXPECT_NE(all.out.find("ops "), std::string::npos) << all.out;
  EXPECT_NE(all.out.find("other "), std::string::npos) << all.out;
}

TEST_F(AdminTest, LatencyIsTheAgeOfTheOldestPendingTask) {
  // Make the oldest pending task 5 s old, as if it had waited.
  const auto five_s_ago = std::chrono::duration_cast<std::chrono::nanoseconds>(
      (std::chrono::system_clock::now() - 5s).time_since_epoch());
  conn_->command(
      {"HSET", asynq::task_key("ops", pending_), "pending_since", std::to_string(five_s_ago.count())});
  admin::Inspector in(settings());
  const auto s = in.stats("ops");
  EXPECT_GE(s.latency, 5000ms);
  EXPECT_LT(s.latency, 60000ms);
}

TEST_F(AdminTest, PauseMakesDequeueSkipOnlyThatQueue) {
  auto o = cli({"queues", "pause", "ops"});
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_TRUE(conn_->command({"EXISTS", asynq::paused_key("ops")}).integer() == 1);
  o = cli({"queues", "pause", "ops"});
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.err.find("queue \"ops\" is already paused"), std::string::npos) << o.err;

  // The paused queue is skipped, the other one still serves.
  auto d = broker_->dequeue({"ops", "other"}, 30s);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->msg.queue, "other");
  EXPECT_FALSE(broker_->dequeue({"ops"}, 30s));
  const auto stats = json::parse(cli({"stats", "--queue", "ops", "--json"}).out)["queues"][0];
  EXPECT_EQ(stats["paused"], true);

  o = cli({"queues", "resume", "ops"});
  ASSERT_EQ(o.code, 0) << o.err;
  o = cli({"queues", "resume", "ops"});
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.err.find("queue \"ops\" is not paused"), std::string::npos) << o.err;
  EXPECT_TRUE(broker_->dequeue({"ops"}, 30s));
}

TEST_F(AdminTest, ListEveryStateOldestFirst) {
  auto o = cli({"tasks", "list", "--queue", "ops", "--state", "pending", "--json"});
  ASSERT_EQ(o.code, 0) << o.err;
  auto tasks = json::parse(o.out)["tasks"];
  ASSERT_EQ(tasks.size(), 2u);
  EXPECT_EQ(tasks[0]["id"], pending_);  // enqueued first, dequeued first
  EXPECT_EQ(tasks[1]["id"], pending2_);
  o = cli({"tasks", "list", "--queue", "ops", "--state", "pending", "--limit", "1", "--json"});
  ASSERT_EQ(json::parse(o.out)["tasks"].size(), 1u);
  EXPECT_EQ(json::parse(o.out)["tasks"][0]["id"], pending_);

  for (const auto& [state, n] : std::vector<std::pair<std::string, size_t>>{
           {"active", 1}, {"scheduled", 1}, {"retry", 1}, {"archived", 2}, {"completed", 1}}) {
    o = cli({"tasks", "list", "--queue", "ops", "--state", state, "--json"});
    ASSERT_EQ(o.code, 0) << o.err;
    tasks = json::parse(o.out)["tasks"];
    ASSERT_EQ(tasks.size(), n) << state;
    for (const auto& t : tasks) EXPECT_EQ(t["state"], state);
  }
  o = cli({"tasks", "list", "--queue", "ops", "--state", "archived"});
  ASSERT_EQ(o.code, 0);
  EXPECT_NE(o.out.find("LAST ERROR"), std::string::npos);
  EXPECT_NE(o.out.find("dead again"), std::string::npos) << o.out;

  o = cli({"tasks", "list", "--queue", "ops", "--state", "sleeping"});
  EXPECT_EQ(o.code, 2);
  EXPECT_NE(o.err.find("unknown state"), std::string::npos);
  o = cli({"tasks", "list", "--queue", "nope", "--state", "pending"});
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.err.find("queue \"nope\" not found"), std::string::npos);
}

TEST_F(AdminTest, ShowATask) {
  auto o = cli({"tasks", "show", "--queue", "ops", scheduled_, "--json"});
  ASSERT_EQ(o.code, 0) << o.err;
  const auto j = json::parse(o.out);
  EXPECT_EQ(j["state"], "scheduled");
  EXPECT_EQ(j["type"], "later");
  EXPECT_EQ(j["payload"], R"({"n":1})");
  EXPECT_TRUE(j["next_process_at"].is_number());
  o = cli({"tasks", "show", "--queue", "ops", archived_});
  ASSERT_EQ(o.code, 0);
  EXPECT_NE(o.out.find("archived"), std::string::npos);
  EXPECT_NE(o.out.find("dead"), std::string::npos);
  o = cli({"tasks", "show", "--queue", "ops", "no-such-id"});
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.err.find("not found"), std::string::npos);
}

TEST_F(AdminTest, RetryOfAnArchivedTaskMakesItPendingAndAWorkerTakesIt) {
  auto o = cli({"tasks", "retry", "--queue", "ops", archived_});
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(state_of(archived_), "pending");
  EXPECT_EQ(conn_->command({"ZSCORE", asynq::archived_key("ops"), archived_}).is_nil(), true);
  // LPUSH: at the head, so it is taken after the two pending ones.
  EXPECT_EQ(std::string(conn_->command({"LINDEX", asynq::pending_key("ops"), "0"}).str()), archived_);
  std::vector<std::string> taken;
  while (auto d = broker_->dequeue({"ops"}, 30s)) taken.push_back(d->msg.id);
  EXPECT_EQ(taken, (std::vector<std::string>{pending_, pending2_, archived_}));

  o = cli({"tasks", "retry", "--queue", "ops", pending_});  // now active
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.err.find("active"), std::string::npos) << o.err;
}

TEST_F(AdminTest, RetryOfScheduledAndRetryTasks) {
  ASSERT_EQ(cli({"tasks", "retry", "--queue", "ops", scheduled_}).code, 0);
  EXPECT_EQ(state_of(scheduled_), "pending");
  EXPECT_EQ(conn_->command({"ZCARD", asynq::scheduled_key("ops")}).integer(), 0);
  const auto o = cli({"tasks", "retry", "--queue", "ops", pending_});
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.err.find("already pending"), std::string::npos) << o.err;
}

TEST_F(AdminTest, ArchiveRefusesActiveTasksAndMovesOthers) {
  const auto active =
      json::parse(cli({"tasks", "list", "--queue", "ops", "--state", "active", "--json"}).out);
  const std::string active_id = active["tasks"][0]["id"];
  auto o = cli({"tasks", "archive", "--queue", "ops", active_id});
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.err.find("active"), std::string::npos) << o.err;
  EXPECT_EQ(state_of(active_id), "active");

  ASSERT_EQ(cli({"tasks", "archive", "--queue", "ops", pending_}).code, 0);
  EXPECT_EQ(state_of(pending_), "archived");
  EXPECT_EQ(conn_->command({"LLEN", asynq::pending_key("ops")}).integer(), 1);
  EXPECT_FALSE(conn_->command({"ZSCORE", asynq::archived_key("ops"), pending_}).is_nil());
  ASSERT_EQ(cli({"tasks", "archive", "--queue", "ops", scheduled_}).code, 0);
  EXPECT_EQ(state_of(scheduled_), "archived");
  o = cli({"tasks", "archive", "--queue", "ops", scheduled_});
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.err.find("already archived"), std::string::npos) << o.err;
}

TEST_F(AdminTest, DeleteReleasesTheUniqueLockItHolds) {
  const auto lock = conn_->command({"KEYS", "asynq:{ops}:unique:*"});
  ASSERT_EQ(lock.size(), 1u);
  const std::string lock_key(lock[0].str());
  EXPECT_EQ(std::string(conn_->command({"GET", lock_key}).str()), pending_);
  ASSERT_EQ(cli({"tasks", "delete", "--queue", "ops", pending_}).code, 0);
  EXPECT_EQ(conn_->command({"EXISTS", asynq::task_key("ops", pending_)}).integer(), 0);
  EXPECT_EQ(conn_->command({"EXISTS", lock_key}).integer(), 0);
  EXPECT_EQ(conn_->command({"LLEN", asynq::pending_key("ops")}).integer(), 1);
  // A lock held by another id stays.
  conn_->command({"SET", lock_key, "someone-else"});
  ASSERT_EQ(cli({"tasks", "delete", "--queue", "ops", pending2_}).code, 0);
  EXPECT_EQ(std::string(conn_->command({"GET", lock_key}).str()), "someone-else");

  const auto active =
      json::parse(cli({"tasks", "list", "--queue", "ops", "--state", "active", "--json"}).out);
  const auto o = cli({"tasks", "delete", "--queue", "ops", active["tasks"][0]["id"].get<std::string>()});
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.err.find("active"), std::string::npos) << o.err;
}

TEST_F(AdminTest, RetryAllAndDeleteAllArchived) {
  auto o = cli({"tasks", "retry-all", "--queue", "ops", "--state", "archived", "--json"});
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(json::parse(o.out)["count"], 2);
  EXPECT_EQ(state_of(archived_), "pending");
  EXPECT_EQ(state_of(archived2_), "pending");
  EXPECT_EQ(conn_->command({"LLEN", asynq::pending_key("ops")}).integer(), 4);
  EXPECT_EQ(conn_->command({"EXISTS", asynq::archived_key("ops")}).integer(), 0);

  // Archive them again (Inspector archive from pending), then delete them all.
  ASSERT_EQ(cli({"tasks", "archive", "--queue", "ops", archived_}).code, 0);
  ASSERT_EQ(cli({"tasks", "archive", "--queue", "ops", archived2_}).code, 0);
  o = cli({"tasks", "delete-all", "--queue", "ops", "--state", "archived"});
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_NE(o.out.find("2 archived tasks deleted"), std::string::npos) << o.out;
  EXPECT_EQ(conn_->command({"EXISTS", asynq::task_key("ops", archived_)}).integer(), 0);
  EXPECT_EQ(conn_->command({"ZCARD", asynq::archived_key("ops")}).integer(), 0);

  o = cli({"tasks", "retry-all", "--queue", "ops", "--state", "pending"});
  EXPECT_EQ(o.code, 2);
}

TEST_F(AdminTest, ServersListsLiveServersWithTheirActiveTasks) {
  EXPECT_NE(cli({"servers"}).out.find("No running servers"), std::string::npos);
  asynq::ServerInfo info;
  info.host = "box";
  info.pid = 42;
  info.server_id = "sid-1";
  info.concurrency = 8;
  info.queues = {{"ops", 3}};
  info.status = "active";
  info.start_time = asynq::Timestamp{1700000000, 0};
  info.active_worker_count = 1;
  asynq::WorkerInfo w;
  w.host = "box";
  w.pid = 42;
  w.server_id = "sid-1";
  w.task_id = "t1";
  w.task_type = "email";
  w.queue = "ops";
  broker_->write_server_state(info, {w}, 10s);
  auto o = cli({"servers", "--json"});
  ASSERT_EQ(o.code, 0) << o.err;
  const auto j = json::parse(o.out)["servers"];
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["host"], "box");
  EXPECT_EQ(j[0]["queues"]["ops"], 3);
  ASSERT_EQ(j[0]["active"].size(), 1u);
  EXPECT_EQ(j[0]["active"][0]["task_id"], "t1");
  o = cli({"servers"});
  EXPECT_NE(o.out.find("1/8"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("ops:3"), std::string::npos) << o.out;
}

TEST_F(AdminTest, ServersJsonShowsAHandlersProgress) {
  asynq::ServerInfo info;
  info.host = "box";
  info.pid = 43;
  info.server_id = "sid-2";
  info.concurrency = 2;
  info.queues = {{"ops", 1}};
  info.status = "active";
  asynq::WorkerInfo reporting;
  reporting.server_id = "sid-2";
  reporting.task_id = "t-reporting";
  reporting.progress_done = 4;
  reporting.progress_total = 9;
  reporting.progress_note = "cloning";
  asynq::WorkerInfo silent = reporting;
  silent.task_id = "t-silent";
  silent.progress_done = 0;
  silent.progress_total = 0;
  silent.progress_note.clear();
  broker_->write_server_state(info, {reporting, silent}, 10s);
  const auto o = cli({"servers", "--json"});
  ASSERT_EQ(o.code, 0) << o.err;
  const auto active = json::parse(o.out)["servers"][0]["active"];
  ASSERT_EQ(active.size(), 2u);
  for (const auto& task : active) {
    if (task["task_id"] == "t-reporting") {
      EXPECT_EQ(task["progress"], (json{{"done", 4}, {"total", 9}, {"note", "cloning"}}));
    } else {
      EXPECT_FALSE(task.contains("progress")) << task.dump();
    }
  }
}

TEST(AdminErrors, UnreachableRedisIsAClearFailure) {
  redis::Settings dead;
  dead.host = "127.0.0.1";
  dead.port = 1;  // nothing listens on port 1
  dead.connect_timeout = 500ms;
  const auto o = cli({"stats"}, dead);
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.err.find("cannot reach Redis at 127.0.0.1:1"), std::string::npos) << o.err;
}

TEST(AdminErrors, MissingArgumentsAreUsageErrors) {
  EXPECT_EQ(cli({"tasks", "show", "--queue", "q"}).code, 2);
  EXPECT_EQ(cli({"tasks", "list", "--state", "pending"}).code, 2);
}

}  // namespace
}  // namespace wk::test
