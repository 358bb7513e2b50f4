// Git worktrees for tasks (docs/plugins.md, "How each plugin works"):
//   worktree:create  {"task_id", "repo_path"?, "base_ref"?}
//   worktree:remove  {"task_id", "delete_branch"?}
//   worktree:cleanup {}
// Path $WORKTREE_BASE_DIR/<repo-name>/<task_id>, branch autodevs/<task_id>. Every git call goes
// through autodevs::Git (argv, `--` before paths, GIT_TERMINAL_PROMPT=0).
#include <wk_sdk.hpp>

#include <sys/statvfs.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "autodevs/git.hpp"
#include "autodevs/paths.hpp"
#include "autodevs/pipeline.hpp"
#include "autodevs/sdk_glue.hpp"
#include "autodevs/text.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Retry delay when another delivery holds the task's worktree lock.
constexpr std::chrono::milliseconds kLockBusyRetry = 5s;

struct WorktreeRow {
  std::string task_id;
  std::string repo_path;
  std::string path;
  std::string branch;
  bool removed = false;
  std::string host_id;  // the machine holding it (empty: recorded before hosts were)
};

std::string branch_for(const std::string& task_id) { return "autodevs/" + task_id; }

class Worktrees {
 public:
  explicit Worktrees(wk::Context& ctx) {
    base_dir_ = autodevs::config_string(ctx, "WORKTREE_BASE_DIR", "/tmp/worktrees");
    if (base_dir_.empty() || !base_dir_.is_absolute()) {
      throw autodevs::ConfigError("WORKTREE_BASE_DIR=\"" + base_dir_.string() +
                                  "\" is invalid: expected an absolute path");
    }
    max_path_length_ = autodevs::config_unsigned(ctx, "WORKTREE_MAX_PATH_LENGTH", 4096);
    min_free_bytes_ = autodevs::config_bytes(ctx, "WORKTREE_MIN_DISK_SPACE", 104857600);
    cleanup_interval_ = autodevs::config_duration(ctx, "WORKTREE_CLEANUP_INTERVAL", 24h);
    if (cleanup_interval_ < 1s) {
      throw autodevs::ConfigError("WORKTREE_CLEANUP_INTERVAL is invalid: expected at least 1s");
    }
    log_git_ = autodevs::config_bool(ctx, "WORKTREE_ENABLE_LOGGING", true);
    step_task_timeout_ = autodevs::ai_execute_timeout(ctx);
    placement_ = autodevs::Placement::of(ctx);
    autodevs::migrate_shared_schema(ctx);
    schedule_cleanup(ctx, /*from_slot=*/current_slot());
    ctx.info("worktree plugin ready",
             {{"base_dir", base_dir_.string()},
              {"cleanup_interval_ms", static_cast<std::int64_t>(cleanup_interval_.count())},
              {"host_id", placement_.host_id},
              {"shared", placement_.shared}});
  }

  // ---- worktree:create ---------------------------------------------------------------------
  wk::Outcome create(wk::TaskContext& tc, const wk::Task& task) {
    const nlohmann::json payload = autodevs::payload_or_permanent(task);
    const std::string task_id =
        autodevs::payload_field([&] { return autodevs::required_uuid(payload, "task_id"); });
    std::optional<std::string> repo_arg =
        autodevs::payload_field([&] { return autodevs::optional_string(payload, "repo_path"); });
    std::optional<std::string> ref_arg =
        autodevs::payload_field([&] { return autodevs::optional_string(payload, "base_ref"); });

    // Serialised per task against other deliveries of create/remove; every query below runs on
    // the lock's connection (a second pooled connection could deadlock a pool of one).
    wk::Transaction tx = lock_task(tc, task_id);

    // The task row supplies what the payload leaves out.
    auto task_rows =
        tx.query("SELECT repo_path, base_ref FROM autodevs_tasks WHERE id = $1", {wk::Param::text(task_id)});
    if (!repo_arg && !task_rows.empty()) repo_arg = std::string(task_rows.text(0, 0).value_or(""));
    if (!ref_arg && !task_rows.empty()) ref_arg = std::string(task_rows.text(0, 1).value_or(""));
    if (!repo_arg || repo_arg->empty()) {
      throw wk::Permanent("unknown_task",
                          "no repo_path in the payload and no task " + task_id + " in autodevs_tasks");
    }
    const std::string base_ref = ref_arg && !ref_arg->empty() ? *ref_arg : "HEAD";
    if (!autodevs::is_safe_ref_name(base_ref))
      throw wk::Permanent("bad_payload", "invalid payload: base_ref: not a valid git ref");

    const autodevs::Git git = make_git(tc);
    const fs::path repo = checked_repository(git, *repo_arg);
    const fs::path base = canonical_base();
    const fs::path target = checked_target(base, repo, task_id);
    const std::string branch = branch_for(task_id);

    // Already created (a retry, or a duplicate delivery): success, and the follow-up again.
    if (is_registered_worktree(git, repo, target) && fs::is_directory(target)) {
      record(tx, task_id, repo, target, branch, std::nullopt);
      stage_first_step(tc, tx, task_id);
      tx.commit();
      tc.info("worktree already exists", {{"autodevs_task_id", task_id}, {"path", target.string()}});
      return wk::Outcome::ok();
    }

    require_free_space(base);
    const std::optional<std::string> base_commit = git.resolve_commit(repo, base_ref);
    if (!base_commit) {
      throw wk::Permanent("unknown_ref",
                          "base_ref " + base_ref + " does not name a commit in " + repo.string());
    }

    // A half-made attempt may have left git records or a directory behind.
    run_git_checked(git, repo, {"worktree", "prune"});
    std::error_code ec;
    if (fs::exists(fs::symlink_status(target, ec))) {
      tc.warn("removing leftover directory at the worktree path", {{"path", target.string()}});
      fs::remove_all(target, ec);
      if (ec) throw std::runtime_error("cannot remove leftover " + target.string() + ": " + ec.message());
    }
    fs::create_directories(target.parent_path());
    if (git.resolve_commit(repo, "refs/heads/" + branch)) {
      run_git_checked(git, repo, {"worktree", "add", "--", target.string(), branch});
    } else {
      run_git_checked(git, repo, {"worktree", "add", "-b", branch, "--", target.string(), *base_commit});
    }

    record(tx, task_id, repo, target, branch, base_commit);
    stage_first_step(tc, tx, task_id);
    tx.commit();
    nlohmann::json result = {{"task_id", task_id},
                             {"path", target.string()},
                             {"branch", branch},
                             {"base_commit", *base_commit},
                             {"host_id", placement_.host_id}};
    tc.write_result(result.dump());
    tc.info("worktree created",
            {{"autodevs_task_id", task_id}, {"path", target.string()}, {"branch", branch}});
    return wk::Outcome::ok();
  }

  // ---- worktree:remove ---------------------------------------------------------------------
  wk::Outcome remove(wk::TaskContext& tc, const wk::Task& task) {
    const nlohmann::json payload = autodevs::payload_or_permanent(task);
    const std::string task_id =
        autodevs::payload_field([&] { return autodevs::required_uuid(payload, "task_id"); });
    const bool delete_branch = autodevs::payload_field([&] {
                                 return autodevs::optional_bool(payload, "delete_branch");
                               }).value_or(false);

    wk::Transaction tx = lock_task(tc, task_id);
    auto rows = tx.query(
        "SELECT task_id::text, repo_path, path, branch, removed_at IS NOT NULL, COALESCE(host_id, '') FROM "
        "autodevs_worktrees WHERE task_id = $1",
        {wk::Param::text(task_id)});
    if (rows.empty()) {
      tc.info("no worktree recorded for the task; nothing to remove", {{"autodevs_task_id", task_id}});
      return wk::Outcome::ok();
    }
    const WorktreeRow row = row_from(rows, 0);
    if (!row.removed && placement_.elsewhere(row.host_id)) return hand_to_holder(tc, task, row);
    const autodevs::Git git = make_git(tc);
    if (!row.removed) remove_worktree(tc, tx, git, row);
    if (delete_branch && fs::is_directory(row.repo_path) &&
        git.resolve_commit(row.repo_path, "refs/heads/" + row.branch)) {
      run_git_checked(git, row.repo_path, {"branch", "-D", "--", row.branch});
    }
    tx.commit();
    tc.info("worktree removed", {{"autodevs_task_id", task_id}, {"branch_deleted", delete_branch}});
    return wk::Outcome::ok();
  }

  // ---- worktree:cleanup --------------------------------------------------------------------
  wk::Outcome cleanup(wk::TaskContext& tc, const wk::Task& task) {
    autodevs::payload_or_permanent(task);  // {} or nothing; anything else is a bad payload
    if (!placement_.shared && wk::is_host_queue(task.queue) &&
        task.queue != wk::host_queue(placement_.host_id)) {
      // Another machine's cleanup, taken over because that machine serves its queue no more:
      // its disk is not ours to clean, and its chain ends here (it starts again with the host).
      tc.info("not cleaning another machine's worktrees", {{"queue", std::string(task.queue)}});
      return wk::Outcome::ok();
    }
    schedule_cleanup(tc, current_slot());
    const autodevs::Git git = make_git(tc);
    const auto interval_ms = static_cast<std::int64_t>(cleanup_interval_.count());

    // 1. Worktrees of finished (or deleted) tasks, idle for longer than the interval.
    // Only this machine's (with a shared disk: all of them).
    auto finished = tc.query(
        "SELECT w.task_id::text, w.repo_path, w.path, w.branch, false, COALESCE(w.host_id, '') FROM "
        "autodevs_worktrees w "
        "LEFT JOIN autodevs_tasks t ON t.id = w.task_id "
        "WHERE w.removed_at IS NULL AND ($2 = '' OR w.host_id IS NULL OR w.host_id = $2) AND ("
        "  (t.id IS NOT NULL AND t.status IN " +
            std::string(autodevs::kFinishedStatusesSql) +
            " AND t.updated_at < now() - $1::bigint * interval '1 millisecond')"
            "  OR (t.id IS NULL AND w.created_at < now() - $1::bigint * interval '1 millisecond')) "
            "ORDER BY w.created_at",
        {wk::Param::int64(interval_ms), wk::Param::text(placement_.shared ? "" : placement_.host_id)});
    nlohmann::json removed = nlohmann::json::array();
    for (std::size_t i = 0; i < finished.size(); ++i) {
      tc.throw_if_cancelled();
      const WorktreeRow row = row_from(finished, i);
      std::optional<wk::Transaction> tx = try_lock_task(tc, row.task_id);
      if (!tx) {
        tc.info("worktree busy (a create or remove is running); left for the next cleanup",
                {{"autodevs_task_id", row.task_id}});
        continue;
      }
      remove_worktree(tc, *tx, git, row);
      tx->commit();
      removed.push_back(row.path);
    }

    // 2. Directories under the base that no git repository knows and no active row claims.
    nlohmann::json stale_removed = nlohmann::json::array();
    const fs::path base = canonical_base();
    auto repos = tc.query("SELECT DISTINCT repo_path FROM autodevs_worktrees");
    auto active = tc.query("SELECT path FROM autodevs_worktrees WHERE removed_at IS NULL");
    std::set<std::string> claimed;
    for (std::size_t i = 0; i < active.size(); ++i)
      claimed.insert(std::string(active.text(i, 0).value_or("")));
    for (std::size_t i = 0; i < repos.size(); ++i) {
      tc.throw_if_cancelled();
      const fs::path repo(std::string(repos.text(i, 0).value_or("")));
      std::error_code ec;
      if (repo.empty() || !fs::is_directory(repo, ec) || !git.is_repository(repo)) continue;
      run_git_checked(git, repo, {"worktree", "prune"});
      const fs::path repo_dir = base / repository_name(fs::canonical(repo, ec));
      if (ec || !fs::is_directory(fs::symlink_status(repo_dir))) continue;
      std::set<fs::path> known;
      for (const auto& entry : autodevs::parse_worktree_list(
               run_git_checked(git, repo, {"worktree", "list", "--porcelain", "-z"}))) {
        known.insert(fs::weakly_canonical(entry.path, ec));
      }
      for (const auto& entry : fs::directory_iterator(repo_dir, ec)) {
        // Only directories named like our worktrees; never follow a symlink out of the base.
        if (!entry.is_directory() || entry.is_symlink() ||
            !autodevs::is_uuid(entry.path().filename().string()))
          continue;
        const fs::path& path = entry.path();
        if (known.count(path) != 0 || claimed.count(path.string()) != 0) continue;
        const auto age = fs::file_time_type::clock::now() - fs::last_write_time(path, ec);
        if (ec || age < cleanup_interval_) continue;  // may be a create in progress
        fs::remove_all(path, ec);
        if (ec) {
          tc.warn("cannot remove stale worktree directory",
                  {{"path", path.string()}, {"error", ec.message()}});
          continue;
        }
        tc.info("removed stale worktree directory", {{"path", path.string()}});
        stale_removed.push_back(path.string());
      }
    }
    nlohmann::json result = {{"removed", removed}, {"stale_removed", stale_removed}};
    tc.write_result(result.dump());
    tc.info("worktree cleanup done", {{"removed", removed.size()}, {"stale_removed", stale_removed.size()}});
    return wk::Outcome::ok();
  }

 private:
  // --- configuration-dependent helpers ---

  autodevs::Git make_git(const wk::TaskContext& tc) const {
    autodevs::GitOptions options;
    options.cancel_requested = autodevs::cancel_probe(tc);
    if (log_git_) {
      options.observer = [&tc](const std::vector<std::string>& argv, const autodevs::SubprocessResult& r,
                               bool probe) {
        std::string command;
        for (const auto& arg : argv) command += (command.empty() ? "" : " ") + arg;
        const std::string outcome = r.describe();
        // A probe's non-zero exit is an answer (the branch does not exist yet), not a failure.
        if (r.succeeded() || (probe && r.exited_normally && !r.timed_out && !r.cancelled)) {
          tc.info("git command", {{"command", command},
                                  {"outcome", outcome},
                                  {"elapsed_ms", static_cast<std::int64_t>(r.elapsed.count())}});
        } else {
          tc.warn("git command failed", {{"command", command},
                                         {"outcome", outcome},
                                         {"stderr", autodevs::trim(r.stderr_text.substr(0, 500))}});
        }
      };
    }
    return autodevs::Git(std::move(options));
  }

  static std::string run_git_checked(const autodevs::Git& git, const fs::path& dir,
                                     const std::vector<std::string>& args) {
    try {
      return git.run_checked(dir, args);
    } catch (const autodevs::GitError& e) {
      if (e.result().cancelled) throw wk::Cancelled();
      throw;  // retried with the default backoff
    }
  }

  fs::path canonical_base() const {
    std::error_code ec;
    fs::create_directories(base_dir_, ec);
    fs::path base = fs::canonical(base_dir_, ec);
    if (ec)
      throw std::runtime_error("WORKTREE_BASE_DIR " + base_dir_.string() + " is unusable: " + ec.message());
    return base;
  }

  static std::string repository_name(const fs::path& canonical_repo) {
    std::string name = canonical_repo.filename().string();
    if (name.size() > 4 && name.ends_with(".git")) name.resize(name.size() - 4);
    return name;
  }

  static fs::path checked_repository(const autodevs::Git& git, const std::string& repo_path) {
    const fs::path repo(repo_path);
    std::error_code ec;
    if (!repo.is_absolute())
      throw wk::Permanent("bad_payload", "invalid payload: repo_path: must be an absolute path");
    if (!fs::is_directory(repo, ec))
      throw wk::Permanent("not_a_repository", repo_path + " is not a directory");
    if (!git.is_repository(repo))
      throw wk::Permanent("not_a_repository", repo_path + " is not a git repository");
    fs::path canonical = fs::canonical(repo, ec);
    const std::string name = canonical.filename().string();
    if (ec || name.empty() || name == "." || name == "..") {
      throw wk::Permanent("not_a_repository", repo_path + " has no usable directory name");
    }
    return canonical;
  }

  // The worktree path, refused (no retry) when too long or outside the base once symlinks
  // along it are resolved.
  fs::path checked_target(const fs::path& base, const fs::path& repo, const std::string& task_id) const {
    fs::path target = base / repository_name(repo) / task_id;
    if (target.string().size() > max_path_length_) {
      throw wk::Permanent(
          "path_too_long",
          "worktree path " + target.string() + " is " + std::to_string(target.string().size()) +
              " characters, over WORKTREE_MAX_PATH_LENGTH=" + std::to_string(max_path_length_));
    }
    std::error_code ec;
    const fs::path resolved = fs::weakly_canonical(target, ec);
    if (ec || !autodevs::is_within(base, resolved)) {
      throw wk::Permanent("path_escapes_base", "worktree path " + target.string() + " resolves to " +
                                                   resolved.string() + ", outside WORKTREE_BASE_DIR " +
                                                   base.string());
    }
    if (resolved != target) {
      // A symlink inside the base: git would follow it, cleanup would not find it. Refuse.
      throw wk::Permanent("path_escapes_base", "worktree path " + target.string() +
                                                   " goes through a symlink (" + resolved.string() + ")");
    }
    if (resolved.string().size() > max_path_length_) {
      throw wk::Permanent("path_too_long", "resolved worktree path exceeds WORKTREE_MAX_PATH_LENGTH");
    }
    return target;
  }

  void require_free_space(const fs::path& base) const {
    struct statvfs fs_stats {};
    if (::statvfs(base.c_str(), &fs_stats) != 0)
      throw std::runtime_error("statvfs(" + base.string() + ") failed");
    const std::uint64_t available = static_cast<std::uint64_t>(fs_stats.f_bavail) * fs_stats.f_frsize;
    if (available < min_free_bytes_) {
      throw wk::RetryLater(5min, "only " + std::to_string(available) + " bytes free under " + base.string() +
                                     ", below WORKTREE_MIN_DISK_SPACE=" + std::to_string(min_free_bytes_));
    }
  }

  static bool is_registered_worktree(const autodevs::Git& git, const fs::path& repo, const fs::path& target) {
    const auto listing = git.run(repo, {"worktree", "list", "--porcelain", "-z"});
    if (!listing.succeeded()) return false;
    std::error_code ec;
    for (const auto& entry : autodevs::parse_worktree_list(listing.stdout_text)) {
      if (!entry.prunable && fs::weakly_canonical(entry.path, ec) == target) return true;
    }
    return false;
  }

  // The row says which machine holds the worktree (operators see it; steps go there).
  void record(const wk::Transaction& tx, const std::string& task_id, const fs::path& repo,
              const fs::path& target, const std::string& branch,
              const std::optional<std::string>& base_commit) const {
    tx.query(
        "INSERT INTO autodevs_worktrees (task_id, repo_path, path, branch, base_commit, host_id) VALUES ($1, "
        "$2, "
        "$3, $4, $5, NULLIF($6, '')) "
        "ON CONFLICT (task_id) DO UPDATE SET repo_path = EXCLUDED.repo_path, path = EXCLUDED.path, "
        "branch = EXCLUDED.branch, base_commit = COALESCE(EXCLUDED.base_commit, "
        "autodevs_worktrees.base_commit), host_id = EXCLUDED.host_id, "
        "removed_at = NULL",
        {wk::Param::text(task_id), wk::Param::text(repo.string()), wk::Param::text(target.string()),
         wk::Param::text(branch), base_commit ? wk::Param::text(*base_commit) : wk::Param::null(),
         wk::Param::text(placement_.host_id)});
  }

  // Step 1 runs where the worktree is: this machine's queue (unless the disk is shared).
  void stage_first_step(const wk::TaskContext& tc, const wk::Transaction& tx,
                        const std::string& task_id) const {
    auto steps = tx.query("SELECT 1 FROM autodevs_task_steps WHERE task_id = $1 AND step_no = 1",
                          {wk::Param::text(task_id)});
    if (steps.empty()) return;  // a worktree without a plan (created directly by the application)
    const nlohmann::json follow_up = {{"task_id", task_id}, {"step", 1}};
    tc.enqueue("ai:execute", follow_up.dump(),
               placement_.step_options()
                   .task_id(autodevs::ai_execute_task_id(task_id, 1))
                   .timeout(step_task_timeout_));
  }

  // Per-task serialisation of worktree:create, worktree:remove and cleanup's removals: two
  // deliveries of the same task (an expired lease, a duplicate) must not delete each other's
  // half-made directory. A transaction-scoped advisory lock, so a crash or a dropped connection
  // releases it; the transaction holds one pooled connection until commit, and the caller runs
  // all its queries through it (docs/plugins.md, "Worktree locking").
  static std::optional<wk::Transaction> try_lock_task(const wk::TaskContext& tc, const std::string& task_id) {
    wk::Transaction tx = tc.begin();
    auto locked =
        tx.query("SELECT pg_try_advisory_xact_lock(hashtext('worktree:' || $1))", {wk::Param::text(task_id)});
    if (locked.empty() || !locked.boolean(0, 0).value_or(false)) return std::nullopt;
    return tx;
  }

  // As try_lock_task, but another holder means: retry shortly, without blocking a handler slot.
  static wk::Transaction lock_task(const wk::TaskContext& tc, const std::string& task_id) {
    std::optional<wk::Transaction> tx = try_lock_task(tc, task_id);
    if (!tx) {
      throw wk::RetryLater(kLockBusyRetry, "another delivery is creating or removing the worktree of task " +
                                               task_id + "; retrying");
    }
    return std::move(*tx);
  }

  static WorktreeRow row_from(const wk::Rows& rows, std::size_t i) {
    return WorktreeRow{std::string(rows.text(i, 0).value_or("")), std::string(rows.text(i, 1).value_or("")),
                       std::string(rows.text(i, 2).value_or("")), std::string(rows.text(i, 3).value_or("")),
                       rows.boolean(i, 4).value_or(false),        std::string(rows.text(i, 5).value_or(""))};
  }

  // worktree:remove of a worktree another machine holds. Sent on to that machine's queue, unless
  // it came from there: then that machine serves its queue no more (the engine let another
  // worker take it), and its worktree is out of reach; its own cleanup removes it if it returns.
  wk::Outcome hand_to_holder(const wk::TaskContext& tc, const wk::Task& task, const WorktreeRow& row) const {
    const std::string holder_queue = wk::host_queue(row.host_id);
    if (task.queue == holder_queue) {
      tc.warn("worktree is on a machine that no longer serves its queue; left there",
              {{"autodevs_task_id", row.task_id}, {"host_id", row.host_id}, {"path", row.path}});
      return wk::Outcome::ok();
    }
    autodevs::enqueue_once(
        tc, "worktree:remove", task.payload,
        wk::EnqueueOptions().queue(holder_queue).task_id("worktree-remove:" + row.task_id).immediate());
    tc.info("worktree:remove sent to the machine holding the worktree",
            {{"autodevs_task_id", row.task_id}, {"host_id", row.host_id}});
    return wk::Outcome::ok();
  }

  // Removes the worktree directory (through git when git knows it), prunes, marks the row.
  // The branch stays: it holds the task's commits.
  void remove_worktree(const wk::TaskContext& tc, const wk::Transaction& tx, const autodevs::Git& git,
                       const WorktreeRow& row) const {
    const fs::path path(row.path);
    const fs::path repo(row.repo_path);
    std::error_code ec;
    const bool repo_usable = fs::is_directory(repo, ec) && git.is_repository(repo);
    if (repo_usable && fs::is_directory(path, ec) &&
        is_registered_worktree(git, repo, fs::weakly_canonical(path, ec))) {
      run_git_checked(git, repo, {"worktree", "remove", "--force", "--force", "--", path.string()});
    }
    if (fs::exists(fs::symlink_status(path, ec))) {
      // Only ever delete below the base directory, whatever the row says.
      const fs::path base = canonical_base();
      const fs::path parent = fs::weakly_canonical(path.parent_path(), ec);
      if (!ec && autodevs::is_within(base, parent / path.filename())) {
        fs::remove_all(path, ec);
      } else {
        tc.warn("not deleting a recorded worktree path outside WORKTREE_BASE_DIR", {{"path", path.string()}});
      }
    }
    if (repo_usable) run_git_checked(git, repo, {"worktree", "prune"});
    tx.query("UPDATE autodevs_worktrees SET removed_at = now() WHERE task_id = $1 AND removed_at IS NULL",
             {wk::Param::text(row.task_id)});
    tc.info("worktree removed", {{"autodevs_task_id", row.task_id}, {"path", row.path}});
  }

  // --- the self-rescheduling cleanup ---

  std::int64_t current_slot() const {
    const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    return now_ms / static_cast<std::int64_t>(cleanup_interval_.count());
  }

  // Enqueues worktree:cleanup for the slot after `from_slot`, at its start, on this machine's
  // queue, with the id worktree-cleanup:<host>:<slot>: every worker of the machine computes the
  // same id, asynq keeps one, so the cleanup runs once per interval per machine (with a shared
  // disk: worktree-cleanup:<slot> on the pipeline queue, once across all workers). Published at
  // once (not staged): the chain must not break when this run fails. A conflict (already
  // enqueued) is the normal case.
  void schedule_cleanup(const wk::Context& ctx, std::int64_t from_slot) const {
    const std::int64_t next_slot = from_slot + 1;
    const auto at = std::chrono::system_clock::time_point(next_slot * cleanup_interval_);
    // Each machine cleans its own disk: one chain per host, on its queue (one shared disk: one).
    const std::string id = placement_.shared
                               ? "worktree-cleanup:" + std::to_string(next_slot)
                               : "worktree-cleanup:" + placement_.host_id + ":" + std::to_string(next_slot);
    try {
      ctx.enqueue("worktree:cleanup", "{}", placement_.step_options().task_id(id).process_at(at).immediate());
    } catch (const wk::HostError& e) {
      ctx.debug("worktree:cleanup for the next slot not enqueued (usually: already enqueued)",
                {{"slot", next_slot}, {"code", e.code()}, {"error", e.what()}});
    }
  }

  fs::path base_dir_;
  std::uint64_t max_path_length_ = 4096;
  std::uint64_t min_free_bytes_ = 104857600;
  std::chrono::milliseconds cleanup_interval_{24h};
  bool log_git_ = true;
  std::chrono::milliseconds step_task_timeout_{35min};
  autodevs::Placement placement_;
};

}  // namespace

WK_PLUGIN_BEGIN(Worktrees, "dev.autodevs.worktree", "1.0.0")
WK_HANDLER_OPT("worktree:create", &Worktrees::create,
               wk::HandlerOptions().idempotent().describe("creates the git worktree of a task"))
WK_HANDLER_OPT("worktree:remove", &Worktrees::remove,
               wk::HandlerOptions().idempotent().describe("removes the git worktree of a task"))
WK_HANDLER_OPT(
    "worktree:cleanup", &Worktrees::cleanup,
    wk::HandlerOptions().idempotent().concurrency(1).describe("removes finished and stale worktrees"))
WK_PLUGIN_END()
