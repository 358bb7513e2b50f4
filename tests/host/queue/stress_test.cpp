// 10,000 tasks over 3 weighted queues, two engines in one process sharing one Redis (one with a
// single processor loop, one with three), a handler that fails 20% of attempts, max retry 2:
// every task ends done or archived, none is lost, none runs again after it succeeded, and the
// counters add up.
#include <gtest/gtest.h>

#include <mutex>
#include <unordered_map>

#include "engine_fixture.hpp"
#include "support/test_env.hpp"

namespace wk::test {
namespace {

using namespace std::chrono_literals;

TEST(EngineStress, TenThousandTasksTwoEnginesTwentyPercentFailures) {
  const std::vector<std::string> queues = {test_queue("a"), test_queue("b"), test_queue("c")};
  RedisProbe probe;
  probe.clean(queues);
  constexpr int kTasks = 10000;
  constexpr int kMaxRetry = 2;

  struct Ledger {
    std::mutex mu;
    std::unordered_map<std::string, int> attempts;
    std::unordered_map<std::string, int> failures;
    std::unordered_map<std::string, bool> succeeded;
    int ran_after_success = 0;
    int total_attempts = 0;
    int total_failures = 0;
  } ledger;

  FuncDispatcher dispatcher;
  dispatcher.on("stress", [&](task::Execution& ex) {
    // Fail deterministically ~20% of attempts (hash of id and attempt).
    const bool fail = std::hash<std::string>{}(ex.task.id + "#" + std::to_string(ex.task.retried)) % 5 == 0;
    std::lock_guard lock(ledger.mu);
    if (ledger.succeeded[ex.task.id]) ++ledger.ran_after_success;
    ++ledger.attempts[ex.task.id];
    ++ledger.total_attempts;
    if (fail) {
      ++ledger.failures[ex.task.id];
      ++ledger.total_failures;
      return task::Outcome{task::Disposition::retry, "random failure", {}, {}};
    }
    ledger.succeeded[ex.task.id] = true;
    return task::Outcome{};
  });

  auto log = log::Logger::in_memory(log::Level::warn, log::Format::logfmt);
  queue::RedisBrokerSettings bs;
  bs.redis = redis_settings();
  queue::RedisBroker broker1(bs, log), broker2(bs, log);

  std::vector<std::string> ids;
  ids.reserve(kTasks);
  for (int i = 0; i < kTasks; ++i) {
    task::EnqueueRequest r;
    r.type = "stress";
    r.queue = queues[static_cast<size_t>(i) % 3];
    r.max_retry = kMaxRetry;
    ids.push_back(broker1.client().enqueue(r));
  }

  auto settings = fast_settings({{queues[0], 6}, {queues[1], 3}, {queues[2], 1}}, 8);
  settings.retry_delay = [](int32_t, const std::string&, const task::Task&) { return 0s; };
  settings.forwarder_interval = 50ms;
  auto settings2 = settings;
  settings2.identity = queue::ServerIdentity::of_this_process();
  settings2.loops = 3;  // the second engine splits its 8 slots over three loops (3, 3, 2)
  queue::Engine e1(broker1, dispatcher, log, settings);
  queue::Engine e2(broker2, dispatcher, log, settings2);
  e1.start();
  e2.start();

  auto finished = [&] {
    std::lock_guard lock(ledger.mu);
    int settled = 0;
    for (const auto& id : ids) {
      const auto it = ledger.failures.find(id);
      const int fails = it == ledger.failures.end() ? 0 : it->second;
      if (ledger.succeeded[id] || fails > kMaxRetry) ++settled;
    }
    return settled == kTasks;
  };
  // Seconds in a release build; the bound is for a loaded ASan machine, where a hang still shows.
  ASSERT_TRUE(eventually(finished, 240s, 50ms));
  e1.shutdown();
  e2.shutdown();

  long long processed = 0, failed = 0, archived = 0;
  for (const auto& q : queues) {
    const std::string k = "asynq:{" + q + "}:";
    EXPECT_EQ(probe.llen(k + "pending"), 0) << q;
    EXPECT_EQ(probe.llen(k + "active"), 0) << q;
    EXPECT_EQ(probe.zcard(k + "lease"), 0) << q;
    EXPECT_EQ(probe.zcard(k + "retry"), 0) << q;
    processed += probe.counter(k + "processed");
    failed += probe.counter(k + "failed");
    archived += probe.zcard(k + "archived");
  }
  std::lock_guard lock(ledger.mu);
  EXPECT_EQ(ledger.ran_after_success, 0);
  int expected_archived = 0, expected_done = 0;
  for (const auto& id : ids) {
    if (ledger.succeeded[id]) {
      ++expected_done;
      EXPECT_LE(ledger.failures[id], kMaxRetry) << id;
    } else {
      ++expected_archived;
      EXPECT_EQ(ledger.attempts[id], kMaxRetry + 1) << id;
    }
  }
  EXPECT_EQ(expected_done + expected_archived, kTasks);
  EXPECT_EQ(archived, expected_archived);
  EXPECT_EQ(processed, ledger.total_attempts);  // every attempt counts as processed
  EXPECT_EQ(failed, ledger.total_failures);
  EXPECT_GT(expected_archived, 0);  // with 20% failures, 3 in a row happens ~0.8% of the time
  probe.clean(queues);
}

}  // namespace
}  // namespace wk::test
