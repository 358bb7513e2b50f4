// The plugin loader, host API and dispatcher against real fixture plugins (tests/fixtures).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <sstream>

#include "log/log.hpp"
#include "plugins/plugins.hpp"
#include "queue/client.hpp"
#include "redis/redis.hpp"
#include "support/child_process.hpp"
#include "support/host_modes.hpp"
#include "support/test_env.hpp"

namespace wk::plugins {
namespace {
namespace fs = std::filesystem;

const fs::path kFixtures = WK_ABI_FIXTURE_DIR;
fs::path fixture(const std::string& name) { return kFixtures / (name + ".so"); }

using test::RecordingServices;

struct TaskRun {
  task::Task task;
  task::Cancellation cancellation;
  RecordingServices services;
  std::vector<task::EnqueueRequest> staged;
  task::Outcome outcome;

  TaskRun(std::string type, std::string payload) {
    task.id = task::new_uuid();
    task.type = std::move(type);
    task.queue = "default";
    task.payload = std::move(payload);
    task.max_retry = 25;
    task.started_at = task::Clock::now();
  }
  task::Outcome& through(task::Dispatcher& dispatcher) {
    task::Execution execution{task, cancellation, services, staged};
    outcome = dispatcher.dispatch(execution);
    return outcome;
  }
};

// Lines that contain every one of `needles` (field order is the logger's business).
size_t count_lines(const log::Logger& logger, std::initializer_list<std::string> needles) {
  const auto lines = logger.lines();
  return static_cast<size_t>(std::count_if(lines.begin(), lines.end(), [&](const std::string& l) {
    return std::all_of(needles.begin(), needles.end(),
                       [&](const std::string& n) { return l.find(n) != std::string::npos; });
  }));
}
size_t count_lines(const log::Logger& logger, const std::string& needle) {
  return count_lines(logger, {needle});
}

class HostTestBase {
 protected:
  log::Logger logger = log::Logger::in_memory(log::Level::debug, log::Format::logfmt);
  ConfigSnapshot config{{"GOOD_GREETING", "hi"}};
};

// Every test here runs twice: plugins in the worker's process, and in runner processes.
class PluginHostTest : public HostTestBase, public ::testing::TestWithParam<test::Isolation> {
 protected:
  std::unique_ptr<Host> make_host(HostOptions options = {}, task::Enqueuer* enqueuer = nullptr) {
    return test::make_plugin_host(GetParam(), logger, config, nullptr, enqueuer, std::move(options));
  }
  std::string refusal(const std::string& name) {
    auto host = make_host();
    auto refused = host->load_file(fixture(name));
    EXPECT_TRUE(refused.has_value()) << name << " should be refused";
    EXPECT_TRUE(host->plugins().empty());
    return refused ? refused->reason : "";
  }
};

INSTANTIATE_TEST_SUITE_P(Isolation, PluginHostTest,
                         ::testing::Values(test::Isolation::none, test::Isolation::process),
                         [](const auto& param_info) { return test::isolation_name(param_info.param); });

// What only the in-process host has: its staging of mapped images, check and exec.
class InProcessHostTest : public HostTestBase, public ::testing::Test {
 protected:
  std::unique_ptr<PluginHost> make_host(HostOptions options = {}) {
    return std::make_unique<PluginHost>(logger, config, nullptr, nullptr, options);
  }
};

TEST_P(PluginHostTest, AllFixturesInOneDirectoryGoodOnesLoadOneErrorPerBadOne) {
  auto host = make_host();
  const LoadReport report = host->load_directory(kFixtures);

  std::set<std::string> loaded;
  for (const auto& p : report.loaded) loaded.insert(p.plugin_id);
  EXPECT_EQ(loaded, (std::set<std::string>{"test.good", "test.throwing", "test.misbehaving",
                                           "test.older-minor", "test.newer-minor", "test.stale-ctx",
                                           "test.cancel-wait", "test.pg-user", "test.crashy"}));
  // HandlerOptions().timeout reaches the engine as the handler's bound on an attempt.
  EXPECT_EQ(host->attempt_timeout("good:echo"), std::chrono::milliseconds(60000));
  EXPECT_EQ(host->attempt_timeout("no:such-type"), std::chrono::milliseconds(0));
  std::set<std::string> refused;
  for (const auto& r : report.refused) refused.insert(r.file.filename().string());
  EXPECT_EQ(refused, (std::set<std::string>{"bad_magic.so", "bad_task_type.so", "init_failure.so",
                                            "needs_newer_host.so", "no_entry.so", "null_run.so",
                                            "tiny_entry.so", "wrong_major.so", "zz_duplicate_type.so"}));
  EXPECT_EQ(count_lines(logger, "msg=\"plugin refused\""), refused.size());
  EXPECT_EQ(count_lines(logger, "msg=\"plugin loaded\""), loaded.size());
  EXPECT_EQ(
      count_lines(logger, "plugin=test.good version=1.2.3 abi=1.1 task_types=good:echo,good:disposition"),
      1u);

  // The host keeps serving after all those refusals.
  TaskRun run("good:disposition", "succeeded");
  EXPECT_EQ(run.through(*host).disposition, task::Disposition::succeeded);
  EXPECT_TRUE(host->handles("older:pong"));
  EXPECT_FALSE(host->handles("bad:init"));
}

TEST_P(PluginHostTest, RefusesPluginNeedingNewerHostMinorNamingBothVersions) {
  EXPECT_NE(refusal("needs_newer_host").find("needs host ABI 1.5, this host is 1.1"), std::string::npos);
}

TEST_P(PluginHostTest, RefusesWrongMajorBadMagicTinyEntryNullRunBadType) {
  EXPECT_NE(refusal("wrong_major").find("ABI major 2"), std::string::npos);
  EXPECT_NE(refusal("bad_magic").find("bad magic"), std::string::npos);
  EXPECT_NE(refusal("tiny_entry").find("smaller than the ABI 1.0 entry"), std::string::npos);
  EXPECT_NE(refusal("null_run").find("has no run function"), std::string::npos);
  EXPECT_NE(refusal("bad_task_type").find("invalid task type \"has space\""), std::string::npos);
}

TEST_P(PluginHostTest, FileWithoutEntryIsRefusedWithoutRunningItsCode) {
  test::TempDir dir("wk-plugins-test");
  const fs::path marker = dir.path() / "constructor-ran";
  ::setenv("WK_FIXTURE_CTOR_MARKER", marker.c_str(), 1);
  const std::string reason = refusal("no_entry");
  ::unsetenv("WK_FIXTURE_CTOR_MARKER");
  EXPECT_NE(reason.find("no wk_plugin_entry_v1 symbol"), std::string::npos) << reason;
  EXPECT_FALSE(fs::exists(marker)) << "the library's static constructor ran";
}

TEST_P(PluginHostTest, InitFailureIsReportedAndThePluginRetired) {
  const std::string reason = refusal("init_failure");
  EXPECT_NE(reason.find("init failed"), std::string::npos) << reason;
  EXPECT_NE(reason.find("config.missing: FIXTURE_REQUIRED is not set"), std::string::npos) << reason;
}

TEST_P(PluginHostTest, DuplicateTaskTypeIsRefusedNamingBothPlugins) {
  auto host = make_host();
  ASSERT_FALSE(host->load_file(fixture("good")).has_value());
  auto refused = host->load_file(fixture("zz_duplicate_type"));
  ASSERT_TRUE(refused.has_value());
  EXPECT_NE(
      refused->reason.find("\"good:echo\" of plugin test.duplicate is already served by plugin test.good"),
      std::string::npos)
      << refused->reason;
  TaskRun run("good:echo", "{}");
  EXPECT_EQ(run.through(*host).disposition, task::Disposition::succeeded)
      << "the first plugin keeps the type";
}

TEST_P(PluginHostTest, OlderAndNewerMinorLayoutsLoadAndServe) {
  auto host = make_host();
  ASSERT_FALSE(host->load_file(fixture("older_minor")).has_value());
  ASSERT_FALSE(host->load_file(fixture("newer_minor")).has_value());
  EXPECT_EQ(host->task_types(), (std::vector<std::string>{"newer:a", "newer:b", "older:ping", "older:pong"}));
  TaskRun pong("older:pong", "");
  EXPECT_EQ(pong.through(*host).disposition, task::Disposition::succeeded);
  EXPECT_EQ(pong.services.result, "pong");
  TaskRun b("newer:b", "");
  EXPECT_EQ(b.through(*host).disposition, task::Disposition::succeeded);
}

TEST_P(PluginHostTest, GoodHandlerSeesHeadersConfigAttemptAndStagesAFollowUp) {
  auto host = make_host();
  ASSERT_FALSE(host->load_file(fixture("good")).has_value());
  TaskRun run("good:echo", R"({"n":1})");
  run.task.headers = {{"x", "42"}};
  run.task.retried = 2;
  ASSERT_EQ(run.through(*host).disposition, task::Disposition::succeeded) << run.outcome.error;
  ASSERT_EQ(run.staged.size(), 1u);
  const task::EnqueueRequest& follow_up = run.staged[0];
  EXPECT_EQ(follow_up.type, "good:disposition");
  EXPECT_EQ(follow_up.queue, "low");
  EXPECT_EQ(follow_up.payload, "succeeded");
  EXPECT_EQ(follow_up.task_id.size(), 36u) << "the host generates a UUID when the plugin gives none";
  EXPECT_EQ(run.services.result,
            R"(payload={"n":1} x=42 attempt=3 greeting=hi follow_up=)" + follow_up.task_id);
  // The host adds plugin and the task fields to the plugin's log lines.
  EXPECT_EQ(count_lines(logger, {"msg=\"echoed\"", " plugin=test.good", " task_id=" + run.task.id,
                                 " task_type=good:echo", " queue=default", " attempt=3", " bytes=7"}),
            1u)
      << ::testing::PrintToString(logger.lines());
}

TEST_P(PluginHostTest, DispositionsMapToOutcomes) {
  auto host = make_host();
  ASSERT_FALSE(host->load_file(fixture("good")).has_value());
  struct Case {
    std::string payload;
    task::Disposition disposition;
    std::string error;
    std::chrono::milliseconds after{0};
  };
  const std::vector<Case> cases = {
      {"succeeded", task::Disposition::succeeded, ""},
      {"retry", task::Disposition::retry, "flaky: try again"},
      {"fail", task::Disposition::fail_no_retry, "bad_input: no use retrying"},
      {"cancelled", task::Disposition::cancelled, "cancelled: stopped"},
      {"retry_after:1234", task::Disposition::retry_after, "retry_after: later",
       std::chrono::milliseconds(1234)},
      {"retry_after:-5", task::Disposition::retry_after, "retry_after: later", std::chrono::milliseconds(0)},
      {"retry_after:999999999999", task::Disposition::retry_after, "retry_after: later",
       std::chrono::hours(24)},
  };
  for (const Case& c : cases) {
    TaskRun run("good:disposition", c.payload);
    const task::Outcome& outcome = run.through(*host);
    EXPECT_EQ(outcome.disposition, c.disposition) << c.payload;
    EXPECT_EQ(outcome.error, c.error) << c.payload;
    EXPECT_EQ(outcome.retry_after, c.after) << c.payload;
    if (c.disposition != task::Disposition::succeeded) {
      EXPECT_TRUE(run.staged.empty());
    }
  }
  TaskRun unknown("no:such-type", "");
  EXPECT_EQ(unknown.through(*host).disposition, task::Disposition::requeue);  // the engine's policy decides
  EXPECT_NE(unknown.outcome.error.find("no plugin on this worker serves task type \"no:such-type\""),
            std::string::npos);
}

TEST_P(PluginHostTest, FollowUpsWithDurationsThatWouldOverflowTheClockAreRefused) {
  auto host = make_host();
  ASSERT_FALSE(host->load_file(fixture("good")).has_value());
  for (const std::string option : {"process_in", "timeout", "unique", "retention"}) {
    TaskRun run("good:disposition", "far:" + option);
    const task::Outcome& outcome = run.through(*host);
    EXPECT_EQ(outcome.disposition, task::Disposition::fail_no_retry) << option;
    EXPECT_NE(outcome.error.find("durations under 100 years"), std::string::npos)
        << option << ": " << outcome.error;
    EXPECT_TRUE(run.staged.empty()) << option;
  }
}

// A follow-up the queue would refuse (asynq's queue-name rule: no braces) is refused when the
// handler stages it, so the handler hears of it; at completion it would have blocked the
// task's success from being written.
TEST_P(PluginHostTest, FollowUpsTheQueueWouldRefuseAreRefusedWhenStaged) {
  redis::Pool unused_pool(redis::Settings{}, 1);  // validation never connects
  queue::Client client(unused_pool);
  auto host = make_host({}, &client);
  ASSERT_FALSE(host->load_file(fixture("good")).has_value());
  TaskRun bad("good:disposition", "queue:bad{name}");
  const task::Outcome& refused = bad.through(*host);
  EXPECT_EQ(refused.disposition, task::Disposition::fail_no_retry);
  EXPECT_NE(refused.error.find("queue name"), std::string::npos) << refused.error;
  EXPECT_TRUE(bad.staged.empty());
  TaskRun good("good:disposition", "queue:fine");
  EXPECT_EQ(good.through(*host).disposition, task::Disposition::succeeded) << good.outcome.error;
  ASSERT_EQ(good.staged.size(), 1u);
  EXPECT_EQ(good.staged[0].queue, "fine");
  host->shutdown();
}

TEST_P(PluginHostTest, ThrowingHandlersRetryAndTheHostSurvives) {
  auto host = make_host();
  ASSERT_FALSE(host->load_file(fixture("throwing")).has_value());
  TaskRun sdk("throw:sdk", "");
  EXPECT_EQ(sdk.through(*host).disposition, task::Disposition::retry);
  EXPECT_EQ(sdk.outcome.error, "unhandled_exception: boom");
  TaskRun raw("throw:raw", "");
  EXPECT_EQ(raw.through(*host).disposition, task::Disposition::retry);
  EXPECT_EQ(raw.outcome.error, "handler threw an exception past the ABI boundary");
  EXPECT_EQ(count_lines(logger, "plugin misbehaving"), 1u);
}

TEST_P(PluginHostTest, UnknownOrUnsetDispositionIsRetryAndReportedAsMisbehaviour) {
  auto host = make_host();
  ASSERT_FALSE(host->load_file(fixture("misbehaving_disposition")).has_value());
  TaskRun odd("odd:42", "");
  EXPECT_EQ(odd.through(*host).disposition, task::Disposition::retry);
  EXPECT_EQ(odd.outcome.error, "handler returned an invalid disposition 42");
  TaskRun unset("odd:unset", "");
  EXPECT_EQ(unset.through(*host).disposition, task::Disposition::retry);
  EXPECT_EQ(count_lines(logger, {"msg=\"plugin misbehaving\"", "plugin=test.misbehaving", "task_type=odd:"}),
            2u);
}

TEST_P(PluginHostTest, HostCallsWithAStaleCtxGetWrongCtxNotACrash) {
  auto host = make_host();
  ASSERT_FALSE(host->load_file(fixture("stale_ctx")).has_value());
  TaskRun keep("stale:keep", "");
  ASSERT_EQ(keep.through(*host).disposition, task::Disposition::succeeded);
  TaskRun probe("stale:probe", "");
  ASSERT_EQ(probe.through(*host).disposition, task::Disposition::succeeded);
  EXPECT_EQ(probe.services.result,
            "is_cancelled=-8 config_get=-8 result_write=-8 heartbeat=-8 remaining=0 forged=-8 null=-8");
  EXPECT_FALSE(keep.services.result.has_value()) << "a stale result_write must not reach the old task";
  EXPECT_EQ(count_lines(logger, "from a stale ctx"), 0u);
  EXPECT_GE(count_lines(logger, {"msg=\"plugin misbehaving\"", "plugin=test.stale-ctx", "expired handle"}),
            5u);
}

TEST_P(PluginHostTest, HandlerObservesCancellationThroughWaitCancelledAndOnCancel) {
  auto host = make_host();
  ASSERT_FALSE(host->load_file(fixture("cancel_wait")).has_value());
  TaskRun run("cancel:wait", "");
  auto done = std::async(std::launch::async, [&] { return run.through(*host); });
  ASSERT_TRUE(test::eventually([&] { return run.services.heartbeats.load() > 0; }));
  run.cancellation.cancel(task::CancelReason::shutdown);
  ASSERT_EQ(done.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  const task::Outcome outcome = done.get();
  EXPECT_EQ(outcome.disposition, task::Disposition::cancelled);
  EXPECT_EQ(outcome.error, "cancelled: reason=1 on_cancel=1");
}

TEST_P(PluginHostTest, HeartbeatProgressReachesTheTaskServices) {
  auto host = make_host();
  ASSERT_FALSE(host->load_file(fixture("cancel_wait")).has_value());
  TaskRun run("cancel:wait", "");
  auto done = std::async(std::launch::async, [&] { return run.through(*host); });
  ASSERT_TRUE(test::eventually([&] { return run.services.heartbeats.load() > 0; }));
  {
    std::lock_guard lock(run.services.mu);
    EXPECT_EQ(run.services.progress.done, 1u);
    EXPECT_EQ(run.services.progress.total, 2u);
    EXPECT_EQ(run.services.progress.note, "waiting for cancellation");
  }
  run.cancellation.cancel(task::CancelReason::shutdown);
  ASSERT_EQ(done.wait_for(std::chrono::seconds(10)), std::future_status::ready);
}

TEST_P(PluginHostTest, RefusesFilesAndDirectoriesWritableByOthers) {
  test::TempDir dir("wk-plugins-test");
  fs::copy_file(fixture("good"), dir.path() / "good.so");
  fs::permissions(dir.path() / "good.so", fs::perms::others_write, fs::perm_options::add);
  {
    auto host = make_host();
    auto refused = host->load_file(dir.path() / "good.so");
    ASSERT_TRUE(refused.has_value());
    EXPECT_NE(refused->reason.find("writable by group or others"), std::string::npos) << refused->reason;
  }
  fs::permissions(dir.path() / "good.so", fs::perms::others_write, fs::perm_options::remove);
  fs::permissions(dir.path(), fs::perms::group_write, fs::perm_options::add);
  auto host = make_host();
  EXPECT_THROW(host->load_directory(dir.path()), std::runtime_error);
  auto refused = host->load_file(dir.path() / "good.so");
  ASSERT_TRUE(refused.has_value());
  EXPECT_NE(refused->reason.find("directory writable by group or others"), std::string::npos)
      << refused->reason;
}

TEST_F(InProcessHostTest, LoadsAPrivateCopyNamedByHashFromAPrivateStagingDir) {
  test::TempDir base("wk-plugins-test");
  HostOptions options;
  options.staging_dir = base.path();
  {
    auto host = make_host(options);
    ASSERT_FALSE(host->load_file(fixture("good")).has_value());
    const PluginInfo info = host->plugins().at(0);
    EXPECT_EQ(info.sha256.size(), 64u);

    std::vector<fs::path> staging_dirs(fs::directory_iterator(base.path()), fs::directory_iterator());
    ASSERT_EQ(staging_dirs.size(), 1u);
    EXPECT_EQ((fs::status(staging_dirs[0]).permissions() & fs::perms::all), fs::perms::owner_all);
    // The mapped image is the staged copy (already unlinked), not the file in the plugin dir.
    std::ifstream maps("/proc/self/maps");
    std::stringstream text;
    text << maps.rdbuf();
    const std::string staged = (staging_dirs[0] / ("good@" + info.sha256 + ".so")).string();
    EXPECT_NE(text.str().find(staged + " (deleted)"), std::string::npos) << "no mapping of " << staged;
  }
  EXPECT_TRUE(fs::is_empty(base.path())) << "the staging dir is removed with the host";
}

TEST_F(InProcessHostTest, CheckFilesReportsWithoutServing) {
  std::ostringstream out;
  const int code = print_file_checks(
      {fixture("good"), fixture("needs_newer_host"), fixture("zz_duplicate_type")}, out, logger);
  EXPECT_EQ(code, 1);
  const std::string text = out.str();
  EXPECT_NE(text.find(fixture("good").string() + ": OK"), std::string::npos) << text;
  EXPECT_NE(text.find("plugin test.good 1.2.3 (ABI 1.1, needs host 1.0)"), std::string::npos) << text;
  EXPECT_NE(text.find("handler good:echo  echo with result and follow-up"), std::string::npos) << text;
  EXPECT_NE(text.find("REFUSED: needs host ABI 1.5, this host is 1.1"), std::string::npos) << text;
  EXPECT_NE(text.find("REFUSED: task type \"good:echo\" is also declared by"), std::string::npos) << text;
  EXPECT_EQ(count_lines(logger, "good plugin initialised"), 0u) << "check must not run init";
}

TEST_F(InProcessHostTest, ExecLocalRunsOneTaskAndPrintsTheOutcome) {
  test::TempDir dir("wk-plugins-test");
  fs::copy_file(fixture("good"), dir.path() / "good.so");
  LocalRun run;
  run.plugins_dir = dir.path();
  run.type = "good:echo";
  run.payload = "{}";
  std::ostringstream out;
  EXPECT_EQ(exec_local(run, out, logger, config, nullptr), 0) << out.str();
  EXPECT_NE(out.str().find("disposition: succeeded\nresult: payload={} x=- attempt=1 greeting=hi"),
            std::string::npos)
      << out.str();
  EXPECT_NE(out.str().find("staged: type=good:disposition queue=low"), std::string::npos) << out.str();

  run.type = "good:disposition";
  run.payload = "fail";
  std::ostringstream failed;
  EXPECT_EQ(exec_local(run, failed, logger, config, nullptr), 1);
  EXPECT_NE(failed.str().find("disposition: fail_no_retry\nerror: bad_input: no use retrying"),
            std::string::npos);

  run.type = "nobody:serves";
  std::ostringstream missing;
  EXPECT_EQ(exec_local(run, missing, logger, config, nullptr), 2);
  EXPECT_NE(missing.str().find("no loaded plugin serves task type \"nobody:serves\""), std::string::npos);
}

TEST_F(InProcessHostTest, ExecLocalPrintsTheLastProgress) {
  test::TempDir dir("wk-plugins-test");
  fs::copy_file(fixture("cancel_wait"), dir.path() / "cancel_wait.so");
  LocalRun run;
  run.plugins_dir = dir.path();
  run.type = "cancel:wait";
  run.timeout = std::chrono::milliseconds(300);  // the deadline cancels the wait
  std::ostringstream out;
  EXPECT_EQ(exec_local(run, out, logger, config, nullptr), 1) << out.str();
  EXPECT_NE(out.str().find("disposition: cancelled\n"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("\nprogress: 1/2 waiting for cancellation\n"), std::string::npos) << out.str();
}

}  // namespace
}  // namespace wk::plugins
