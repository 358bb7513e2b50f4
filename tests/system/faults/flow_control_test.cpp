// Flow control per task type across two real `worker` processes sharing a private redis-server
// (docs/queue-engine.md, "Flow control"): fleet concurrency, fleet rate, permits of a SIGKILLed
// worker, and a local limit that leaves the other types every slot. The handlers' own start
// and end times (fault:span) are the measure, not the workers' logs.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "fault_support.hpp"
#include "support/child_process.hpp"
#include "support/private_redis.hpp"
#include "support/test_env.hpp"

namespace wk::faults {
namespace {

using namespace std::chrono_literals;
using test::ChildProcess;
using test::TempDir;
using test::worker_binary;
using test::worker_env;

constexpr const char* kQueue = "flow";

// One handler run as fault:span recorded it (wall clock, microseconds).
struct Span {
  long long start = 0;
  long long end = 0;
  std::string id;
};

std::vector<Span> spans_of(const std::filesystem::path& file) {
  std::vector<Span> out;
  for (const auto& line : lines_of(file)) {
    std::istringstream in(line);
    Span s;
    if (in >> s.start >> s.end >> s.id) out.push_back(s);
  }
  return out;
}

// The most handler runs that overlapped at any moment.
int max_overlap(const std::vector<Span>& spans) {
  std::vector<std::pair<long long, int>> events;
  for (const auto& s : spans) {
    events.emplace_back(s.start, +1);
    events.emplace_back(s.end, -1);
  }
  std::sort(events.begin(), events.end());  // at equal times the end (-1) comes first
  int running = 0;
  int most = 0;
  for (const auto& [at, delta] : events) {
    running += delta;
    most = std::max(most, running);
  }
  return most;
}

class FlowControlTest : public ::testing::Test {
 protected:
  FlowControlTest() : dir_("wk-flow") {
    std::filesystem::create_directories(plugins_);
    std::filesystem::permissions(plugins_, std::filesystem::perms::owner_all);
    std::filesystem::copy_file(WK_FAULTS_PLUGIN, plugins_ / "faults.so");
  }

  std::unique_ptr<ChildProcess> start_worker(const std::string& name,
                                             const std::map<std::string, std::string>& extra) {
    auto s = worker_settings(redis_.port(), plugins_, name, kQueue);
    s["LOG_LEVEL"] = "info";
    for (const auto& [k, v] : extra) s[k] = v;
    auto w = std::make_unique<ChildProcess>(
        std::vector<std::string>{worker_binary(), "--plugins", plugins_.string()}, worker_env(s));
    if (!w->await_line({"Starting queue engine"}, 15s))
      ADD_FAILURE() << name << " did not start:\n" << w->output();
    return w;
  }

  void enqueue_n(const std::string& type, const std::string& payload, size_t n) {
    task::EnqueueRequest r;
    r.type = type;
    r.queue = kQueue;
    r.payload = payload;
    r.max_retry = 3;
    enqueue_many(redis_.settings(), r, n);
  }

  std::string span_payload(const std::filesystem::path& file, int ms) const {
    return file.string() + "\n" + std::to_string(ms);
  }

  TempDir dir_;
  test::PrivateRedis redis_;
  std::filesystem::path plugins_ = dir_ / "plugins";
};

// Fleet concurrency 3 for a 300 ms handler, two workers of 8 slots, 60 tasks queued before 200
// tasks of an unlimited type: never more than 3 of the limited type run at once, and the 200
// finish while the limited ones still trickle through (at 3 at a time they need 6 s): the tasks
// waiting for a permit hold no slot, and the queue is not blocked behind them.
TEST_F(FlowControlTest, FleetConcurrencyHoldsAcrossWorkersWithoutBlockingOtherTypes) {
  const std::map<std::string, std::string> settings = {{"WORKER_CONCURRENCY", "8"},
                                                       {"WORKER_LIMITS", "fault:span fleet=3"}};
  auto a = start_worker("flow-a", settings);
  auto b = start_worker("flow-b", settings);
  const auto limited = dir_ / "limited";
  const auto free = dir_ / "free";
  enqueue_n("fault:span", span_payload(limited, 300), 60);
  enqueue_n("fault:record", free.string(), 200);

  ASSERT_TRUE(test::eventually([&] { return lines_of(free).size() == 200; }, 60s))
      << a->output() << b->output();
  const size_t limited_done_then = spans_of(limited).size();
  std::cout << "[flow] limited tasks done when the 200 unlimited were: " << limited_done_then << "\n";
  EXPECT_LT(limited_done_then, 45u) << "the unlimited type waited behind the limited one";

  ASSERT_TRUE(test::eventually([&] { return spans_of(limited).size() == 60; }, 60s))
      << a->output() << b->output();
  const auto spans = spans_of(limited);
  EXPECT_EQ(max_overlap(spans), 3);
  // Both workers ran the limited type: the limit held across processes, not inside one.
  EXPECT_GT(a->count_lines({"Task type throttled", "task_type=fault:span"}) +
                b->count_lines({"Task type throttled", "task_type=fault:span"}),
            0)
      << a->output() << b->output();
  auto conn = redis_.connect();
  QueueView q{conn, kQueue};
  // The last handlers' acknowledgements and permit releases follow their file writes: await them.
  EXPECT_TRUE(test::eventually([&] { return q.list("pending").empty() && q.list("active").empty(); }));
  EXPECT_TRUE(q.zset("retry").empty()) << "a parked or handed-back task cost an attempt";
  // Every permit was given back.
  EXPECT_TRUE(test::eventually([&] {
    return conn.command({"ZCARD", "wk:limits:{fault:span}:permits"}).integer() == 0;
  }));
}

// A fleet rate of 20 per second across both workers: 200 tasks take 10 s (± 10 %), and no
// calendar second holds more starts than 20 + the burst (1 by default).
TEST_F(FlowControlTest, FleetRateHoldsAcrossWorkers) {
  const std::map<std::string, std::string> settings = {{"WORKER_CONCURRENCY", "8"},
                                                       {"WORKER_LIMITS", "fault:span rate=20/s"}};
  auto a = start_worker("rate-a", settings);
  auto b = start_worker("rate-b", settings);
  const auto file = dir_ / "rated";
  enqueue_n("fault:span", span_payload(file, 0), 200);
  ASSERT_TRUE(test::eventually([&] { return spans_of(file).size() == 200; }, 40s))
      << a->output() << b->output();
  auto spans = spans_of(file);
  std::sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) { return x.start < y.start; });
  const double seconds = static_cast<double>(spans.back().end - spans.front().start) / 1e6;
  EXPECT_GE(seconds, 9.0);
  EXPECT_LE(seconds, 11.0);
  std::map<long long, int> per_second;
  for (const auto& s : spans) ++per_second[s.start / 1000000];
  int busiest = 0;
  for (const auto& [second, starts] : per_second) {
    EXPECT_LE(starts, 21) << "second " << second;
    busiest = std::max(busiest, starts);
  }
  std::cout << "[flow] 200 tasks at 20/s took " << seconds << " s; busiest second: " << busiest
            << " starts\n";
}

// A worker SIGKILLed while it holds fleet permits: they are free again within the lease (2 s
// here), and another worker then takes them for the recovered tasks.
TEST_F(FlowControlTest, PermitsOfAKilledWorkerExpireWithinTheLease) {
  const std::map<std::string, std::string> settings = {{"WORKER_CONCURRENCY", "4"},
                                                       {"WORKER_LIMITS", "fault:block fleet=2"}};
  auto conn = redis_.connect();
  const auto held_now = [&] {
    // Unexpired permits, by Redis's own clock.
    const auto t = conn.command({"TIME"});
    const long long now_ms =
        std::stoll(std::string(t[0].str())) * 1000 + std::stoll(std::string(t[1].str())) / 1000;
    return conn.command({"ZCOUNT", "wk:limits:{fault:block}:permits", "(" + std::to_string(now_ms), "+inf"})
        .integer();
  };
  const auto release = dir_ / "release";
  auto first = start_worker("holder", settings);
  enqueue_n("fault:block", release.string(), 3);
  ASSERT_TRUE(test::eventually([&] { return held_now() == 2; }, 15s)) << first->output();
  // The third waits for a permit, parked: two run, not three.
  ASSERT_TRUE(first->await_line({"Task type throttled", "task_type=fault:block", "reason=fleet"}, 10s))
      << first->output();
  // Still held a lease later: the heartbeat extends them while the tasks run.
  std::this_thread::sleep_for(2500ms);
  EXPECT_EQ(held_now(), 2);

  first->kill();
  const auto killed = std::chrono::steady_clock::now();
  ASSERT_TRUE(test::eventually([&] { return held_now() == 0; }, 10s));
  EXPECT_LE(std::chrono::steady_clock::now() - killed, 2s + 500ms) << "the lease is 2 s";

  // The tasks come back by their own leases; a new worker takes permits for two of them.
  std::ofstream(release) << "go";
  auto second = start_worker("taker", settings);
  QueueView q{conn, kQueue};
  ASSERT_TRUE(test::eventually(
      [&] { return q.zset("retry").empty() && q.list("active").empty() && q.list("pending").empty(); }, 30s))
      << second->output();
  EXPECT_TRUE(test::eventually([&] { return held_now() == 0; }));
}

// Local concurrency 1 for one type on a worker of 4 slots: while one task of it runs and three
// wait, three tasks of another type queued behind them run at once: every slot is in use.
TEST_F(FlowControlTest, ALocalLimitLeavesTheOtherTypesTheirSlots) {
  auto worker =
      start_worker("local", {{"WORKER_CONCURRENCY", "4"}, {"WORKER_LIMITS", "fault:span concurrency=1"}});
  const auto limited = dir_ / "limited";
  const auto release = dir_ / "release";
  enqueue_n("fault:span", span_payload(limited, 1500), 4);
  std::vector<std::filesystem::path> blocks;
  for (int i = 0; i < 3; ++i) {
    task::EnqueueRequest r;
    r.type = "fault:block";
    r.queue = kQueue;
    r.payload = (dir_ / ("block-" + std::to_string(i))).string();
    enqueue(redis_.settings(), r);
    blocks.emplace_back(r.payload + ".started-1");
  }
  // The three blocking tasks start while the first limited task still runs: 1 + 3 slots busy.
  ASSERT_TRUE(test::eventually(
      [&] {
        return std::all_of(blocks.begin(), blocks.end(),
                           [](const auto& p) { return std::filesystem::exists(p); });
      },
      10s))
      << worker->output();
  EXPECT_LE(spans_of(limited).size(), 1u) << "the blocking tasks waited for the limited ones";
  for (int i = 0; i < 3; ++i) std::ofstream(dir_ / ("block-" + std::to_string(i))) << "go";
  ASSERT_TRUE(test::eventually([&] { return spans_of(limited).size() == 4; }, 20s)) << worker->output();
  EXPECT_EQ(max_overlap(spans_of(limited)), 1);
}

// Two loops of one slot each, a type limited to one at a time, two of its tasks: one loop runs
// one, the other parks the other and, its queue empty, waits for work. The running task's permit
// comes back from the first loop's task, and the parked one starts then, not at the other loop's
// next wait timeout (30 s).
TEST_F(FlowControlTest, APermitGivenBackByOneLoopStartsATaskParkedByAnother) {
  auto worker = start_worker(
      "loops",
      {{"WORKER_CONCURRENCY", "2"}, {"WORKER_LOOPS", "2"}, {"WORKER_LIMITS", "fault:span concurrency=1"}});
  const auto limited = dir_ / "limited";
  enqueue_n("fault:span", span_payload(limited, 500), 2);
  ASSERT_TRUE(test::eventually([&] { return spans_of(limited).size() == 2; }, 10s)) << worker->output();
  EXPECT_EQ(max_overlap(spans_of(limited)), 1);
  EXPECT_GT(worker->count_lines({"Task type throttled", "task_type=fault:span"}), 0)
      << "the second task was parked, not merely dequeued later\n"
      << worker->output();
}

}  // namespace
}  // namespace wk::faults
