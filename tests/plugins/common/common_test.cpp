// Unit-level tests of plugins/common: no host, no Redis, no PostgreSQL.
#include <signal.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>

#include "autodevs/chat.hpp"
#include "autodevs/config_values.hpp"
#include "autodevs/git.hpp"
#include "autodevs/paths.hpp"
#include "autodevs/payload.hpp"
#include "autodevs/subprocess.hpp"
#include "autodevs/text.hpp"
#include "support/test_env.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using autodevs::SubprocessOptions;

namespace {

// A process is gone when it no longer exists or is a zombie waiting for init to reap it.
bool process_is_gone(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  std::string content((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto close_paren = content.rfind(')');
  return close_paren != std::string::npos && close_paren + 2 < content.size() &&
         content[close_paren + 2] == 'Z';
}

fs::path make_temp_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("wk_pipeline_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

}  // namespace

TEST(Subprocess, CapturesStdoutStderrAndExitCode) {
  SubprocessOptions o;
  o.argv = {"sh", "-c", "echo out; echo err >&2; exit 3"};
  auto r = autodevs::run_subprocess(o);
  EXPECT_TRUE(r.exited_normally);
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.stdout_text, "out\n");
  EXPECT_EQ(r.stderr_text, "err\n");
  EXPECT_FALSE(r.succeeded());
}

TEST(Subprocess, FeedsStdinAndHonoursCwdAndEnv) {
  const fs::path dir = make_temp_dir("cwd");
  SubprocessOptions o;
  o.argv = {"sh", "-c", "pwd; printf '%s\\n' \"$WK_PIPELINE_VAR\"; cat"};
  o.cwd = dir;
  o.env_additions = {{"WK_PIPELINE_VAR", "value with spaces"}};
  o.stdin_data = "from stdin";
  auto r = autodevs::run_subprocess(o);
  ASSERT_TRUE(r.succeeded()) << r.describe() << r.stderr_text;
  EXPECT_EQ(r.stdout_text, fs::canonical(dir).string() + "\nvalue with spaces\nfrom stdin");
  fs::remove_all(dir);
}

TEST(Subprocess, BoundsCapturedOutput) {
  SubprocessOptions o;
  o.argv = {"head", "-c", "300000", "/dev/zero"};
  o.max_output_bytes = 1000;
  auto r = autodevs::run_subprocess(o);
  ASSERT_TRUE(r.succeeded()) << r.describe();
  EXPECT_EQ(r.stdout_text.size(), 1000u);
  EXPECT_TRUE(r.stdout_truncated);
}

TEST(Subprocess, ChildClosingStdinEarlyDoesNotKillTheHost) {
  SubprocessOptions o;
  o.argv = {"true"};
  o.stdin_data.assign(8 << 20, 'x');  // far more than a pipe buffer
  auto r = autodevs::run_subprocess(o);
  EXPECT_TRUE(r.succeeded()) << r.describe();
}

TEST(Subprocess, MissingProgramIsASpawnError) {
  SubprocessOptions o;
  o.argv = {"/nonexistent/wk-no-such-program"};
  EXPECT_THROW(autodevs::run_subprocess(o), autodevs::SpawnError);
}

TEST(Subprocess, ResourceExhaustionIsATransientSpawnError) {
  for (int err : {EAGAIN, ENOMEM, EMFILE, ENFILE})
    EXPECT_TRUE(autodevs::is_transient_spawn_errno(err)) << err;
  for (int err : {0, ENOENT, EACCES, ENOEXEC, ENOTDIR, E2BIG})
    EXPECT_FALSE(autodevs::is_transient_spawn_errno(err)) << err;
  try {
    SubprocessOptions o;
    o.argv = {"/nonexistent/wk-no-such-program"};
    autodevs::run_subprocess(o);
    ADD_FAILURE() << "no SpawnError";
  } catch (const autodevs::SpawnError& e) {
    EXPECT_EQ(e.error_code(), ENOENT);
    EXPECT_FALSE(e.transient());
  }
  // Out of descriptors, for real, in a forked child: its pipes cannot be made.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const rlimit limit{3, 3};  // stdin/stdout/stderr only
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) ::_exit(10);
    for (int fd = 3; fd < 1024; ++fd) ::close(fd);
    try {
      SubprocessOptions o;
      o.argv = {"true"};
      autodevs::run_subprocess(o);
      ::_exit(11);
    } catch (const autodevs::SpawnError& e) {
      ::_exit(e.transient() && e.error_code() == EMFILE ? 0 : 12);
    } catch (...) {
      ::_exit(13);
    }
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(Subprocess, TimeoutKillsTheWholeGroupEvenWhenItIgnoresSigterm) {
  SubprocessOptions o;
  // Both the shell and its background child ignore SIGTERM (ignored dispositions are
  // inherited), so only the SIGKILL after the grace can end them.
  o.argv = {"sh", "-c", "trap '' TERM; sleep 60 & echo $!; wait; wait; wait"};
  // Long enough for the shell to have set its trap even on a loaded machine: the test is about
  // the SIGKILL after the grace, not about speed.
  o.timeout = 2s;
  o.kill_grace = 300ms;
  const auto started = std::chrono::steady_clock::now();
  auto r = autodevs::run_subprocess(o);
  const auto took = std::chrono::steady_clock::now() - started;
  EXPECT_TRUE(r.timed_out);
  EXPECT_FALSE(r.succeeded());
  EXPECT_EQ(r.term_signal, SIGKILL);  // SIGTERM was ignored
  EXPECT_LT(took, 10s);
  const pid_t grandchild = static_cast<pid_t>(std::stol(r.stdout_text));
  ASSERT_GT(grandchild, 0);
  EXPECT_TRUE(wk::test::eventually([&] { return process_is_gone(grandchild); }, 5s))
      << "background child " << grandchild << " survived";
}

TEST(Subprocess, CancellationStopsTheChild) {
  std::atomic<int> polls{0};
  SubprocessOptions o;
  o.argv = {"sleep", "60"};
  o.poll_interval = 20ms;
  o.cancel_requested = [&] { return ++polls >= 3; };
  auto r = autodevs::run_subprocess(o);
  EXPECT_TRUE(r.cancelled);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.term_signal, SIGTERM);
  EXPECT_LT(r.elapsed, 10s);
}

TEST(Subprocess, LeftoverBackgroundChildrenAreKilledWhenTheLeaderExits) {
  SubprocessOptions o;
  o.argv = {"sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"};
  auto r = autodevs::run_subprocess(o);
  ASSERT_TRUE(r.succeeded()) << r.describe();
  const pid_t straggler = static_cast<pid_t>(std::stol(r.stdout_text));
  EXPECT_TRUE(wk::test::eventually([&] { return process_is_gone(straggler); }, 5s));
}

TEST(WordSplitting, SplitsLikeAShellWithoutExpansion) {
  using autodevs::split_command_words;
  using V = std::vector<std::string>;
  EXPECT_EQ(split_command_words("claude -p --model x"), (V{"claude", "-p", "--model", "x"}));
  EXPECT_EQ(split_command_words("  a\t b  "), (V{"a", "b"}));
  EXPECT_EQ(split_command_words("agent 'two words' \"and \\\"three\\\"\""),
            (V{"agent", "two words", "and \"three\""}));
  EXPECT_EQ(split_command_words("echo $HOME `id` ; rm"), (V{"echo", "$HOME", "`id`", ";", "rm"}));
  EXPECT_EQ(split_command_words("a\\ b c"), (V{"a b", "c"}));
  EXPECT_EQ(split_command_words("x'y'\"z\""), (V{"xyz"}));
  EXPECT_EQ(split_command_words("''"), (V{""}));
  EXPECT_EQ(split_command_words("'it''s'"), (V{"its"}));
  EXPECT_TRUE(split_command_words("   ").empty());
  EXPECT_THROW(split_command_words("'open"), autodevs::WordSplitError);
  EXPECT_THROW(split_command_words("\"open"), autodevs::WordSplitError);
  EXPECT_THROW(split_command_words("trailing\\"), autodevs::WordSplitError);
}

TEST(Planner, BulletAndNumberedLinesBecomeSteps) {
  const auto steps = autodevs::plan_steps_from_description("Add logging",
                                                           "Intro paragraph that is not a step.\n"
                                                           "- first bullet\n"
                                                           "  continued on the next line\n"
                                                           "* second bullet\n"
                                                           "1. numbered dot\n"
                                                           "2) numbered paren\n"
                                                           "```\n- not a step, code\n```\n"
                                                           "-not a bullet without space\n");
  ASSERT_EQ(steps.size(), 4u);
  EXPECT_EQ(steps[0].title, "first bullet");
  EXPECT_EQ(steps[0].instructions, "first bullet\ncontinued on the next line");
  EXPECT_EQ(steps[1].instructions, "second bullet");
  EXPECT_EQ(steps[2].instructions, "numbered dot");
  EXPECT_EQ(steps[3].instructions, "numbered paren");
}

TEST(Planner, NoListMeansOneStep) {
  const auto steps =
      autodevs::plan_steps_from_description("Fix the bug", "The parser crashes on empty input.");
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0].title, "Fix the bug");
  EXPECT_EQ(steps[0].instructions, "Fix the bug\n\nThe parser crashes on empty input.");
  const auto empty = autodevs::plan_steps_from_description("", "");
  ASSERT_EQ(empty.size(), 1u);
  EXPECT_EQ(empty[0].title, "Task");
}

TEST(Planner, LongTitlesAreCutOnACharacterBoundary) {
  const std::string long_line(200, 'a');
  const std::string title = autodevs::summarize_title(long_line + "\nsecond line", 50);
  EXPECT_EQ(title, std::string(50, 'a') + "...");
  const std::string utf8 = std::string(49, 'b') + "\xC3\xA9" + "tail";  // é straddles the cut
  EXPECT_EQ(autodevs::summarize_title(utf8, 50), std::string(49, 'b') + "...");
}

TEST(DiffExtraction, FencedRawAndAbsent) {
  const std::string fenced =
      "Here is the change:\n```diff\ndiff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n```\nDone.";
  auto d = autodevs::extract_unified_diff(fenced);
  ASSERT_TRUE(d);
  EXPECT_EQ(*d, "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n");

  const std::string raw = "Sure.\n--- a/f.txt\n+++ b/f.txt\n@@ -0,0 +1 @@\n+hello";
  d = autodevs::extract_unified_diff(raw);
  ASSERT_TRUE(d);
  EXPECT_EQ(*d, "--- a/f.txt\n+++ b/f.txt\n@@ -0,0 +1 @@\n+hello\n");

  const std::string python_first =
      "```python\nprint(1)\n```\n```\n--- a/y\n+++ b/y\n@@ -1 +1 @@\n-1\n+2\n```";
  d = autodevs::extract_unified_diff(python_first);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->rfind("--- a/y", 0), 0u);

  EXPECT_FALSE(autodevs::extract_unified_diff("I could not find anything to change."));
}

TEST(Paths, EscapingSymlinksAreFoundInsideOnesAndFilesAreNot) {
  const fs::path root = make_temp_dir("links") / "root";
  fs::create_directories(root / "sub");
  std::ofstream(root / "file.txt") << "x";
  fs::create_symlink("../file.txt", root / "sub" / "in");
  fs::create_symlink("sub/in", root / "chain-in");  // a link to a link that stays inside
  fs::create_symlink("/etc", root / "abs-out");
  fs::create_symlink("..", root / "sub" / "up");  // root itself: inside
  fs::create_symlink("../..", root / "sub" / "out");
  fs::create_symlink("loop-b", root / "loop-a");
  fs::create_symlink("loop-a", root / "loop-b");
  fs::create_symlink("missing/deeper", root / "dangling-in");

  EXPECT_FALSE(autodevs::find_escaping_symlink(
      root, {"file.txt", "sub/in", "chain-in", "sub/up", "dangling-in", "not-there"}));
  EXPECT_EQ(autodevs::find_escaping_symlink(root, {"file.txt", "abs-out"}), "abs-out -> /etc");
  EXPECT_EQ(autodevs::find_escaping_symlink(root, {"sub/out"}), "sub/out -> ../..");
  EXPECT_EQ(autodevs::find_escaping_symlink(root, {"loop-a"}), "loop-a -> loop-b");
  fs::remove_all(root.parent_path());
}

TEST(CommitTrailer, FindsTheStepTrailer) {
  const std::string msg = "AutoDevs step 2: Do it\n\nbody\n\nAutoDevs-Step: abc/2\n";
  EXPECT_EQ(autodevs::find_commit_trailer(msg, "AutoDevs-Step"), "abc/2");
  EXPECT_FALSE(autodevs::find_commit_trailer("no trailer here", "AutoDevs-Step"));
}

TEST(Payload, UuidValidationNamesTheField) {
  EXPECT_TRUE(autodevs::is_uuid("123e4567-e89b-12d3-a456-426614174000"));
  EXPECT_FALSE(autodevs::is_uuid("123e4567e89b12d3a456426614174000"));
  EXPECT_FALSE(autodevs::is_uuid("123e4567-e89b-12d3-a456-42661417400g"));
  EXPECT_EQ(autodevs::normalize_uuid("123E4567-E89B-12D3-A456-426614174000", "task_id"),
            "123e4567-e89b-12d3-a456-426614174000");
  try {
    autodevs::required_uuid(autodevs::parse_payload_object(R"({"task_id": "nope"})"), "task_id");
    FAIL() << "expected PayloadError";
  } catch (const autodevs::PayloadError& e) {
    EXPECT_EQ(e.field(), "task_id");
    EXPECT_NE(std::string(e.what()).find("task_id"), std::string::npos);
  }
}

TEST(Payload, MalformedPayloadsAreRejectedWithTheField) {
  auto field_of = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const autodevs::PayloadError& e) {
      return e.field();
    }
    return "<no error>";
  };
  EXPECT_EQ(field_of([] { autodevs::parse_payload_object("not json"); }), "payload");
  EXPECT_EQ(field_of([] { autodevs::parse_payload_object("[1]"); }), "payload");
  const auto obj =
      autodevs::parse_payload_object(R"({"step": "1", "n": 0, "big": 99999999999, "b": "x", "s": 5})");
  EXPECT_EQ(field_of([&] { autodevs::required_uuid(obj, "task_id"); }), "task_id");
  EXPECT_EQ(field_of([&] { autodevs::required_positive_integer(obj, "step", 1000); }), "step");
  EXPECT_EQ(field_of([&] { autodevs::required_positive_integer(obj, "n", 1000); }), "n");
  EXPECT_EQ(field_of([&] { autodevs::required_positive_integer(obj, "big", 1000); }), "big");
  EXPECT_EQ(field_of([&] { autodevs::optional_bool(obj, "b"); }), "b");
  EXPECT_EQ(field_of([&] { autodevs::optional_string(obj, "s"); }), "s");
  EXPECT_FALSE(autodevs::optional_string(obj, "absent"));
}

TEST(ConfigValues, DurationsSizesAndBools) {
  using namespace std::chrono;
  EXPECT_EQ(autodevs::parse_duration("X", "24h"), hours(24));
  EXPECT_EQ(autodevs::parse_duration("X", "1h30m"), minutes(90));
  EXPECT_EQ(autodevs::parse_duration("X", "250ms"), milliseconds(250));
  EXPECT_EQ(autodevs::parse_duration("X", "45"), seconds(45));
  EXPECT_THROW(autodevs::parse_duration("X", "soon"), autodevs::ConfigError);
  EXPECT_THROW(autodevs::parse_duration("X", "5d"), autodevs::ConfigError);
  EXPECT_EQ(autodevs::parse_byte_size("X", "104857600"), 104857600u);
  EXPECT_EQ(autodevs::parse_byte_size("X", "100M"), 100u << 20);
  EXPECT_EQ(autodevs::parse_byte_size("X", "2GiB"), 2ull << 30);
  EXPECT_THROW(autodevs::parse_byte_size("X", "-1"), autodevs::ConfigError);
  EXPECT_TRUE(autodevs::parse_bool("X", "TRUE"));
  EXPECT_FALSE(autodevs::parse_bool("X", "off"));
  EXPECT_THROW(autodevs::parse_bool("X", "maybe"), autodevs::ConfigError);
  try {
    autodevs::parse_duration("WORKTREE_CLEANUP_INTERVAL", "x");
  } catch (const autodevs::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("WORKTREE_CLEANUP_INTERVAL"), std::string::npos);
  }
}

TEST(Chat, StatusClassificationAndRetryAfter) {
  using autodevs::ChatError;
  autodevs::HttpResponse ok{200, R"({"choices":[{"message":{"role":"assistant","content":"hi"}}]})", {}};
  EXPECT_EQ(autodevs::chat_content_or_throw(ok), "hi");
  autodevs::HttpResponse limited{429, "slow down", std::chrono::seconds(7)};
  try {
    autodevs::chat_content_or_throw(limited);
    FAIL();
  } catch (const ChatError& e) {
    EXPECT_EQ(e.kind(), ChatError::Kind::Retry);
    EXPECT_EQ(e.retry_after(), std::chrono::seconds(7));
  }
  autodevs::HttpResponse server{503, "", {}};
  try {
    autodevs::chat_content_or_throw(server);
    FAIL();
  } catch (const ChatError& e) {
    EXPECT_EQ(e.kind(), ChatError::Kind::Retry);
  }
  autodevs::HttpResponse unauthorized{401, "bad key", {}};
  try {
    autodevs::chat_content_or_throw(unauthorized);
    FAIL();
  } catch (const ChatError& e) {
    EXPECT_EQ(e.kind(), ChatError::Kind::Permanent);
  }
  EXPECT_EQ(autodevs::chat_completions_url("http://h:1/v1/"), "http://h:1/v1/chat/completions");
}

// A proxy that echoes the refused bearer token (LiteLLM-style): the key must not reach the
// error text, which the worker logs and stores as the task's last_error.
TEST(Chat, ErrorTextsNeverContainTheApiKey) {
  httplib::Server server;
  server.Post("/v1/chat/completions", [](const httplib::Request& req, httplib::Response& res) {
    res.status = 401;
    res.set_content("invalid key: " + req.get_header_value("Authorization"), "text/plain");
  });
  const int port = server.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  std::thread thread([&server] { server.listen_after_bind(); });

  autodevs::ChatEndpoint endpoint;
  endpoint.base_url = "http://127.0.0.1:" + std::to_string(port) + "/v1";
  endpoint.model = "m";
  endpoint.api_key = "sk-test-1234567890-secret";
  endpoint.timeout = std::chrono::seconds(10);
  try {
    autodevs::chat_complete(endpoint, {{"user", "hi"}}, [] { return false; });
    ADD_FAILURE() << "expected a ChatError";
  } catch (const autodevs::ChatError& e) {
    EXPECT_EQ(e.kind(), autodevs::ChatError::Kind::Permanent);
    const std::string what = e.what();
    EXPECT_NE(what.find("HTTP 401"), std::string::npos) << what;
    EXPECT_EQ(what.find("sk-test-1234567890-secret"), std::string::npos) << what;
    EXPECT_NE(what.find("<redacted>"), std::string::npos) << what;
  }
  server.stop();
  thread.join();
}

TEST(Chat, PlannerRepliesAreValidated) {
  auto steps = autodevs::parse_planned_steps(
      "```json\n{\"steps\":[{\"title\":\"A\",\"instructions\":\"do a\"},\"do b\"]}\n```");
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_EQ(steps[0].title, "A");
  EXPECT_EQ(steps[1].instructions, "do b");
  EXPECT_THROW(autodevs::parse_planned_steps("not json"), autodevs::ChatError);
  EXPECT_THROW(autodevs::parse_planned_steps(R"({"steps":[]})"), autodevs::ChatError);
  EXPECT_THROW(autodevs::parse_planned_steps(R"({"steps":[{"title":"x"}]})"), autodevs::ChatError);
  EXPECT_THROW(autodevs::parse_planned_steps(R"({"steps":[{"instructions":7}]})"), autodevs::ChatError);
}

TEST(Git, RunsWithArgvAndParsesWorktrees) {
  const fs::path dir = make_temp_dir("git");
  autodevs::Git git;
  EXPECT_FALSE(git.is_repository(dir));
  git.run_checked(dir, {"init", "-q", "-b", "main"});
  git.run_checked(
      dir, {"-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "init"});
  EXPECT_TRUE(git.is_repository(dir));
  const auto head = git.resolve_commit(dir, "HEAD");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->size(), 40u);
  EXPECT_FALSE(git.resolve_commit(dir, "no-such-branch"));
  EXPECT_THROW(git.run_checked(dir, {"checkout", "--", "missing-file"}), autodevs::GitError);
  const auto list = autodevs::parse_worktree_list(git.run_checked(dir, {"worktree", "list", "--porcelain"}));
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(fs::canonical(list[0].path), fs::canonical(dir));
  EXPECT_EQ(list[0].branch, "refs/heads/main");
  EXPECT_FALSE(autodevs::is_safe_ref_name("--upload-pack=x"));
  EXPECT_TRUE(autodevs::is_safe_ref_name("origin/main"));
  fs::remove_all(dir);
}
