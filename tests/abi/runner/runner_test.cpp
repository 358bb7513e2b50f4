// Plugin runners (host/runner): a plugin that dies takes only its own tasks with it, and they
// come back as "requeue" (no attempt counted) with what happened; the runner restarts.
// Driven through RunnerHost with the crashy fixture (tests/abi/fixtures/crashy.c) beside the
// well-behaved good fixture.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <future>

#include "abi/host_modes.hpp"
#include "log/log.hpp"
#include "support/test_env.hpp"

namespace wk::runner {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

fs::path fixture(const std::string& name) { return fs::path(WK_ABI_FIXTURE_DIR) / (name + ".so"); }

class CountingServices final : public task::TaskServices {
 public:
  bool write_result(std::string_view data) override {
    std::lock_guard lock(mu);
    result = std::string(data);
    return true;
  }
  void heartbeat() override { ++heartbeats; }
  std::mutex mu;
  std::optional<std::string> result;
  std::atomic<int> heartbeats{0};
};

// One task dispatched on a thread of its own; the test awaits its start and its outcome.
struct AsyncTask {
  task::Task task;
  task::Cancellation cancellation;
  CountingServices services;
  std::vector<task::EnqueueRequest> staged;
  std::future<task::Outcome> outcome;

  AsyncTask(plugins::Host& host, std::string type, std::string payload) {
    task.id = task::new_uuid();
    task.type = std::move(type);
    task.queue = "default";
    task.payload = std::move(payload);
    task.started_at = task::Clock::now();
    task.deadline = task.started_at + std::chrono::minutes(1);
    outcome = std::async(std::launch::async, [this, &host] {
      task::Execution execution{task, cancellation, services, staged};
      return host.dispatch(execution);
    });
  }
  bool started() {
    return test::eventually([&] { return services.heartbeats.load() > 0; }, 20s);
  }
  task::Outcome get() {
    EXPECT_EQ(outcome.wait_for(30s), std::future_status::ready) << task.type;
    return outcome.get();
  }
};

size_t count_lines(const log::Logger& logger, std::initializer_list<std::string> needles) {
  const auto lines = logger.lines();
  return static_cast<size_t>(std::count_if(lines.begin(), lines.end(), [&](const std::string& l) {
    return std::all_of(needles.begin(), needles.end(),
                       [&](const auto& n) { return l.find(n) != std::string::npos; });
  }));
}

class RunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "wk-runner-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir = pattern;
  }
  void TearDown() override {
    host.reset();
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }
  void start(RunnerOptions options = {}) {
    options.executable = WK_WORKER_BINARY;
    options.restart_backoff_min = 50ms;
    options.host.shutdown_grace = 2s;
    host = std::make_unique<RunnerHost>(logger, plugins::ConfigSnapshot{}, nullptr, nullptr, options);
    ASSERT_FALSE(host->load_file(fixture("crashy")).has_value());
    ASSERT_FALSE(host->load_file(fixture("good")).has_value());
  }
  bool restarted(pid_t before) {
    return test::eventually(
        [&] {
          const pid_t now = host->runner_pid("test.crashy");
          return now != 0 && now != before;
        },
        20s);
  }
  // A crash with `type` while two crash:wait tasks of the same plugin and a good:echo task run:
  // all three crashy tasks come back as requeue with `reason`; the good one succeeds; the
  // runner restarts and serves again.
  void expect_contained(const std::string& type, const std::string& reason) {
    const pid_t before = host->runner_pid("test.crashy");
    ASSERT_NE(before, 0);
    const std::string release = (dir / ("release-" + type.substr(6))).string();
    AsyncTask waiting1(*host, "crash:wait", release), waiting2(*host, "crash:wait", release);
    ASSERT_TRUE(waiting1.started() && waiting2.started());
    AsyncTask crashing(*host, type, release);
    AsyncTask good(*host, "good:echo", "{}");
    for (AsyncTask* t : {&crashing, &waiting1, &waiting2}) {
      const task::Outcome outcome = t->get();
      EXPECT_EQ(outcome.disposition, task::Disposition::requeue) << t->task.type << ": " << outcome.error;
      EXPECT_NE(outcome.error.find("plugin test.crashy " + reason), std::string::npos) << outcome.error;
      EXPECT_NE(outcome.error.find("while running this task"), std::string::npos) << outcome.error;
    }
    EXPECT_EQ(good.get().disposition, task::Disposition::succeeded);
    EXPECT_EQ(count_lines(logger, {"level=ERROR", "plugin runner died", "plugin=test.crashy", reason,
                                   "tasks_in_flight=3", waiting1.task.id + ":crash:wait",
                                   crashing.task.id + ":" + type}),
              1u)
        << ::testing::PrintToString(logger.lines());
    ASSERT_TRUE(restarted(before));
    std::ofstream(release) << "go";
    AsyncTask after(*host, "crash:wait", release);
    EXPECT_EQ(after.get().disposition, task::Disposition::succeeded) << "the restarted runner serves";
  }

  log::Logger logger = log::Logger::in_memory(log::Level::info, log::Format::logfmt);
  fs::path dir;
  std::unique_ptr<RunnerHost> host;
};

TEST_F(RunnerTest, ASegfaultCostsOnlyThatPluginsTasksWithABacktraceAndARestart) {
  start();
  expect_contained("crash:segv", "crashed (SIGSEGV)");
  EXPECT_EQ(count_lines(logger, {"plugin runner died", "signal=SIGSEGV", "backtrace="}), 1u)
      << ::testing::PrintToString(logger.lines());
}

TEST_F(RunnerTest, AnAbortIsContained) {
  start();
  expect_contained("crash:abort", "crashed (SIGABRT)");
}

TEST_F(RunnerTest, AnExitIsContained) {
  start();
  expect_contained("crash:exit", "exited with status 3");
}

TEST_F(RunnerTest, ARunnerOverItsMemoryLimitIsKilled) {
  RunnerOptions options;
  options.memory_max_by_plugin["test.crashy"] = uint64_t{1} << 30;  // room for a sanitizer's shadow
  start(options);
  expect_contained("crash:alloc", "memory limit");
}

TEST_F(RunnerTest, ARunnerThatStopsAnsweringLivenessChecksIsKilled) {
  RunnerOptions options;
  options.liveness_interval = 100ms;
  options.liveness_timeout = 1s;
  start(options);
  expect_contained("crash:stall", "no answer to liveness checks");
}

TEST_F(RunnerTest, AHandlerDeafToCancellationHoldsOnlyItsTaskUntilShutdownKillsItsRunner) {
  start();
  AsyncTask hung(*host, "crash:hang", "");
  ASSERT_TRUE(hung.started());
  hung.cancellation.cancel(task::CancelReason::deadline);
  EXPECT_EQ(hung.outcome.wait_for(300ms), std::future_status::timeout) << "it ignores the cancellation";
  AsyncTask good(*host, "good:echo", "{}");
  EXPECT_EQ(good.get().disposition, task::Disposition::succeeded);
  host->shutdown();  // its runner is killed after the shutdown grace
  const task::Outcome outcome = hung.get();
  EXPECT_EQ(outcome.disposition, task::Disposition::requeue) << outcome.error;
}

TEST_F(RunnerTest, TasksWaitForARestartingRunnerInsteadOfFailing) {
  RunnerOptions options;
  options.restart_backoff_min = 300ms;
  options.executable = WK_WORKER_BINARY;
  options.host.shutdown_grace = 2s;
  host = std::make_unique<RunnerHost>(logger, plugins::ConfigSnapshot{}, nullptr, nullptr, options);
  ASSERT_FALSE(host->load_file(fixture("crashy")).has_value());
  const pid_t before = host->runner_pid("test.crashy");
  AsyncTask crashing(*host, "crash:segv", "");
  EXPECT_EQ(crashing.get().disposition, task::Disposition::requeue);
  const std::string release = (dir / "go").string();
  std::ofstream(release) << "go";
  AsyncTask next(*host, "crash:wait", release);  // dispatched while the runner restarts
  EXPECT_EQ(next.get().disposition, task::Disposition::succeeded) << "it waited for the new runner";
  EXPECT_NE(host->runner_pid("test.crashy"), before);
}

TEST_F(RunnerTest, ARefusedFileAndADuplicateTypeNeverRunInit) {
  start();
  auto refused = host->load_file(fixture("zz_duplicate_type"));
  ASSERT_TRUE(refused.has_value());
  EXPECT_NE(refused->reason.find("already served by plugin test.good"), std::string::npos) << refused->reason;
  EXPECT_EQ(count_lines(logger, {"msg=\"plugin loaded\"", "plugin=test.duplicate"}), 0u);
  EXPECT_EQ(count_lines(logger, {"msg=\"plugin refused\"", "zz_duplicate_type.so"}), 1u);
}

TEST_F(RunnerTest, APluginListedAsTrustedRunsInTheWorkersProcess) {
  RunnerOptions options;
  options.in_process = {"test.good"};
  start(options);
  EXPECT_EQ(host->runner_pid("test.good"), 0) << "no runner for a plugin served in process";
  EXPECT_NE(host->runner_pid("test.crashy"), 0);
  AsyncTask good(*host, "good:echo", "{}");
  EXPECT_EQ(good.get().disposition, task::Disposition::succeeded);
  EXPECT_EQ(host->plugins().size(), 2u);
}

}  // namespace
}  // namespace wk::runner
