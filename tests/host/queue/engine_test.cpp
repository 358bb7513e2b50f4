// The engine's loops against a real redis-server: outcome rules and counters, retry-after, the
// deadline, cancellation via PUBLISH, lease extension, recovery, shutdown requeue, queue order,
// and flow control's parking (docs/queue-engine.md, "Flow control").
#include <gtest/gtest.h>

#include <mutex>
#include <optional>
#include <thread>

#include "engine_fixture.hpp"
#include "queue/subscriber.hpp"
#include "support/test_env.hpp"

namespace wk::test {
namespace {

using namespace std::chrono_literals;
using task::Disposition;
using task::Outcome;

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    q_ = test_queue("q");
    probe_.clean({q_});
    queue::RedisBrokerSettings bs;
    bs.redis = redis_settings();
    broker_ = std::make_unique<queue::RedisBroker>(bs, log_);
  }
  void TearDown() override {
    engine_.reset();
    probe_.clean({q_});
  }
  void start(queue::Settings s, bool with_cancel_source = false) {
    std::unique_ptr<queue::CancelSource> cancels;
    if (with_cancel_source) cancels = std::make_unique<queue::RedisCancelSource>(redis_settings());
    engine_ = std::make_unique<queue::Engine>(*broker_, dispatcher_, log_, std::move(s), std::move(cancels));
    engine_->start();
  }
  std::string enqueue(const std::string& type, int max_retry = 3,
                      std::optional<std::chrono::seconds> timeout = {},
                      std::optional<std::chrono::seconds> retention = {}, const std::string& queue = {}) {
    task::EnqueueRequest r;
    r.type = type;
    r.queue = queue.empty() ? q_ : queue;
    r.payload = R"({"n":1})";
    r.max_retry = max_retry;
    r.timeout = timeout;
    r.retention = retention;
    return broker_->client().enqueue(r);
  }
  std::string key(const std::string& suffix) const { return "asynq:{" + q_ + "}:" + suffix; }
  std::string logged() const {
    std::string out;
    for (const auto& line : log_.lines()) out += line + "\n";
    return out;
  }
  // The running engine's asynq:workers:{host:pid:sid} hash.
  std::string workers_key() const {
    const auto& id = engine_->identity();
    return asynq::workers_key(id.host, id.pid, id.server_id);
  }

  log::Logger log_ = log::Logger::in_memory(log::Level::debug, log::Format::logfmt);
  RedisProbe probe_;
  FuncDispatcher dispatcher_;
  std::unique_ptr<queue::RedisBroker> broker_;
  std::unique_ptr<queue::Engine> engine_;
  std::string q_;
};

TEST_F(EngineTest, SuccessDeletesTheTaskAndCountsProcessed) {
  dispatcher_.on("ok", [](task::Execution&) { return Outcome{}; });
  start(fast_settings({{q_, 1}}));
  const auto id = enqueue("ok");
  ASSERT_TRUE(eventually([&] { return probe_.counter(key("processed")) == 1; }));
  EXPECT_FALSE(probe_.exists(key("t:" + id)));
  EXPECT_EQ(probe_.llen(key("active")), 0);
  EXPECT_EQ(probe_.zcard(key("lease")), 0);
  EXPECT_EQ(probe_.counter(key("failed")), 0);
}

TEST_F(EngineTest, SuccessWithRetentionCompletesAndPublishesFollowUps) {
  const std::string follow_q = test_queue("follow");
  probe_.clean({follow_q});
  dispatcher_.on("ok", [&](task::Execution& ex) {
    EXPECT_TRUE(ex.services.write_result("the result"));
    task::EnqueueRequest next;
    next.type = "next";
    next.queue = follow_q;
    ex.staged.push_back(next);
    return Outcome{};
  });
  start(fast_settings({{q_, 1}}));
  const auto id = enqueue("ok", 3, {}, 3600s);
  ASSERT_TRUE(eventually([&] { return probe_.zcard(key("completed")) == 1; }));
  EXPECT_EQ(probe_.hget(key("t:" + id), "state"), "completed");
  EXPECT_EQ(probe_.hget(key("t:" + id), "result"), "the result");
  EXPECT_GT(probe_.message(q_, id).completed_at, 0);
  EXPECT_EQ(probe_.llen("asynq:{" + follow_q + "}:pending"), 1);
  probe_.clean({follow_q});
}

TEST_F(EngineTest, FailureRetriesWithIncrementAndCountsFailed) {
  dispatcher_.on("bad", [](task::Execution&) { return Outcome{Disposition::retry, "boom", {}, {}}; });
  start(fast_settings({{q_, 1}}));
  const auto id = enqueue("bad", 3);
  ASSERT_TRUE(eventually([&] { return probe_.zcard(key("retry")) == 1; }));
  const auto msg = probe_.message(q_, id);
  EXPECT_EQ(msg.retried, 1);
  EXPECT_EQ(msg.error_msg, "boom");
  EXPECT_GT(msg.last_failed_at, 0);
  EXPECT_EQ(probe_.hget(key("t:" + id), "state"), "retry");
  EXPECT_EQ(probe_.counter(key("processed")), 1);
  EXPECT_EQ(probe_.counter(key("failed")), 1);
  // Default delay for n=0 is 15..44 s.
  const auto score = *probe_.zscore(key("retry"), id);
  const auto now = static_cast<double>(
      std::chrono::duration_cast<std::chrono::seconds>(queue::Clock::now().time_since_epoch()).count());
  EXPECT_GE(score, now + 14);
  EXPECT_LE(score, now + 45);
}

TEST_F(EngineTest, RetriesExhaustedArchivesWithoutIncrement) {
  dispatcher_.on("bad", [](task::Execution&) { return Outcome{Disposition::retry, "boom", {}, {}}; });
  start(fast_settings({{q_, 1}}));
  const auto id = enqueue("bad", 0);
  ASSERT_TRUE(eventually([&] { return probe_.zcard(key("archived")) == 1; }));
  EXPECT_EQ(probe_.message(q_, id).retried, 0);
  EXPECT_EQ(probe_.message(q_, id).error_msg, "boom");
  EXPECT_EQ(probe_.counter(key("failed")), 1);
}

TEST_F(EngineTest, FailNoRetryArchivesAtOnce) {
  dispatcher_.on("skip", [](task::Execution&) {
    return Outcome{Disposition::fail_no_retry, "bad payload", {}, {}};
  });
  start(fast_settings({{q_, 1}}));
  const auto id = enqueue("skip", 25);
  ASSERT_TRUE(eventually([&] { return probe_.zcard(key("archived")) == 1; }));
  EXPECT_EQ(probe_.hget(key("t:" + id), "state"), "archived");
  EXPECT_EQ(probe_.message(q_, id).error_msg, "bad payload");
}

TEST_F(EngineTest, RetryAfterRetriesAtTheGivenTimeAndCountsAFailure) {
  dispatcher_.on("later", [](task::Execution&) {
    return Outcome{Disposition::retry_after, "busy", 100s, {}};
  });
  start(fast_settings({{q_, 1}}));
  const auto before =
      std::chrono::duration_cast<std::chrono::seconds>(queue::Clock::now().time_since_epoch()).count();
  const auto id = enqueue("later", 3);
  ASSERT_TRUE(eventually([&] { return probe_.zcard(key("retry")) == 1; }));
  const auto after =
      std::chrono::duration_cast<std::chrono::seconds>(queue::Clock::now().time_since_epoch()).count();
  const auto score = *probe_.zscore(key("retry"), id);
  EXPECT_GE(score, before + 100);
  EXPECT_LE(score, after + 100 + 1);  // rounded up to a whole second: never before the 100 s
  EXPECT_EQ(probe_.message(q_, id).retried, 1);
  EXPECT_EQ(probe_.counter(key("failed")), 1);
}

TEST_F(EngineTest, UnknownTypeFailsWithHandlerNotFound) {
  auto s = fast_settings({{q_, 1}});
  s.unhandled_timeout = 0ms;  // no grace for other workers: asynq's rule at once
  start(std::move(s));
  const auto id = enqueue("nobody:serves", 0);
  ASSERT_TRUE(eventually([&] { return probe_.zcard(key("archived")) == 1; }));
  EXPECT_EQ(probe_.message(q_, id).error_msg, "handler not found for task \"nobody:serves\"");
}

// A type no handler here serves goes back without counting an attempt, for other workers, until
// it has gone unhandled for unhandled_timeout: then asynq's rule (retry as "handler not found",
// here archived at once with no retries left). Only that one failure is counted.
TEST_F(EngineTest, AnUnhandledTypeGoesBackUncountedUntilTheTimeout) {
  auto s = fast_settings({{q_, 1}});
  s.unhandled_holdoff = 200ms;
  s.unhandled_timeout = 1500ms;
  start(std::move(s));
  const auto id = enqueue("nobody:serves", 0);
  ASSERT_TRUE(eventually([&] {
    return probe_.zcard(key("retry")) == 1 &&
           probe_.message(q_, id).error_msg.find("no plugin on this worker") == 0;
  }));
  EXPECT_EQ(probe_.message(q_, id).retried, 0);
  EXPECT_EQ(probe_.counter(key("failed")), 0);
  ASSERT_TRUE(eventually([&] { return probe_.zcard(key("archived")) == 1; }, 10s));
  EXPECT_EQ(probe_.message(q_, id).error_msg, "handler not found for task \"nobody:serves\"");
  EXPECT_EQ(probe_.counter(key("failed")), 1);
  EXPECT_TRUE(probe_.exists("wk:unhandled:{" + q_ + "}:" + id));
}

// A handler that runs until cancelled, then reports cancelled (what the plugin layer does).
Outcome wait_for_cancel(task::Execution& ex) {
  ex.cancellation.wait_for(20s);
  return Outcome{Disposition::cancelled, "", {}, {}};
}

TEST_F(EngineTest, DeadlineCancelsWithContextDeadlineExceeded) {
  std::atomic<int> reason{-1};
  dispatcher_.on("slow", [&](task::Execution& ex) {
    auto out = wait_for_cancel(ex);
    reason = static_cast<int>(ex.cancellation.reason());
    return out;
  });
  start(fast_settings({{q_, 1}}));
  const auto id = enqueue("slow", 3, 1s);
  ASSERT_TRUE(eventually([&] { return probe_.zcard(key("retry")) == 1; }));
  EXPECT_EQ(reason.load(), static_cast<int>(task::CancelReason::deadline));
  EXPECT_EQ(probe_.message(q_, id).error_msg, "context deadline exceeded");
}

// A handler's own bound on an attempt (HandlerOptions().timeout) cancels it well before the
// task's own timeout (30 min here), with the deadline's reason and error text.
TEST_F(EngineTest, AHandlersAttemptTimeoutCancelsBeforeTheTasksOwn) {
  std::atomic<int> reason{-1};
  dispatcher_.on("bounded", [&](task::Execution& ex) {
    auto out = wait_for_cancel(ex);
    reason = static_cast<int>(ex.cancellation.reason());
    return out;
  });
  dispatcher_.bound("bounded", 300ms);
  start(fast_settings({{q_, 1}}));
  const auto id = enqueue("bounded", 3, 30min);
  ASSERT_TRUE(eventually([&] { return probe_.zcard(key("retry")) == 1; }));
  EXPECT_EQ(reason.load(), static_cast<int>(task::CancelReason::deadline));
  EXPECT_EQ(probe_.message(q_, id).error_msg, "context deadline exceeded");
}

// A handler that ignores the cancellation at its deadline: deadline_grace later the task is
// failed ("context deadline exceeded") although the handler still runs, as asynq does at the
// deadline itself; a new thread serves the queue meanwhile, and the handler's late "success"
// writes nothing.
TEST_F(EngineTest, AHandlerIgnoringItsDeadlineIsFailedAndItsThreadReplaced) {
  std::atomic<bool> release{false};
  std::atomic<bool> stuck_returned{false};
  dispatcher_.on("stuck", [&](task::Execution&) {
    while (!release) std::this_thread::sleep_for(10ms);
    stuck_returned = true;
    return Outcome{};
  });
  dispatcher_.on("quick", [](task::Execution&) { return Outcome{}; });
  auto s = fast_settings({{q_, 1}}, 1);
  s.deadline_grace = 300ms;
  start(s);
  struct Release {
    std::atomic<bool>& flag;
    ~Release() { flag = true; }  // never leave the handler thread stuck, even on a failed ASSERT
  } release_at_exit{release};

  const auto stuck = enqueue("stuck", 3, 1s);
  ASSERT_TRUE(eventually([&] { return probe_.zcard(key("retry")) == 1; }));
  EXPECT_FALSE(stuck_returned.load());
  EXPECT_EQ(probe_.message(q_, stuck).error_msg, "context deadline exceeded");
  EXPECT_EQ(probe_.message(q_, stuck).retried, 1);
  EXPECT_EQ(probe_.llen(key("active")), 0);
  EXPECT_FALSE(probe_.zscore(key("lease"), stuck).has_value());

  // Concurrency 1 and that thread is still in the handler: only a new thread can run this.
  const auto quick = enqueue("quick", 3);
  ASSERT_TRUE(eventually([&] { return probe_.counter(key("processed")) == 2; }));
  EXPECT_FALSE(stuck_returned.load());

  release = true;
  ASSERT_TRUE(eventually([&] { return stuck_returned.load() && engine_->running_tasks() == 0; }));
  EXPECT_EQ(probe_.hget(key("t:" + stuck), "state"), "retry");
  EXPECT_EQ(probe_.counter(key("processed")), 2);
  EXPECT_EQ(probe_.counter(key("failed")), 1);
  // And the pool is one thread again, still serving.
  enqueue("quick", 3);
  ASSERT_TRUE(eventually([&] { return probe_.counter(key("processed")) == 3; }));
}

TEST_F(EngineTest, PublishOnAsynqCancelCancelsTheRunningTask) {
  std::atomic<bool> running{false};
  dispatcher_.on("slow", [&](task::Execution& ex) {
    running = true;
    return wait_for_cancel(ex);
  });
  start(fast_settings({{q_, 1}}), true);
  const auto id = enqueue("slow", 3);
  ASSERT_TRUE(eventually([&] { return running.load(); }));
  // The subscription may still be in flight; publish until the task reacts.
  ASSERT_TRUE(eventually(
      [&] {
        probe_.conn.command({"PUBLISH", "asynq:cancel", id});
        return probe_.zcard(key("retry")) == 1;
      },
      10s, 50ms));
  EXPECT_EQ(probe_.message(q_, id).error_msg, "context canceled");
  EXPECT_EQ(probe_.message(q_, id).retried, 1);
}

TEST_F(EngineTest, HeartbeatExtendsTheLeaseAndPublishesWorkerInfo) {
  std::atomic<bool> release{false};
  dispatcher_.on("slow", [&](task::Execution& ex) {
    while (!release && !ex.cancellation.cancelled()) ex.cancellation.wait_for(10ms);
    return Outcome{};
  });
  auto s = fast_settings({{q_, 1}});
  s.lease = 4s;  // short, but a stalled heartbeat on a loaded machine must not lose it
  start(s);
  const auto id = enqueue("slow");
  ASSERT_TRUE(eventually([&] { return probe_.zscore(key("lease"), id).has_value(); }));
  const double first = *probe_.zscore(key("lease"), id);
  // Whole-second scores: the lease only moves 2 s on if the heartbeat extends it.
  ASSERT_TRUE(eventually([&] { return probe_.zscore(key("lease"), id).value_or(0) >= first + 2; }, 8s));
  const auto workers_key = this->workers_key();
  auto info = probe_.conn.command({"HGET", workers_key, id});
  ASSERT_FALSE(info.is_nil());
  const auto worker = asynq::decode_worker_info(info.str());
  EXPECT_EQ(worker.task_type, "slow");
  EXPECT_EQ(worker.queue, q_);
  EXPECT_EQ(worker.server_id, engine_->identity().server_id);
  release = true;
  ASSERT_TRUE(eventually([&] { return probe_.counter(key("processed")) == 1; }));
  EXPECT_FALSE(probe_.exists(key("t:" + id)));
}

TEST_F(EngineTest, HandlerProgressIsPublishedWithTheWorkerInfo) {
  std::atomic<bool> release{false};
  dispatcher_.on("slow", [&](task::Execution& ex) {
    // Ill-formed UTF-8 in the note: Go would refuse the whole WorkerInfo, so it is repaired.
    ex.services.heartbeat(task::Progress{3, 10, "copying \xff files"});
    while (!release && !ex.cancellation.cancelled()) ex.cancellation.wait_for(10ms);
    return Outcome{};
  });
  start(fast_settings({{q_, 1}}));
  const auto id = enqueue("slow");
  const auto workers_key = this->workers_key();
  asynq::WorkerInfo worker;
  ASSERT_TRUE(eventually([&] {
    auto info = probe_.conn.command({"HGET", workers_key, id});
    if (info.is_nil()) return false;
    worker = asynq::decode_worker_info(info.str());
    return worker.progress_done == 3;
  }));
  EXPECT_EQ(worker.progress_total, 10u);
  EXPECT_EQ(worker.progress_note, "copying \xEF\xBF\xBD files");
  EXPECT_TRUE(asynq::is_valid_utf8(worker.progress_note));
  EXPECT_TRUE(worker.unknown.empty());
  release = true;
  ASSERT_TRUE(eventually([&] { return probe_.counter(key("processed")) == 1; }));
}

TEST_F(EngineTest, RecoversATaskWhoseLeaseExpired) {
  // Simulate a dead host: a task in active with a lease that ran out long ago.
  asynq::TaskMessage msg;
  msg.type = "orphan";
  msg.id = task::new_uuid();
  msg.queue = q_;
  msg.retry = 5;
  msg.timeout = 60;
  probe_.conn.command({"HSET", key("t:" + msg.id), "msg", asynq::encode(msg), "state", "active"});
  probe_.conn.command({"LPUSH", key("active"), msg.id});
  const auto old =
      std::chrono::duration_cast<std::chrono::seconds>(queue::Clock::now().time_since_epoch()).count() - 100;
  probe_.conn.command({"ZADD", key("lease"), std::to_string(old), msg.id});
  // Recovered with the attempt counted (asynq's rule and text), due at once and forwarded at
  // once: the host that held it is dead, so it runs again here within seconds.
  std::atomic<int> runs{0};
  std::atomic<int> retried_when_run{-1};
  dispatcher_.on("orphan", [&](task::Execution& e) {
    retried_when_run = e.task.retried;
    ++runs;
    return task::Outcome{};
  });
  start(fast_settings({{q_, 1}}));
  ASSERT_TRUE(eventually([&] { return probe_.counter(key("processed")) == 2; }));
  EXPECT_EQ(runs.load(), 1);
  EXPECT_EQ(retried_when_run.load(), 1);
  EXPECT_EQ(probe_.counter(key("failed")), 1) << "the lost attempt";
  EXPECT_EQ(probe_.llen(key("active")), 0);
  EXPECT_EQ(probe_.zcard(key("lease")), 0);
  EXPECT_EQ(probe_.zcard(key("retry")), 0);
}

// asynq #1144: ids in active with no lease entry are recovered (retry, or archive when retries are
// exhausted); a task another worker holds with a valid lease is left alone.
TEST_F(EngineTest, RecoversActiveTasksWithoutLeaseButNotLeasedOnes) {
  auto put_active = [&](int retry, std::optional<long long> lease_score) {
    asynq::TaskMessage msg;
    msg.type = "elsewhere";
    msg.id = task::new_uuid();
    msg.queue = q_;
    msg.retry = retry;
    msg.timeout = 60;
    probe_.conn.command({"HSET", key("t:" + msg.id), "msg", asynq::encode(msg), "state", "active"});
    probe_.conn.command({"LPUSH", key("active"), msg.id});
    if (lease_score) probe_.conn.command({"ZADD", key("lease"), std::to_string(*lease_score), msg.id});
    return msg.id;
  };
  const auto now_s =
      std::chrono::duration_cast<std::chrono::seconds>(queue::Clock::now().time_since_epoch()).count();
  const std::string leased = put_active(5, now_s + 120);  // held by a live worker elsewhere
  const std::string orphan = put_active(5, std::nullopt);
  const std::string exhausted = put_active(0, std::nullopt);
  auto s = fast_settings({{q_, 1}});
  s.orphan_grace = 300ms;
  start(std::move(s));

  ASSERT_TRUE(
      eventually([&] { return probe_.zcard(key("retry")) == 1 && probe_.zcard(key("archived")) == 1; }));
  EXPECT_TRUE(probe_.zscore(key("retry"), orphan));
  EXPECT_TRUE(probe_.zscore(key("archived"), exhausted));
  const auto retried = probe_.message(q_, orphan);
  EXPECT_EQ(retried.retried, 1);
  EXPECT_EQ(retried.error_msg, "asynq: task lease expired");
  EXPECT_EQ(probe_.hget(key("t:" + orphan), "state"), "retry");
  const auto archived = probe_.message(q_, exhausted);
  EXPECT_EQ(archived.retried, 0);
  EXPECT_EQ(archived.error_msg, "asynq: task lease expired");
  EXPECT_EQ(probe_.counter(key("failed")), 2);
  // The leased task went through the same passes and is untouched.
  EXPECT_EQ(probe_.llen(key("active")), 1);
  EXPECT_EQ(probe_.hget(key("t:" + leased), "state"), "active");
  EXPECT_EQ(probe_.zscore(key("lease"), leased), static_cast<double>(now_s + 120));
}

TEST_F(EngineTest, ShutdownRequeuesRunningTasksWithoutCountingAnAttempt) {
  std::atomic<bool> running{false};
  std::atomic<int> reason{-1};
  dispatcher_.on("slow", [&](task::Execution& ex) {
    running = true;
    auto out = wait_for_cancel(ex);
    reason = static_cast<int>(ex.cancellation.reason());
    return out;
  });
  start(fast_settings({{q_, 1}}));
  const auto id = enqueue("slow", 3);
  ASSERT_TRUE(eventually([&] { return running.load(); }));
  engine_->shutdown();
  // The engine waits a bounded time for the handler; on a loaded machine it may return first.
  EXPECT_TRUE(eventually([&] { return reason.load() == static_cast<int>(task::CancelReason::shutdown); }));
  EXPECT_EQ(probe_.llen(key("pending")), 1);
  EXPECT_EQ(probe_.llen(key("active")), 0);
  EXPECT_EQ(probe_.hget(key("t:" + id), "state"), "pending");
  EXPECT_EQ(probe_.message(q_, id).retried, 0);
  EXPECT_EQ(probe_.counter(key("processed")), 0);
  EXPECT_EQ(probe_.counter(key("failed")), 0);
  // Server state cleared.
  const auto& ident = engine_->identity();
  EXPECT_FALSE(probe_.exists("asynq:servers:{" + ident.host + ":" + std::to_string(ident.pid) + ":" +
                             ident.server_id + "}"));
}

TEST_F(EngineTest, StopKeepsRunningTasksButTakesNoNewOnes) {
  std::atomic<bool> release{false};
  std::atomic<int> started{0};
  dispatcher_.on("slow", [&](task::Execution& ex) {
    ++started;
    while (!release && !ex.cancellation.cancelled()) ex.cancellation.wait_for(10ms);
    return Outcome{};
  });
  start(fast_settings({{q_, 1}}, 1));
  enqueue("slow");
  ASSERT_TRUE(eventually([&] { return started.load() == 1; }));
  engine_->stop();
  EXPECT_EQ(engine_->status(), queue::ServerStatus::stopped);
  enqueue("slow");
  release = true;
  ASSERT_TRUE(eventually([&] { return probe_.counter(key("processed")) == 1; }));
  EXPECT_EQ(probe_.llen(key("pending")), 1);  // the second task was not taken
  EXPECT_EQ(started.load(), 1);
}

TEST_F(EngineTest, StrictPriorityDrainsTheHigherQueueFirst) {
  const std::string high = test_queue("high");
  probe_.clean({high});
  std::mutex mu;
  std::vector<std::string> seen;
  dispatcher_.on("rec", [&](task::Execution& ex) {
    std::lock_guard lock(mu);
    seen.push_back(ex.task.queue);
    return Outcome{};
  });
  for (int i = 0; i < 20; ++i) enqueue("rec", 3, {}, {}, q_);
  for (int i = 0; i < 20; ++i) enqueue("rec", 3, {}, {}, high);
  auto s = fast_settings({{q_, 1}, {high, 5}}, 1);
  s.strict_priority = true;
  start(s);
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mu);
    return seen.size() == 40;
  }));
  for (int i = 0; i < 20; ++i) EXPECT_EQ(seen[i], high) << i;
  for (int i = 20; i < 40; ++i) EXPECT_EQ(seen[i], q_) << i;
  probe_.clean({high});
}

TEST_F(EngineTest, WeightedOrderPrefersTheHeavierQueue) {
  const std::string heavy = test_queue("heavy");
  probe_.clean({heavy});
  std::mutex mu;
  std::vector<std::string> seen;
  dispatcher_.on("rec", [&](task::Execution& ex) {
    std::lock_guard lock(mu);
    seen.push_back(ex.task.queue);
    return Outcome{};
  });
  for (int i = 0; i < 200; ++i) enqueue("rec", 3, {}, {}, q_);
  for (int i = 0; i < 200; ++i) enqueue("rec", 3, {}, {}, heavy);
  start(fast_settings({{q_, 1}, {heavy, 4}}, 1));
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mu);
    return seen.size() == 400;
  }));
  // While both have work, heavy comes first with probability 4/5: over the first 100 about 80.
  const auto heavy_first = std::count(seen.begin(), seen.begin() + 100, heavy);
  EXPECT_GE(heavy_first, 65);
  EXPECT_LE(heavy_first, 95);
  probe_.clean({heavy});
}

TEST_F(EngineTest, PauseHoldsAQueuesTasksAndAResumeIsSeenWithinASecond) {
  std::atomic<int> runs{0};
  dispatcher_.on("ok", [&](task::Execution&) {
    ++runs;
    return Outcome{};
  });
  auto s = fast_settings({{q_, 1}}, 2);
  s.wait_timeout = 30s;  // neither the pause nor the resume may wait for a wait to run out
  start(s);
  enqueue("ok");
  ASSERT_TRUE(eventually([&] { return runs.load() == 1; }, 5s));
  probe_.conn.command({"SET", key("paused"), "1"});
  const auto held = enqueue("ok");
  // Held: the task stays pending while the queue is paused. (A negative can only be watched for
  // a while; the waiter's BLMOVE returns at once for the new task and finds the queue paused.)
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(runs.load(), 1);
  EXPECT_EQ(probe_.hget(key("t:" + held), "state"), "pending");
  probe_.conn.command({"DEL", key("paused")});
  const auto resumed = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return runs.load() == 2; }, 5s));
  EXPECT_LT(std::chrono::steady_clock::now() - resumed, 3s) << "the resume is checked once a second";
}

TEST_F(EngineTest, IdleEngineStartsANewTaskWithoutPolling) {
  std::atomic<int> runs{0};
  dispatcher_.on("ok", [&](task::Execution&) {
    ++runs;
    return Outcome{};
  });
  auto s = fast_settings({{q_, 1}}, 4);
  s.wait_timeout = 30s;  // a poller would need this long; the blocking wait wakes at once
  start(s);
  for (int i = 1; i <= 3; ++i) {
    enqueue("ok");
    ASSERT_TRUE(eventually([&] { return runs.load() == i; }, 5s)) << i;
  }
  EXPECT_TRUE(engine_->healthy());
  EXPECT_TRUE(engine_->redis_up());
}

// ---- flow control: parked tasks --------------------------------------------------------------

// A handler that runs until `release` or a cancellation, recording which task ids started.
struct Gate {
  std::atomic<bool> release{false};
  std::mutex mu;
  std::vector<std::string> started;
  Outcome run(task::Execution& ex) {
    {
      std::lock_guard lock(mu);
      started.push_back(ex.task.id);
    }
    while (!release && !ex.cancellation.cancelled()) ex.cancellation.wait_for(10ms);
    return ex.cancellation.cancelled() ? Outcome{Disposition::cancelled, "", {}, {}} : Outcome{};
  }
  size_t count() {
    std::lock_guard lock(mu);
    return started.size();
  }
  std::string first() {
    std::lock_guard lock(mu);
    return started.empty() ? std::string() : started.front();
  }
};

// Local concurrency 1, two slots: the second task of the type waits parked, and asynq's cancel
// reaches it there (failed as "context canceled", one attempt, as for a running task) while
// the other slot keeps serving another type.
TEST_F(EngineTest, AParkedTaskHoldsNoSlotAndAsynqsCancelReachesIt) {
  Gate gate;
  const std::string type = q_ + ":limited";
  dispatcher_.on(type, [&](task::Execution& ex) { return gate.run(ex); });
  dispatcher_.on("ok", [](task::Execution&) { return Outcome{}; });
  auto s = fast_settings({{q_, 1}}, 2);
  s.limits = task::parse_type_limits(type + " concurrency=1");
  start(std::move(s), true);
  const auto a = enqueue(type, 3);
  const auto b = enqueue(type, 3);
  ASSERT_TRUE(eventually([&] { return gate.count() == 1 && probe_.llen(key("active")) == 2; })) << logged();
  const std::string parked = gate.first() == a ? b : a;
  // The free slot serves other types meanwhile.
  for (int i = 0; i < 5; ++i) enqueue("ok");
  ASSERT_TRUE(eventually([&] { return probe_.counter(key("processed")) == 5; })) << logged();
  EXPECT_NE(logged().find("Task type throttled"), std::string::npos);
  ASSERT_TRUE(eventually(
      [&] {
        probe_.conn.command({"PUBLISH", "asynq:cancel", parked});
        return probe_.zcard(key("retry")) == 1;
      },
      10s, 50ms));
  EXPECT_EQ(probe_.message(q_, parked).error_msg, "context canceled");
  EXPECT_EQ(probe_.message(q_, parked).retried, 1);
  EXPECT_EQ(gate.count(), 1u) << "the cancelled task never ran";
  gate.release = true;
  ASSERT_TRUE(eventually([&] { return probe_.counter(key("processed")) == 7; })) << logged();
}

// A parked task past its deadline fails as asynq's would ("context deadline exceeded"): time
// parked counts toward the timeout, as asynq counts it from the dequeue.
TEST_F(EngineTest, AParkedTaskPastItsDeadlineFailsWithDeadlineExceeded) {
  Gate gate;
  const std::string type = q_ + ":limited";
  dispatcher_.on(type, [&](task::Execution& ex) { return gate.run(ex); });
  auto s = fast_settings({{q_, 1}}, 2);
  s.limits = task::parse_type_limits(type + " concurrency=1");
  start(std::move(s));
  enqueue(type, 3, 60s);
  ASSERT_TRUE(eventually([&] { return gate.count() == 1; }));
  const auto late = enqueue(type, 3, 1s);
  ASSERT_TRUE(eventually([&] { return probe_.zcard(key("retry")) == 1; }, 10s)) << logged();
  EXPECT_EQ(probe_.message(q_, late).error_msg, "context deadline exceeded");
  EXPECT_EQ(gate.count(), 1u);
  gate.release = true;
}

// A stop hands parked tasks back to pending at once, with no attempt counted, while the running
// one goes on; it finishes normally.
TEST_F(EngineTest, AStopHandsParkedTasksBackAtOnceUncounted) {
  Gate gate;
  const std::string type = q_ + ":limited";
  dispatcher_.on(type, [&](task::Execution& ex) { return gate.run(ex); });
  auto s = fast_settings({{q_, 1}}, 3);
  s.limits = task::parse_type_limits(type + " concurrency=1");
  start(std::move(s));
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(enqueue(type, 3));
  ASSERT_TRUE(eventually([&] { return gate.count() == 1 && probe_.llen(key("active")) == 3; })) << logged();
  engine_->stop();
  ASSERT_TRUE(eventually([&] { return probe_.llen(key("pending")) == 2; })) << logged();
  EXPECT_EQ(probe_.llen(key("active")), 1);
  for (const auto& id : ids) EXPECT_EQ(probe_.message(q_, id).retried, 0);
  gate.release = true;
  ASSERT_TRUE(eventually([&] { return probe_.counter(key("processed")) == 1; })) << logged();
  engine_->shutdown();
  EXPECT_EQ(probe_.llen(key("pending")), 2);
  EXPECT_EQ(probe_.counter(key("failed")), 0);
  EXPECT_EQ(gate.count(), 1u);
}

// A handler's own max_concurrency is its type's local limit: its tasks never overlap, and they
// wait parked, so the other slots keep serving.
TEST_F(EngineTest, AHandlersMaxConcurrencyIsItsTypesLocalLimit) {
  const std::string type = q_ + ":serial";
  std::atomic<int> running{0};
  std::atomic<int> most{0};
  dispatcher_.on(type, [&](task::Execution&) {
    const int now = ++running;
    int seen = most.load();
    while (now > seen && !most.compare_exchange_weak(seen, now)) {
    }
    std::this_thread::sleep_for(30ms);
    --running;
    return Outcome{};
  });
  dispatcher_.max_concurrency(type, 1);
  dispatcher_.on("ok", [](task::Execution&) { return Outcome{}; });
  start(fast_settings({{q_, 1}}, 4));
  for (int i = 0; i < 10; ++i) enqueue(type);
  for (int i = 0; i < 20; ++i) enqueue("ok");
  ASSERT_TRUE(eventually([&] { return probe_.counter(key("processed")) == 30; }, 20s)) << logged();
  EXPECT_EQ(most.load(), 1);
  EXPECT_EQ(probe_.counter(key("failed")), 0);
}

// A handler answering rate_limited: the task goes to the retry set for that time with no
// attempt counted, its type is paused in Redis, and a task of that type dequeued meanwhile waits
// for the pause's end.
TEST_F(EngineTest, ARateLimitedOutcomePausesTheTypeAndCountsNoAttempt) {
  const std::string type = q_ + ":api";
  std::atomic<int> calls{0};
  std::mutex mu;
  std::vector<std::chrono::steady_clock::time_point> at;
  dispatcher_.on(type, [&](task::Execution&) {
    {
      std::lock_guard lock(mu);
      at.push_back(std::chrono::steady_clock::now());
    }
    if (calls++ == 0) return Outcome{Disposition::retry_after, "HTTP 429", 1500ms, "rate_limited"};
    return Outcome{};
  });
  start(fast_settings({{q_, 1}}, 2));
  const auto first = enqueue(type, 3);
  ASSERT_TRUE(eventually([&] { return probe_.zcard(key("retry")) == 1; })) << logged();
  EXPECT_EQ(probe_.message(q_, first).retried, 0) << "a rate limit is not the task's failure";
  EXPECT_EQ(probe_.counter(key("failed")), 0);
  EXPECT_FALSE(probe_.conn.command({"HGET", "wk:limits:paused", type}).is_nil());
  const auto second = enqueue(type, 3);
  ASSERT_TRUE(eventually([&] { return probe_.counter(key("processed")) == 2; }, 10s)) << logged();
  std::lock_guard lock(mu);
  ASSERT_EQ(at.size(), 3u);
  EXPECT_GE(at[1] - at[0], 1400ms) << "the second task ran during the pause";
  EXPECT_NE(logged().find("Task type paused across the fleet"), std::string::npos);
  (void)second;
}

}  // namespace
}  // namespace wk::test
