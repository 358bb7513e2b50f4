// worktree:create, remove and cleanup through `worker exec` against the test PostgreSQL.
#include <chrono>
#include <filesystem>
#include <fstream>

#include "plugins/pipeline_fixture.hpp"

namespace pipeline_test {
namespace {

class WorktreeExec : public PipelineTest {};

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

  // The next run is scheduled for the next slot, with this machine's host id and the slot in its
  // id (worktree-cleanup:<WORKER_HOST_ID>:<slot>).
  const auto slot =
      std::chrono::duration_cast<std::chrono::hours>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  bool scheduled = false;
  for (const auto& line : r.lines("enqueued")) {
    const auto id_at = line.find("id=worktree-cleanup:");
    if (line.find("type=worktree:cleanup") == std::string::npos || id_at == std::string::npos) continue;
    const std::string id = line.substr(id_at, line.find(' ', id_at) - id_at);
    if (id.size() > 20 &&
        (id.ends_with(":" + std::to_string(slot + 1)) || id.ends_with(":" + std::to_string(slot + 2)))) {
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

}  // namespace
}  // namespace pipeline_test
