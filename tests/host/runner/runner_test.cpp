// Plugin runners (host/runner): a plugin that dies takes only its own tasks with it, and they
// come back as "requeue" (no attempt counted) with what happened; the runner restarts.
// Driven through RunnerHost with the crashy fixture (tests/fixtures/crashy.c) beside the
// well-behaved good fixture.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <future>

#include "log/log.hpp"
#include "support/host_modes.hpp"
#include "support/test_env.hpp"

namespace wk::runner {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

fs::path fixture(const std::string& name) { return fs::path(WK_ABI_FIXTURE_DIR) / (name + ".so"); }

// One task dispatched on a thread of its own; the test awaits its start and its outcome.
struct AsyncTask {
  task::Task task;
  task::Cancellation cancellation;
  test::RecordingServices services;
  std::vector<task::EnqueueRequest> staged;
  std::future<task::Outcome> outcome;

  AsyncTask(plugins::Host& host, std::string type, std::string payload, std::string id = task::new_uuid()) {
    task.id = std::move(id);
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

// A plugin's printf and fprintf(stderr) reach the log in the worker's format, one line each, with
// the plugin file and the runner's pid; stdout at INFO, stderr at WARN.
TEST_F(RunnerTest, WhatARunnerWritesToStdoutAndStderrIsLoggedInTheWorkersFormat) {
  start();
  const pid_t pid = host->runner_pid("test.crashy");
  AsyncTask printing(*host, "crash:print", "hello \"plugin\"");
  EXPECT_EQ(printing.get().disposition, task::Disposition::succeeded);
  const std::string where = "file=crashy.so runner_pid=" + std::to_string(pid);
  EXPECT_TRUE(test::eventually(
      [&] {
        return count_lines(logger, {R"(level=INFO msg="hello \"plugin\" on stdout" stream=stdout)", where}) ==
                   1 &&
               count_lines(logger, {R"(level=WARN msg="hello \"plugin\" on stderr" stream=stderr)", where}) ==
                   1;
      },
      10s))
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

// A runner runs the tasks of a type that takes microseconds on the thread that read them. One of
// them that blocks, or that calls the worker, hands the reading to another thread: the other
// tasks, the calls' replies and the liveness checks go on meanwhile, and the runner is not
// taken for dead.
TEST_F(RunnerTest, AFastTypesTaskThatBlocksHoldsOnlyItself) {
  RunnerOptions options;
  options.liveness_interval = 100ms;
  options.liveness_timeout = 1s;
  options.inline_max = std::chrono::microseconds(std::chrono::seconds(1));  // crash:fast goes inline
  start(options);
  const pid_t pid = host->runner_pid("test.crashy");
  auto run_fast = [&](const std::string& payload) {
    AsyncTask fast(*host, "crash:fast", payload);
    EXPECT_EQ(fast.get().disposition, task::Disposition::succeeded) << payload;
  };
  for (int i = 0; i < 10; ++i) run_fast("");  // measured: from now on they run inline
  run_fast("call");                           // a call to the worker from an inline task
  const std::string release = (dir / "release").string();
  AsyncTask blocked(*host, "crash:fast", "block:" + release);
  // Past two liveness timeouts, tasks keep coming back while the blocked one holds its thread.
  const auto until = std::chrono::steady_clock::now() + 2 * options.liveness_timeout;
  int ran = 0;
  while (std::chrono::steady_clock::now() < until) {
    run_fast(ran % 10 == 0 ? "call" : "");
    ++ran;
  }
  EXPECT_GT(ran, 10);
  EXPECT_EQ(blocked.outcome.wait_for(0s), std::future_status::timeout);
  EXPECT_EQ(host->runner_pid("test.crashy"), pid) << "the runner was taken for dead";
  std::ofstream(release) << "go";
  EXPECT_EQ(blocked.get().disposition, task::Disposition::succeeded);
  EXPECT_EQ(host->runner_pid("test.crashy"), pid);
  EXPECT_EQ(count_lines(logger, {"plugin runner died"}), 0u) << ::testing::PrintToString(logger.lines());
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

// One poison task among seven good ones of the same plugin, all in flight together: the first
// crash makes all eight suspects; each then runs alone in a fresh runner, the good ones succeed,
// and only the poison task's own crashes count, up to the limit, where it is archived.
TEST_F(RunnerTest, APoisonTaskIsFoundAmongSuspectsAndArchivedAtTheCrashLimit) {
  start();
  std::vector<std::unique_ptr<AsyncTask>> first;
  const std::string gate = (dir / "all-in-flight").string();
  for (int i = 0; i < 7; ++i)
    first.push_back(std::make_unique<AsyncTask>(*host, "crash:maybe", "good:400:" + gate));
  first.push_back(std::make_unique<AsyncTask>(*host, "crash:maybe", "poison:0:" + gate));
  for (auto& t : first) ASSERT_TRUE(t->started());
  std::ofstream(gate) << "go";
  for (auto& t : first) {
    const task::Outcome outcome = t->get();
    EXPECT_EQ(outcome.disposition, task::Disposition::requeue) << outcome.error;
  }
  // The engine would dequeue them again: the same task ids.
  auto again = [&](const task::Task& original) {
    return std::make_unique<AsyncTask>(*host, original.type, original.payload, original.id);
  };
  std::vector<std::unique_ptr<AsyncTask>> second;
  for (auto& t : first) second.push_back(again(t->task));
  for (size_t i = 0; i < 7; ++i) {
    const task::Outcome outcome = second[i]->get();
    EXPECT_EQ(outcome.disposition, task::Disposition::succeeded) << outcome.error;
    EXPECT_EQ(second[i]->services.result, "ok");
  }
  const task::Outcome counted = second[7]->get();
  EXPECT_EQ(counted.disposition, task::Disposition::requeue);
  EXPECT_EQ(counted.error, "plugin test.crashy crashed (SIGSEGV) while running this task 1 time");
  auto third = again(first[7]->task);
  const task::Outcome archived = third->get();
  EXPECT_EQ(archived.disposition, task::Disposition::fail_no_retry);
  EXPECT_EQ(archived.error, "plugin test.crashy crashed (SIGSEGV) while running this task 2 times");
  EXPECT_EQ(count_lines(logger, {"poison task archived", "task_id=" + first[7]->task.id, "crashes=2"}), 1u);
  EXPECT_EQ(count_lines(logger, {"running a crash suspect alone"}), 9u);
}

// Hot swap with 8 tasks in flight on v1: v2 copied in and renamed takes new tasks within 2 s
// while v1 finishes its own; a broken v3 is refused and v2 keeps serving; a rescan request is
// honoured (SIGHUP in the worker).
TEST_F(RunnerTest, ANewVersionTakesOverWhileTheOldFinishesItsTasksAndABrokenOneIsRefused) {
  const fs::path plugins = dir / "plugins";
  fs::create_directory(plugins);
  fs::permissions(plugins, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                               fs::perms::others_read | fs::perms::others_exec);
  auto deploy = [&](int version) {  // the documented way: copy beside, then rename over
    const fs::path tmp = plugins / ".swap.so.tmp";
    fs::copy_file(fs::path(WK_SWAP_FIXTURE_DIR) / ("swap_v" + std::to_string(version) + ".so"), tmp,
                  fs::copy_options::overwrite_existing);
    fs::rename(tmp, plugins / "swap.so");
  };
  deploy(1);
  RunnerOptions options;
  options.executable = WK_WORKER_BINARY;
  host = std::make_unique<RunnerHost>(logger, plugins::ConfigSnapshot{}, nullptr, nullptr, options);
  ASSERT_EQ(host->load_directory(plugins).loaded.size(), 1u);
  host->watch(plugins);
  const pid_t v1_pid = host->runner_pid("test.swap");

  std::vector<std::unique_ptr<AsyncTask>> old_ones;
  for (int i = 0; i < 8; ++i) old_ones.push_back(std::make_unique<AsyncTask>(*host, "swap:work", "1500"));
  for (auto& t : old_ones) ASSERT_TRUE(t->started());

  deploy(2);
  auto version_of_a_new_task = [&] {
    AsyncTask probe(*host, "swap:work", "0");
    EXPECT_EQ(probe.get().disposition, task::Disposition::succeeded);
    return probe.services.result.value_or("");
  };
  EXPECT_TRUE(test::eventually([&] { return version_of_a_new_task() == "v2"; }, 2s))
      << "v2 did not take over";
  EXPECT_NE(host->runner_pid("test.swap"), v1_pid);
  for (auto& t : old_ones) {
    EXPECT_EQ(t->get().disposition, task::Disposition::succeeded);
    EXPECT_EQ(t->services.result, "v1") << "an old task finishes on the version it started on";
  }
  EXPECT_TRUE(test::eventually([&] {
    return count_lines(logger, {"plugin runner drained and stopped", "version=1"}) == 1;
  }));
  EXPECT_EQ(::kill(v1_pid, 0), -1) << "v1's runner exited";

  deploy(3);
  EXPECT_TRUE(test::eventually([&] {
    return count_lines(logger, {"plugin update refused", "serving_version=2", "this version cannot start"}) ==
           1;
  }));
  EXPECT_EQ(version_of_a_new_task(), "v2");

  host->request_rescan("SIGHUP");
  EXPECT_TRUE(test::eventually([&] {
    return count_lines(logger, {"rescanning plugins", "reason=SIGHUP"}) == 1;
  }));
  EXPECT_EQ(count_lines(logger, {"plugin update refused"}), 1u)
      << "an unchanged refused file is not tried again";
  EXPECT_EQ(version_of_a_new_task(), "v2");
}

// A removed file stops taking tasks; its runner exits once its tasks are done.
TEST_F(RunnerTest, ARemovedPluginFileStopsServingOnceDrained) {
  const fs::path plugins = dir / "plugins";
  fs::create_directory(plugins);
  fs::permissions(plugins, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                               fs::perms::others_read | fs::perms::others_exec);
  fs::copy_file(fs::path(WK_SWAP_FIXTURE_DIR) / "swap_v1.so", plugins / "swap.so");
  RunnerOptions options;
  options.executable = WK_WORKER_BINARY;
  host = std::make_unique<RunnerHost>(logger, plugins::ConfigSnapshot{}, nullptr, nullptr, options);
  ASSERT_EQ(host->load_directory(plugins).loaded.size(), 1u);
  host->watch(plugins);
  AsyncTask running(*host, "swap:work", "800");
  ASSERT_TRUE(running.started());
  fs::remove(plugins / "swap.so");
  EXPECT_TRUE(test::eventually([&] { return !host->handles("swap:work"); }, 2s));
  EXPECT_EQ(running.get().disposition, task::Disposition::succeeded);
  EXPECT_EQ(running.services.result, "v1");
  EXPECT_TRUE(
      test::eventually([&] { return count_lines(logger, {"plugin runner drained and stopped"}) == 1; }));
}

}  // namespace
}  // namespace wk::runner
