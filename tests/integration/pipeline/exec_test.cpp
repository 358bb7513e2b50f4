// The shipped plugins run one task at a time through `worker exec` (no Redis), against the
// test PostgreSQL: planning, worktree create/remove/cleanup, ai:execute, and a full chain
// planning -> worktree -> every step -> completed with one commit per step.
#include <httplib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "pipeline_fixture.hpp"

namespace pipeline_test {
namespace {

constexpr const char* kBulleted =
    "Make the README friendlier.\n"
    "- Add a greeting section\n"
    "- Document the build\n"
    "1. Mention the licence\n";

std::string payload_for(const std::string& task_id) { return R"({"task_id":")" + task_id + R"("})"; }

// Commits on the task branch that are not on main.
std::vector<std::string> step_commits(PipelineTest& t, const fs::path& repo, const std::string& task_id,
                                      std::string (PipelineTest::*git)(const fs::path&,
                                                                       const std::vector<std::string>&)) {
  const std::string log = (t.*git)(repo, {"log", "--format=%H", "main..autodevs/" + task_id});
  std::vector<std::string> shas;
  std::size_t start = 0;
  while (start < log.size()) {
    const auto end = log.find('\n', start);
    shas.push_back(log.substr(start, end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return shas;
}

class PlanningExec : public PipelineTest {};
class WorktreeExec : public PipelineTest {};
class AiExec : public PipelineTest {
 public:
  using PipelineTest::git;
};
class PipelineChain : public PipelineTest {
 public:
  using PipelineTest::git;
};

TEST_F(PlanningExec, BulletsBecomeStepsAndWorktreeCreateIsStaged) {
  const fs::path repo = make_repo("planning-repo");
  const std::string id = new_uuid();
  insert_task(id, repo, "Friendlier README", kBulleted);

  const auto r = exec("planning:task", payload_for(id));
  ASSERT_EQ(r.line("disposition"), "succeeded") << r.out << r.err;
  const auto staged = r.lines("staged");
  ASSERT_EQ(staged.size(), 1u) << r.out;
  EXPECT_NE(staged[0].find("type=worktree:create"), std::string::npos);
  EXPECT_NE(staged[0].find("id=worktree-create:" + id), std::string::npos);

  const auto steps =
      db_.exec("SELECT step_no, title FROM autodevs_task_steps WHERE task_id = $1 ORDER BY step_no", {id});
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(steps[0][1], "Add a greeting section");
  EXPECT_EQ(steps[2][1], "Mention the licence");
  const auto task = db_.exec("SELECT status, planner FROM autodevs_tasks WHERE id = $1", {id});
  EXPECT_EQ(task[0][0], "planned");
  EXPECT_EQ(task[0][1], "deterministic");

  // A retry neither duplicates nor replaces the steps, and stages the follow-up again.
  const auto again = exec("planning:task", payload_for(id));
  ASSERT_EQ(again.line("disposition"), "succeeded") << again.out << again.err;
  EXPECT_EQ(again.lines("staged").size(), 1u);
  EXPECT_EQ(db_.scalar("SELECT count(*) FROM autodevs_task_steps WHERE task_id = $1", {id}), "3");
}

TEST_F(PlanningExec, MalformedPayloadsAreArchivedNamingTheField) {
  // `worker exec` itself refuses text that is not JSON (the unit tests cover that case in
  // the plugin's parser); JSON that is not an object reaches the handler.
  auto r = exec("planning:task", "[1, 2]");
  EXPECT_EQ(r.line("disposition"), "fail_no_retry") << r.out;
  EXPECT_NE(r.line("error").find("payload: must be a JSON object"), std::string::npos) << r.out;

  r = exec("planning:task", R"({"task_id": "not-a-uuid"})");
  EXPECT_EQ(r.line("disposition"), "fail_no_retry") << r.out;
  EXPECT_NE(r.line("error").find("task_id"), std::string::npos) << r.out;

  r = exec("planning:task", R"({})");
  EXPECT_EQ(r.line("disposition"), "fail_no_retry") << r.out;
  EXPECT_NE(r.line("error").find("task_id"), std::string::npos) << r.out;

  r = exec("planning:task", payload_for(new_uuid()));
  EXPECT_EQ(r.line("disposition"), "fail_no_retry") << r.out;
  EXPECT_NE(r.line("error").find("no task"), std::string::npos) << r.out;
}

TEST_F(WorktreeExec, CreatesRecordsAndStagesStepOneThenIsIdempotent) {
  const fs::path repo = make_repo("create-repo");
  const std::string id = new_uuid();
  insert_task(id, repo, "t", kBulleted);
  ASSERT_EQ(exec("planning:task", payload_for(id)).line("disposition"), "succeeded");

  const auto r = exec("worktree:create", payload_for(id));
  ASSERT_EQ(r.line("disposition"), "succeeded") << r.out << r.err;
  const fs::path expected = fs::canonical(base_) / "create-repo" / id;
  EXPECT_TRUE(fs::is_regular_file(expected / "README.md"));
  EXPECT_EQ(git(expected, {"symbolic-ref", "--short", "HEAD"}), "autodevs/" + id + "\n");
  EXPECT_EQ(db_.scalar("SELECT path FROM autodevs_worktrees WHERE task_id = $1 AND removed_at IS NULL", {id}),
            expected.string());
  ASSERT_EQ(r.lines("staged").size(), 1u) << r.out;
  EXPECT_NE(r.line("staged").find("id=ai-execute:" + id + ":1"), std::string::npos) << r.out;
  // Step 1 gets the same task timeout as the later steps: AI_TIMEOUT (60 s here) + 5 min.
  EXPECT_NE(r.line("staged").find(" timeout=360s "), std::string::npos) << r.out;
  // WORKTREE_ENABLE_LOGGING defaults to true: git commands are in the log.
  EXPECT_NE(r.err.find("worktree add"), std::string::npos) << r.err;
  // The probe for an existing branch answers "no" on a first creation: not a failure.
  EXPECT_EQ(r.err.find("git command failed"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("level=WARN"), std::string::npos) << r.err;

  const auto again = exec("worktree:create", payload_for(id));
  ASSERT_EQ(again.line("disposition"), "succeeded") << again.out << again.err;
  EXPECT_EQ(again.lines("staged").size(), 1u);
  EXPECT_EQ(git(repo, {"worktree", "list", "--porcelain"}).find("worktree " + expected.string() + "\n") !=
                std::string::npos,
            true);
}

// A repository whose directory name holds a newline: git's porcelain listing without -z
// splits the worktree path in two, so a retry did not recognise the existing worktree and
// deleted it.
TEST_F(WorktreeExec, ARepositoryNameWithANewlineIsRecognisedOnRetry) {
  const fs::path repo = make_repo("odd\nrepo");
  const std::string id = new_uuid();
  insert_task(id, repo, "t", "one step");
  const auto r = exec("worktree:create", payload_for(id));
  ASSERT_EQ(r.line("disposition"), "succeeded") << r.out << r.err;
  const fs::path worktree = fs::canonical(base_) / "odd\nrepo" / id;
  ASSERT_TRUE(fs::is_regular_file(worktree / "README.md"));
  std::ofstream(worktree / "work-in-progress.txt") << "keep me\n";

  const auto again = exec("worktree:create", payload_for(id));
  ASSERT_EQ(again.line("disposition"), "succeeded") << again.out << again.err;
  EXPECT_NE(again.err.find("worktree already exists"), std::string::npos) << again.err;
  EXPECT_TRUE(fs::exists(worktree / "work-in-progress.txt"));
}

TEST_F(WorktreeExec, RefusesAPathOverTheMaximumLength) {
  const fs::path repo = make_repo("long-repo");
  const std::string id = new_uuid();
  const auto r =
      exec("worktree:create", R"({"task_id":")" + id + R"(","repo_path":")" + repo.string() + R"("})",
           {{"WORKTREE_MAX_PATH_LENGTH", "40"}});
  EXPECT_EQ(r.line("disposition"), "fail_no_retry") << r.out << r.err;
  EXPECT_NE(r.line("error").find("WORKTREE_MAX_PATH_LENGTH"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(base_ / "long-repo" / id));
  EXPECT_EQ(git(repo, {"branch", "--list", "autodevs/*"}), "");
}

TEST_F(WorktreeExec, RefusesASymlinkThatEscapesTheBase) {
  const fs::path repo = make_repo("escape-repo");
  const fs::path outside = dir_ / "outside";
  fs::create_directories(outside);
  fs::create_directory_symlink(outside, base_ / "escape-repo");
  const std::string id = new_uuid();
  const auto r =
      exec("worktree:create", R"({"task_id":")" + id + R"(","repo_path":")" + repo.string() + R"("})");
  EXPECT_EQ(r.line("disposition"), "fail_no_retry") << r.out << r.err;
  EXPECT_NE(r.line("error").find("outside WORKTREE_BASE_DIR"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::is_empty(outside));
}

TEST_F(WorktreeExec, RetriesLaterWhenFreeSpaceIsBelowTheMinimum) {
  const fs::path repo = make_repo("space-repo");
  const std::string id = new_uuid();
  const auto r =
      exec("worktree:create", R"({"task_id":")" + id + R"(","repo_path":")" + repo.string() + R"("})",
           {{"WORKTREE_MIN_DISK_SPACE", "1000000000000000000"}});
  EXPECT_EQ(r.line("disposition"), "retry_after") << r.out << r.err;
  EXPECT_NE(r.line("error").find("WORKTREE_MIN_DISK_SPACE"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(base_ / "space-repo" / id));
}

TEST_F(WorktreeExec, ANonRepositoryIsAPermanentFailure) {
  const fs::path plain = dir_ / "plain-dir";
  fs::create_directories(plain);
  const auto r = exec("worktree:create",
                      R"({"task_id":")" + new_uuid() + R"(","repo_path":")" + plain.string() + R"("})");
  EXPECT_EQ(r.line("disposition"), "fail_no_retry") << r.out << r.err;
  EXPECT_NE(r.line("error").find("not a git repository"), std::string::npos) << r.out;
}

TEST_F(WorktreeExec, CleanupRemovesExactlyFinishedAndStaleWorktrees) {
  const fs::path repo = make_repo("cleanup-repo");
  const std::string finished = new_uuid();
  const std::string running = new_uuid();
  const std::string recent_finished = new_uuid();
  for (const auto& id : {finished, running, recent_finished}) {
    insert_task(id, repo, "t", "one step");
    const auto r = exec("worktree:create", payload_for(id));
    ASSERT_EQ(r.line("disposition"), "succeeded") << r.out << r.err;
  }
  db_.exec(
      "UPDATE autodevs_tasks SET status = 'completed', updated_at = now() - interval '2 hours' WHERE id = $1",
      {finished});
  db_.exec(
      "UPDATE autodevs_tasks SET status = 'in_progress', updated_at = now() - interval '2 hours' WHERE id = "
      "$1",
      {running});
  db_.exec("UPDATE autodevs_tasks SET status = 'completed', updated_at = now() WHERE id = $1",
           {recent_finished});
  const fs::path repo_dir = fs::canonical(base_) / "cleanup-repo";
  // A directory git does not know, old enough; and one that is too recent to touch.
  const fs::path stale_old = repo_dir / new_uuid();
  const fs::path stale_new = repo_dir / new_uuid();
  fs::create_directories(stale_old / "sub");
  fs::create_directories(stale_new);
  fs::last_write_time(stale_old, fs::file_time_type::clock::now() - std::chrono::hours(3));
  const fs::path not_ours = repo_dir / "keep-me";
  fs::create_directories(not_ours);
  fs::last_write_time(not_ours, fs::file_time_type::clock::now() - std::chrono::hours(3));

  const auto r = exec("worktree:cleanup", "{}", {{"WORKTREE_CLEANUP_INTERVAL", "1h"}});
  ASSERT_EQ(r.line("disposition"), "succeeded") << r.out << r.err;

  EXPECT_FALSE(fs::exists(repo_dir / finished));
  EXPECT_TRUE(fs::exists(repo_dir / running));
  EXPECT_TRUE(fs::exists(repo_dir / recent_finished));
  EXPECT_FALSE(fs::exists(stale_old));
  EXPECT_TRUE(fs::exists(stale_new));
  EXPECT_TRUE(fs::exists(not_ours));
  EXPECT_TRUE(
      db_.scalar("SELECT removed_at FROM autodevs_worktrees WHERE task_id = $1", {finished}).has_value());
  EXPECT_FALSE(
      db_.scalar("SELECT removed_at FROM autodevs_worktrees WHERE task_id = $1", {running}).has_value());
  // git forgot the removed worktree; the branch (the task's commits) is kept.
  const std::string listing = git(repo, {"worktree", "list", "--porcelain"});
  EXPECT_EQ(listing.find(finished), std::string::npos);
  EXPECT_NE(listing.find(running), std::string::npos);
  EXPECT_NE(git(repo, {"branch", "--list", "autodevs/" + finished}), "");

  // The next run is scheduled for the next slot, with the slot in its id.
  const auto slot =
      std::chrono::duration_cast<std::chrono::hours>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  bool scheduled = false;
  for (const auto& line : r.lines("enqueued")) {
    if (line.find("type=worktree:cleanup") != std::string::npos &&
        (line.find("id=worktree-cleanup:" + std::to_string(slot + 1)) != std::string::npos ||
         line.find("id=worktree-cleanup:" + std::to_string(slot + 2)) != std::string::npos)) {
      scheduled = true;
    }
  }
  EXPECT_TRUE(scheduled) << r.out;
}

TEST_F(WorktreeExec, RemoveDeletesTheWorktreeAndOptionallyTheBranch) {
  const fs::path repo = make_repo("remove-repo");
  const std::string id = new_uuid();
  insert_task(id, repo, "t", "one step");
  ASSERT_EQ(exec("worktree:create", payload_for(id)).line("disposition"), "succeeded");
  const auto r = exec("worktree:remove", R"({"task_id":")" + id + R"(","delete_branch":true})");
  ASSERT_EQ(r.line("disposition"), "succeeded") << r.out << r.err;
  EXPECT_FALSE(fs::exists(base_ / "remove-repo" / id));
  EXPECT_EQ(git(repo, {"branch", "--list", "autodevs/" + id}), "");
  EXPECT_TRUE(db_.scalar("SELECT removed_at FROM autodevs_worktrees WHERE task_id = $1", {id}).has_value());
  const auto bad = exec("worktree:remove", R"({"task_id":")" + id + R"(","delete_branch":"yes"})");
  EXPECT_EQ(bad.line("disposition"), "fail_no_retry");
  EXPECT_NE(bad.line("error").find("delete_branch"), std::string::npos) << bad.out;
}

// Two deliveries of the same task at once (an expired lease, a duplicate): the second must not
// touch the first one's half-made directory. The test's own connection plays the first
// delivery by holding the task's advisory lock. DB_POOL_SIZE=1: the handler's queries run on
// the lock's connection, so a pool of one does not deadlock.
TEST_F(WorktreeExec, CreateAndRemoveRetryWhileAnotherDeliveryHoldsTheTaskLock) {
  const fs::path repo = make_repo("lock-repo");
  const std::string id = new_uuid();
  insert_task(id, repo, "t", "one step");
  const std::vector<std::pair<std::string, std::string>> pool_of_one = {{"DB_POOL_SIZE", "1"}};
  const std::string lock_sql = "SELECT pg_advisory_lock(hashtext('worktree:' || $1))";
  const std::string unlock_sql = "SELECT pg_advisory_unlock(hashtext('worktree:' || $1))";

  // The "first delivery" is halfway: its directory exists, it holds the lock.
  const fs::path target = fs::canonical(base_) / "lock-repo" / id;
  fs::create_directories(target);
  std::ofstream(target / "half-made.txt") << "first delivery at work\n";
  db_.exec(lock_sql, {id});
  const auto busy = exec("worktree:create", payload_for(id), pool_of_one);
  EXPECT_EQ(busy.line("disposition"), "retry_after") << busy.out << busy.err;
  EXPECT_NE(busy.line("error").find("another delivery"), std::string::npos) << busy.out;
  EXPECT_TRUE(fs::exists(target / "half-made.txt"))
      << "the second delivery deleted the first one's directory";
  EXPECT_FALSE(db_.scalar("SELECT 1 FROM autodevs_worktrees WHERE task_id = $1", {id}).has_value());
  EXPECT_EQ(db_.scalar(unlock_sql, {id}), "t");

  // Released (the first delivery died): the next delivery cleans up and creates.
  fs::remove_all(target);
  const auto created = exec("worktree:create", payload_for(id), pool_of_one);
  ASSERT_EQ(created.line("disposition"), "succeeded") << created.out << created.err;
  ASSERT_TRUE(fs::is_regular_file(target / "README.md"));

  db_.exec(lock_sql, {id});
  const auto remove_busy = exec("worktree:remove", payload_for(id), pool_of_one);
  EXPECT_EQ(remove_busy.line("disposition"), "retry_after") << remove_busy.out << remove_busy.err;
  EXPECT_TRUE(fs::is_regular_file(target / "README.md"));
  EXPECT_EQ(db_.scalar(unlock_sql, {id}), "t");
  const auto removed = exec("worktree:remove", payload_for(id), pool_of_one);
  ASSERT_EQ(removed.line("disposition"), "succeeded") << removed.out << removed.err;
  EXPECT_FALSE(fs::exists(target));
  EXPECT_TRUE(db_.scalar("SELECT removed_at FROM autodevs_worktrees WHERE task_id = $1", {id}).has_value());
}

TEST_F(AiExec, BadInputIsPermanent) {
  auto r = exec("ai:execute", R"({"task_id":")" + new_uuid() + R"(","step":1})");
  EXPECT_EQ(r.line("disposition"), "fail_no_retry") << r.out;
  r = exec("ai:execute", R"({"task_id":")" + new_uuid() + R"(","step":0})");
  EXPECT_EQ(r.line("disposition"), "fail_no_retry") << r.out;
  EXPECT_NE(r.line("error").find("step"), std::string::npos) << r.out;
  r = exec("ai:execute", R"({"step":1})");
  EXPECT_EQ(r.line("disposition"), "fail_no_retry") << r.out;
  EXPECT_NE(r.line("error").find("task_id"), std::string::npos) << r.out;
}

TEST_F(AiExec, AnAgentThatOverrunsIsKilledAndRetried) {
  const fs::path repo = make_repo("slow-repo");
  const std::string id = new_uuid();
  ASSERT_NO_FATAL_FAILURE(plan_one_step_with_worktree(id, repo));
  const auto started = std::chrono::steady_clock::now();
  const auto r =
      exec("ai:execute", R"({"task_id":")" + id + R"(","step":1})",
           {{"AI_COMMAND", "sh -c 'trap \"\" TERM; echo working; sleep 60'"}, {"AI_TIMEOUT", "3s"}});
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(40));
  EXPECT_EQ(r.line("disposition"), "retry") << r.out << r.err;
  EXPECT_NE(r.line("error").find("timed out"), std::string::npos) << r.out;
  const auto step = db_.exec(
      "SELECT status, output, commit_sha FROM autodevs_task_steps WHERE task_id = $1 AND step_no = 1", {id});
  ASSERT_EQ(step.size(), 1u);
  EXPECT_EQ(step[0][0], "retrying");
  EXPECT_EQ(step[0][1], "working\n");
  EXPECT_FALSE(step[0][2].has_value());
}

TEST_F(AiExec, TheAgentDoesNotInheritTheWorkersSettingsOrSecrets) {
  const fs::path repo = make_repo("env-repo");
  const std::string id = new_uuid();
  ASSERT_NO_FATAL_FAILURE(plan_one_step_with_worktree(id, repo));
  const auto r = exec("ai:execute", R"({"task_id":")" + id + R"(","step":1})",
                      {{"AI_COMMAND", "env"},
                       {"AI_API_KEY", "sk-agent-must-not-see-this"},
                       {"REDIS_PASSWORD", "redis-secret-for-the-worker"},
                       {"AGENT_OWN_TOKEN", "the-agent-may-see-this"}});
  ASSERT_EQ(r.line("disposition"), "succeeded") << r.out << r.err;
  const std::string output =
      db_.scalar("SELECT output FROM autodevs_task_steps WHERE task_id = $1 AND step_no = 1", {id})
          .value_or("");
  EXPECT_NE(output.find("AUTODEVS_TASK_ID=" + id), std::string::npos) << output;
  EXPECT_NE(output.find("AGENT_OWN_TOKEN=the-agent-may-see-this"), std::string::npos) << output;
  EXPECT_EQ(output.find("sk-agent-must-not-see-this"), std::string::npos) << output;
  EXPECT_EQ(output.find("redis-secret-for-the-worker"), std::string::npos) << output;
  EXPECT_EQ(output.find("\nDB_"), std::string::npos) << output;
  EXPECT_EQ(output.find("WORKTREE_BASE_DIR="), std::string::npos) << output;
}

// An agent CLI that commits as it goes and then fails: the retry starts from the step's start
// commit, so the failed attempt's commit does not end up on the task branch.
TEST_F(AiExec, ARetryDropsCommitsOfTheFailedAttempt) {
  const fs::path repo = make_repo("agent-commits-repo");
  const std::string id = new_uuid();
  ASSERT_NO_FATAL_FAILURE(plan_one_step_with_worktree(id, repo));
  const fs::path marker = dir_ / "first-attempt-done";
  const std::vector<std::pair<std::string, std::string>> agent = {
      {"AI_COMMAND",
       "sh -c 'if [ ! -e \"$0\" ]; then : > \"$0\"; echo partial > partial.txt; git add partial.txt; "
       "git -c user.name=a -c user.email=a@example.invalid commit -qm partial; exit 3; fi; "
       "echo done > done.txt' " +
           marker.string()}};
  const std::string payload = R"({"task_id":")" + id + R"(","step":1})";
  const auto first = exec("ai:execute", payload, agent);
  ASSERT_EQ(first.line("disposition"), "retry") << first.out << first.err;
  ASSERT_TRUE(fs::exists(marker));
  const auto second = exec("ai:execute", payload, agent);
  ASSERT_EQ(second.line("disposition"), "succeeded") << second.out << second.err;

  const auto shas = step_commits(*this, repo, id, &AiExec::git);
  EXPECT_EQ(shas.size(), 1u);
  const fs::path worktree = fs::canonical(base_) / "agent-commits-repo" / id;
  EXPECT_TRUE(fs::exists(worktree / "done.txt"));
  EXPECT_FALSE(fs::exists(worktree / "partial.txt"));
}

// A model's diff that adds a symbolic link out of the worktree is refused: the step is retried,
// nothing is committed, and the error names the link and its target.
TEST_F(AiExec, AModelDiffAddingASymlinkIsRefused) {
  const std::string diff =
      "```diff\n"
      "diff --git a/escape b/escape\n"
      "new file mode 120000\n"
      "index 0000000..6f3b5e1\n"
      "--- /dev/null\n"
      "+++ b/escape\n"
      "@@ -0,0 +1 @@\n"
      "+/etc\n"
      "\\ No newline at end of file\n"
      "```\n";
  httplib::Server server;
  server.Post("/v1/chat/completions", [&diff](const httplib::Request&, httplib::Response& res) {
    const nlohmann::json body = {
        {"choices", {{{"index", 0}, {"message", {{"role", "assistant"}, {"content", diff}}}}}}};
    res.set_content(body.dump(), "application/json");
  });
  const int port = server.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  std::thread serving([&server] { server.listen_after_bind(); });

  const fs::path repo = make_repo("symlink-diff-repo");
  const std::string id = new_uuid();
  ASSERT_NO_FATAL_FAILURE(plan_one_step_with_worktree(id, repo));
  const auto r = exec("ai:execute", R"({"task_id":")" + id + R"(","step":1})",
                      {{"AI_PROVIDER", "openai"},
                       {"AI_COMMAND", ""},
                       {"AI_BASE_URL", "http://127.0.0.1:" + std::to_string(port) + "/v1"},
                       {"AI_MODEL", "m"},
                       {"AI_API_KEY", "sk-test"}});
  server.stop();
  serving.join();
  EXPECT_EQ(r.line("disposition"), "retry") << r.out << r.err;
  EXPECT_NE(r.line("error").find("symbolic link out of the worktree"), std::string::npos) << r.out;
  EXPECT_NE(r.line("error").find("escape -> /etc"), std::string::npos) << r.out;
  EXPECT_TRUE(step_commits(*this, repo, id, &AiExec::git).empty());
}

// The same rule for agent CLIs, also when the agent commits the link itself; a link that stays
// inside the repository is an ordinary change.
TEST_F(AiExec, AnAgentsSymlinkOutOfTheWorktreeIsRefusedOneInsideIsKept) {
  const fs::path repo = make_repo("symlink-agent-repo");
  const std::string id = new_uuid();
  ASSERT_NO_FATAL_FAILURE(plan_one_step_with_worktree(id, repo));
  const std::string payload = R"({"task_id":")" + id + R"(","step":1})";
  for (const std::string& target : {std::string("/etc"), std::string("../../..")}) {
    const auto refused = exec(
        "ai:execute", payload,
        {{"AI_COMMAND", "sh -c 'mkdir sub && ln -s " + target +
                            " sub/out && git add sub && git -c user.name=a -c user.email=a@example.invalid "
                            "commit -qm link'"}});
    EXPECT_EQ(refused.line("disposition"), "retry") << refused.out << refused.err;
    EXPECT_NE(refused.line("error").find("sub/out -> " + target), std::string::npos) << refused.out;
    EXPECT_TRUE(step_commits(*this, repo, id, &AiExec::git).empty());  // the agent's own commit is undone
    EXPECT_FALSE(fs::exists(fs::symlink_status(fs::canonical(base_) / "symlink-agent-repo" / id / "sub")));
  }
  const auto kept =
      exec("ai:execute", payload, {{"AI_COMMAND", "sh -c 'mkdir sub && ln -s ../README.md sub/in'"}});
  ASSERT_EQ(kept.line("disposition"), "succeeded") << kept.out << kept.err;
  EXPECT_EQ(step_commits(*this, repo, id, &AiExec::git).size(), 1u);
  const fs::path worktree = fs::canonical(base_) / "symlink-agent-repo" / id;
  EXPECT_EQ(fs::read_symlink(worktree / "sub" / "in"), "../README.md");
}

// An agent that moves the worktree off the task branch: nothing is committed elsewhere.
TEST_F(AiExec, AnAgentThatLeavesTheTaskBranchFailsTheStep) {
  const fs::path repo = make_repo("detach-repo");
  const std::string id = new_uuid();
  ASSERT_NO_FATAL_FAILURE(plan_one_step_with_worktree(id, repo));
  const auto r = exec("ai:execute", R"({"task_id":")" + id + R"(","step":1})",
                      {{"AI_COMMAND", "git checkout -q --detach"}});
  EXPECT_EQ(r.line("disposition"), "fail_no_retry") << r.out << r.err;
  EXPECT_NE(r.line("error").find("off branch autodevs/" + id), std::string::npos) << r.out;
  EXPECT_TRUE(step_commits(*this, repo, id, &AiExec::git).empty());
  EXPECT_FALSE(db_.scalar("SELECT commit_sha FROM autodevs_task_steps WHERE task_id = $1", {id}).has_value());
}

TEST_F(PipelineChain, PlanningWorktreeEveryStepCompleted) {
  const fs::path repo = make_repo("chain-repo");
  const std::string id = new_uuid();
  insert_task(id, repo, "Friendlier README", kBulleted);
  ASSERT_EQ(exec("planning:task", payload_for(id)).line("disposition"), "succeeded");
  ASSERT_EQ(exec("worktree:create", payload_for(id)).line("disposition"), "succeeded");

  for (int step = 1; step <= 3; ++step) {
    const std::string payload = R"({"task_id":")" + id + R"(","step":)" + std::to_string(step) + "}";
    const auto r = exec("ai:execute", payload);
    ASSERT_EQ(r.line("disposition"), "succeeded") << "step " << step << "\n" << r.out << r.err;
    if (step < 3) {
      ASSERT_EQ(r.lines("staged").size(), 1u) << r.out;
      EXPECT_NE(r.line("staged").find("id=ai-execute:" + id + ":" + std::to_string(step + 1)),
                std::string::npos)
          << r.out;
    } else {
      EXPECT_TRUE(r.lines("staged").empty()) << r.out;
    }
    // A redelivery of the same step commits nothing new and stages the same follow-up.
    const auto again = exec("ai:execute", payload);
    ASSERT_EQ(again.line("disposition"), "succeeded") << again.out << again.err;
    EXPECT_EQ(again.lines("staged").size(), r.lines("staged").size());
  }

  EXPECT_EQ(db_.scalar("SELECT status FROM autodevs_tasks WHERE id = $1", {id}), "completed");
  const auto shas = step_commits(*this, repo, id, &PipelineChain::git);
  ASSERT_EQ(shas.size(), 3u);
  const auto recorded = db_.exec(
      "SELECT commit_sha, status, output FROM autodevs_task_steps WHERE task_id = $1 ORDER BY step_no DESC",
      {id});
  ASSERT_EQ(recorded.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(recorded[i][0], shas[i]);  // log is newest first, rows are step 3..1
    EXPECT_EQ(recorded[i][1], "done");
    EXPECT_NE(recorded[i][2].value_or("").find("appended step"), std::string::npos);
  }
  const std::string message = git(repo, {"log", "-1", "--format=%B", "autodevs/" + id});
  EXPECT_NE(message.find("AutoDevs-Step: " + id + "/3"), std::string::npos) << message;
  EXPECT_EQ(git(repo, {"log", "-1", "--format=%an <%ae>", "autodevs/" + id}),
            "AutoDevs Worker <worker@autodevs.local>\n");
  std::ifstream notes(fs::canonical(base_) / "chain-repo" / id / "NOTES.md");
  std::string content((std::istreambuf_iterator<char>(notes)), std::istreambuf_iterator<char>());
  EXPECT_NE(content.find("Step 1: Add a greeting section"), std::string::npos) << content;
  EXPECT_NE(content.find("Step 3: Mention the licence"), std::string::npos) << content;
}

}  // namespace
}  // namespace pipeline_test
