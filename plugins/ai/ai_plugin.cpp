// ai:execute {"task_id": "<uuid>", "step": <n>}: runs step n of a planned task inside its
// worktree, commits the result on autodevs/<task_id> with the trailer
// "AutoDevs-Step: <task_id>/<n>", records the commit, then stages step n+1
// (id ai-execute:<task_id>:<n+1>) or marks the task completed.
//
// Providers: AI_PROVIDER=command runs AI_COMMAND (an agent CLI; argv by shell-like splitting,
// no shell) with the step on stdin; AI_PROVIDER=openai asks a chat-completions endpoint for a
// unified diff and applies it with `git apply`.
//
// Idempotence: a step with a recorded commit, or whose commit is already HEAD (trailer), is
// not run again. Before a run the worktree is reset to HEAD, so a crashed attempt's partial
// edits never leak into the retry's commit.
#include <wk_sdk.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "autodevs/chat.hpp"
#include "autodevs/git.hpp"
#include "autodevs/paths.hpp"
#include "autodevs/pipeline.hpp"
#include "autodevs/sdk_glue.hpp"
#include "autodevs/subprocess.hpp"
#include "autodevs/text.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr std::int64_t kMaxSteps = 10000;
constexpr std::string_view kStepTrailer = "AutoDevs-Step";
// Time kept back from the task deadline for committing and recording after the agent.
constexpr std::chrono::milliseconds kFinishMargin = 15s;

constexpr std::string_view kDiffSystemPrompt =
    "You are a coding agent working in a git repository. Implement the requested step. Reply "
    "with ONE unified diff (git diff format, paths a/... and b/... relative to the repository "
    "root) inside a ```diff fenced block, and nothing else. Reply with an empty ```diff block "
    "when nothing needs to change.";

enum class Provider { None, Command, OpenAi };

struct StepContext {
  std::string task_id;
  std::int64_t step_no = 0;
  std::int64_t step_count = 0;
  std::string task_title;
  std::string task_description;
  std::string step_title;
  std::string instructions;
  std::optional<std::string> recorded_commit;
  // Where the step starts: the previous step's commit, or the worktree's base commit for step 1.
  std::optional<std::string> start_commit;
  fs::path worktree;
  std::string holder;  // WORKER_HOST_ID of the machine holding the worktree (empty: unrecorded)
  std::string branch;
};

struct AgentRun {
  std::string output;  // bounded, for autodevs_task_steps.output
  bool truncated = false;
};

// A full hex object id (SHA-1 or SHA-256), or nothing.
std::optional<std::string> commit_id_or_none(std::string_view text) {
  if ((text.size() != 40 && text.size() != 64) ||
      text.find_first_not_of("0123456789abcdef") != std::string_view::npos)
    return std::nullopt;
  return std::string(text);
}

std::string tail(const std::string& text, std::size_t max_chars) {
  return text.size() <= max_chars ? text : "..." + text.substr(text.size() - max_chars);
}

class AiExecutor {
 public:
  explicit AiExecutor(wk::Context& ctx) {
    const std::string provider = autodevs::config_string(ctx, "AI_PROVIDER", "");
    command_line_ = autodevs::config_string(ctx, "AI_COMMAND", "");
    if (provider == "command" || (provider.empty() && !command_line_.empty())) {
      provider_ = Provider::Command;
      command_argv_ = autodevs::split_command_words(command_line_);  // WordSplitError -> init fails
      if (command_argv_.empty()) throw autodevs::ConfigError("AI_PROVIDER=command needs AI_COMMAND");
    } else if (provider == "openai") {
      provider_ = Provider::OpenAi;
    } else if (!provider.empty() && provider != "none") {
      throw autodevs::ConfigError("AI_PROVIDER=\"" + provider +
                                  "\" is invalid: expected command, openai or none");
    }
    endpoint_.base_url = autodevs::config_string(ctx, "AI_BASE_URL", "https://api.openai.com/v1");
    endpoint_.model = autodevs::config_string(ctx, "AI_MODEL", "gpt-4o-mini");
    endpoint_.api_key = autodevs::config_string(ctx, "AI_API_KEY", "");
    ai_timeout_ = autodevs::ai_timeout(ctx);
    step_task_timeout_ = autodevs::ai_execute_timeout(ctx);
    placement_ = autodevs::Placement::of(ctx);
    output_limit_ = autodevs::config_bytes(ctx, "AI_OUTPUT_LIMIT", 65536);
    parse_author(autodevs::config_string(ctx, "AI_COMMIT_AUTHOR", "AutoDevs Worker <worker@autodevs.local>"));
    autodevs::migrate_shared_schema(ctx);
    ctx.info("ai plugin ready", {{"provider", provider_name()},
                                 {"ai_timeout_ms", static_cast<std::int64_t>(ai_timeout_.count())}});
  }

  wk::Outcome execute(wk::TaskContext& tc, const wk::Task& task) {
    const nlohmann::json payload = autodevs::payload_or_permanent(task);
    const std::string task_id =
        autodevs::payload_field([&] { return autodevs::required_uuid(payload, "task_id"); });
    const std::int64_t step_no = autodevs::payload_field(
        [&] { return autodevs::required_positive_integer(payload, "step", kMaxSteps); });
    try {
      return run_step(tc, task, task_id, step_no);
    } catch (const wk::Permanent& e) {
      mark_failed(tc, task_id, step_no, e.what());
      throw;
    } catch (const wk::Cancelled&) {
      throw;
    } catch (const std::exception& e) {
      // Retried by asynq, unless this was the last attempt: then the task is failed for good.
      if (task.last_attempt()) mark_failed(tc, task_id, step_no, e.what());
      throw;
    }
  }

 private:
  wk::Outcome run_step(wk::TaskContext& tc, const wk::Task& task, const std::string& task_id,
                       std::int64_t step_no) {
    StepContext step = load_step(tc, task_id, step_no);
    if (placement_.elsewhere(step.holder)) return hand_to_holder(tc, task, step);
    if (step.recorded_commit) {
      tc.info("step already committed",
              {{"autodevs_task_id", task_id}, {"step", step_no}, {"commit", *step.recorded_commit}});
      finish(tc, step, *step.recorded_commit, std::nullopt);
      return wk::Outcome::ok();
    }
    const autodevs::Git git = make_git(tc);
    check_worktree(git, step);

    // Crash between commit and record: HEAD already is this step's commit.
    const std::string head = git.run_checked(step.worktree, {"log", "-1", "--format=%H%n%B"});
    const std::string head_sha = head.substr(0, head.find('\n'));
    if (autodevs::find_commit_trailer(head, kStepTrailer) == task_id + "/" + std::to_string(step_no)) {
      tc.info("step commit found at HEAD; recording it", {{"autodevs_task_id", task_id}, {"step", step_no}});
      finish(tc, step, head_sha, std::nullopt);
      return wk::Outcome::ok();
    }

    if (provider_ == Provider::None) {
      throw wk::Permanent("ai_not_configured", "AI_PROVIDER is not set (command or openai)");
    }
    tc.query(
        "UPDATE autodevs_task_steps SET status = 'running', attempts = attempts + 1, started_at = now(), "
        "updated_at = now() "
        "WHERE task_id = $1 AND step_no = $2",
        {wk::Param::text(task_id), wk::Param::int64(step_no)});
    tc.query(
        "UPDATE autodevs_tasks SET status = 'in_progress', updated_at = now() WHERE id = $1 AND status <> "
        "'in_progress'",
        {wk::Param::text(task_id)});

    // Start from the previous step's commit: a previous attempt may have left edits behind, or
    // commits of its own (agent CLIs that commit as they go).
    reset_to_start(git, step);

    const AgentRun run = provider_ == Provider::Command ? run_command(tc, step) : run_openai(tc, git, step);
    // The agent may have switched branches or detached HEAD: the step's commit must land on the
    // task's branch, never elsewhere.
    const auto after = git.run(step.worktree, {"symbolic-ref", "--quiet", "--short", "HEAD"});
    if (!after.succeeded() || autodevs::trim(after.stdout_text) != step.branch) {
      throw wk::Permanent("wrong_branch",
                          "the agent left worktree " + step.worktree.string() + " off branch " + step.branch);
    }

    git.run_checked(step.worktree, {"add", "-A"});
    refuse_escaping_symlinks(tc, git, step, run);
    const std::string message =
        "AutoDevs step " + std::to_string(step_no) + "/" + std::to_string(step.step_count) + ": " +
        step.step_title + "\n\nTask: " + (step.task_title.empty() ? task_id : step.task_title) + "\n\n" +
        std::string(kStepTrailer) + ": " + task_id + "/" + std::to_string(step_no) + "\n";
    // --allow-empty: one commit per step even when the step changed nothing, so the trailer
    // marks it done; --no-verify: repository hooks are not ours to run.
    git.run_checked(step.worktree, {"commit", "-q", "--allow-empty", "--no-verify", "-F", "-"}, message);
    std::string sha = git.run_checked(step.worktree, {"rev-parse", "HEAD"});
    sha = autodevs::trim(sha);
    finish(tc, step, sha, run);
    tc.info("step committed", {{"autodevs_task_id", task_id}, {"step", step_no}, {"commit", sha}});
    return wk::Outcome::ok();
  }

  StepContext load_step(const wk::TaskContext& tc, const std::string& task_id, std::int64_t step_no) const {
    auto task_rows = tc.query("SELECT title, description, status FROM autodevs_tasks WHERE id = $1",
                              {wk::Param::text(task_id)});
    if (task_rows.empty()) throw wk::Permanent("unknown_task", "no task " + task_id + " in autodevs_tasks");
    const std::string status(task_rows.text(0, 2).value_or(""));
    if (status == "failed" || status == "cancelled") {
      throw wk::Permanent("task_finished", "task " + task_id + " is " + status);
    }
    StepContext step;
    step.task_id = task_id;
    step.step_no = step_no;
    step.task_title = std::string(task_rows.text(0, 0).value_or(""));
    step.task_description = std::string(task_rows.text(0, 1).value_or(""));
    auto step_rows = tc.query(
        "SELECT title, instructions, commit_sha, (SELECT max(step_no) FROM autodevs_task_steps WHERE task_id "
        "= $1) "
        "FROM autodevs_task_steps WHERE task_id = $1 AND step_no = $2",
        {wk::Param::text(task_id), wk::Param::int64(step_no)});
    if (step_rows.empty()) {
      throw wk::Permanent("unknown_step", "task " + task_id + " has no step " + std::to_string(step_no));
    }
    step.step_title = std::string(step_rows.text(0, 0).value_or(""));
    step.instructions = std::string(step_rows.text(0, 1).value_or(""));
    if (auto sha = step_rows.text(0, 2)) step.recorded_commit = std::string(*sha);
    step.step_count = step_rows.int64(0, 3).value_or(step_no);
    auto worktree_rows = tc.query(
        "SELECT path, branch, base_commit, COALESCE(host_id, '') FROM autodevs_worktrees WHERE task_id = $1 "
        "AND "
        "removed_at IS NULL",
        {wk::Param::text(task_id)});
    if (worktree_rows.empty() && !step.recorded_commit) {
      throw wk::Permanent("no_worktree",
                          "task " + task_id + " has no active worktree (run worktree:create first)");
    }
    if (!worktree_rows.empty()) {
      step.worktree = std::string(worktree_rows.text(0, 0).value_or(""));
      step.branch = std::string(worktree_rows.text(0, 1).value_or(""));
      if (auto base = worktree_rows.text(0, 2)) step.start_commit = commit_id_or_none(*base);
      step.holder = std::string(worktree_rows.text(0, 3).value_or(""));
    }
    if (step_no > 1) {
      auto previous =
          tc.query("SELECT commit_sha FROM autodevs_task_steps WHERE task_id = $1 AND step_no = $2",
                   {wk::Param::text(task_id), wk::Param::int64(step_no - 1)});
      step.start_commit.reset();
      if (!previous.empty()) {
        if (auto sha = previous.text(0, 0)) step.start_commit = commit_id_or_none(*sha);
      }
    }
    return step;
  }

  static void check_worktree(const autodevs::Git& git, const StepContext& step) {
    std::error_code ec;
    if (!fs::is_directory(step.worktree, ec)) {
      throw wk::Permanent("no_worktree", "worktree " + step.worktree.string() + " does not exist");
    }
    const auto current = git.run(step.worktree, {"symbolic-ref", "--quiet", "--short", "HEAD"});
    if (!current.succeeded() || autodevs::trim(current.stdout_text) != step.branch) {
      throw wk::Permanent("wrong_branch",
                          "worktree " + step.worktree.string() + " is not on branch " + step.branch);
    }
  }

  // The agent gets at most AI_TIMEOUT, and never more than the task has left.
  std::chrono::milliseconds agent_budget(const wk::TaskContext& tc) const {
    const auto remaining = tc.remaining();
    const auto budget = std::min(ai_timeout_, remaining - kFinishMargin);
    if (budget < 1s)
      throw wk::RetryLater(1s, "not enough time left before the task deadline to run the agent");
    return budget;
  }

  AgentRun run_command(const wk::TaskContext& tc, const StepContext& step) const {
    autodevs::SubprocessOptions options;
    options.argv = command_argv_;
    options.cwd = step.worktree;
    options.stdin_data = step.instructions;
    options.env_additions = {{"AUTODEVS_TASK_ID", step.task_id},
                             {"AUTODEVS_STEP", std::to_string(step.step_no)},
                             {"AUTODEVS_STEP_COUNT", std::to_string(step.step_count)},
                             {"AUTODEVS_STEP_TITLE", step.step_title},
                             {"AUTODEVS_WORKTREE", step.worktree.string()},
                             {"GIT_TERMINAL_PROMPT", "0"}};
    options.max_output_bytes = output_limit_;
    options.timeout = agent_budget(tc);
    options.kill_grace = 5s;
    options.cancel_requested = autodevs::cancel_probe(tc);
    autodevs::SubprocessResult result;
    try {
      result = autodevs::run_subprocess(options);
    } catch (const autodevs::SpawnError& e) {
      // Out of processes, memory or descriptors: the host's state, not the command's.
      if (e.transient()) throw wk::RetryLater(30s, e.what());
      throw wk::Permanent("agent_not_startable", e.what());
    }
    AgentRun run;
    run.output = result.stdout_text;
    if (!result.stderr_text.empty()) run.output += (run.output.empty() ? "" : "\n") + result.stderr_text;
    run.truncated = result.stdout_truncated || result.stderr_truncated || run.output.size() > output_limit_;
    if (run.output.size() > output_limit_) run.output.resize(output_limit_);
    if (result.cancelled) throw wk::Cancelled(tc.reason());
    if (!result.succeeded()) {
      store_attempt_output(tc, step, run);
      throw std::runtime_error("agent " + command_argv_.front() + " " + result.describe() + ": " +
                               autodevs::sanitize_utf8(tail(result.stderr_text, 400)));
    }
    return run;
  }

  AgentRun run_openai(const wk::TaskContext& tc, const autodevs::Git& git, const StepContext& step) const {
    std::string files = git.run_checked(step.worktree, {"ls-files"});
    if (files.size() > 20000) files = files.substr(0, 20000) + "\n...";
    const std::vector<autodevs::ChatMessage> messages = {
        {"system", std::string(kDiffSystemPrompt)},
        {"user", "Task: " + step.task_title + "\n\n" + step.task_description + "\n\nStep " +
                     std::to_string(step.step_no) + " of " + std::to_string(step.step_count) + ": " +
                     step.step_title + "\n\n" + step.instructions + "\n\nFiles in the repository:\n" +
                     files}};
    autodevs::ChatEndpoint endpoint = endpoint_;
    endpoint.timeout = agent_budget(tc);
    std::string reply;
    try {
      reply = autodevs::chat_complete(endpoint, messages, autodevs::cancel_probe(tc));
    } catch (const autodevs::HttpCancelled&) {
      throw wk::Cancelled(tc.reason());
    } catch (const autodevs::ChatError& e) {
      autodevs::throw_for_host(e, "ai_rejected");
    }
    AgentRun run;
    run.output = reply.size() > output_limit_ ? reply.substr(0, output_limit_) : reply;
    run.truncated = reply.size() > output_limit_;
    const std::optional<std::string> diff = autodevs::extract_unified_diff(reply);
    if (!diff) return run;  // the model says nothing needs to change
    const auto applied = git.run(step.worktree, {"apply", "--whitespace=nowarn", "--recount"}, *diff);
    if (!applied.succeeded()) {
      store_attempt_output(tc, step, run);
      throw std::runtime_error("the model's diff does not apply: " +
                               autodevs::sanitize_utf8(tail(applied.stderr_text, 400)));
    }
    return run;
  }

  static void reset_to_start(const autodevs::Git& git, const StepContext& step) {
    git.run_checked(step.worktree, {"reset", "-q", "--hard", step.start_commit.value_or("HEAD"), "--"});
    git.run_checked(step.worktree, {"clean", "-q", "-f", "-d"});
  }

  // No commit may carry a symbolic link out of the worktree (`escape -> /etc`, from an agent or a
  // model's diff): a later step writing through it would leave the worktree. Links that stay
  // inside the repository are fine.
  void refuse_escaping_symlinks(const wk::TaskContext& tc, const autodevs::Git& git, const StepContext& step,
                                const AgentRun& run) const {
    // Against the step's start: an agent that commits as it goes has links in its commits too.
    const std::string staged =
        git.run_checked(step.worktree, {"diff", "--cached", "--name-only", "-z", "--no-renames",
                                        "--diff-filter=AMT", step.start_commit.value_or("HEAD"), "--"});
    std::vector<std::string> paths;
    std::istringstream listed(staged);
    for (std::string path; std::getline(listed, path, '\0');) paths.push_back(path);
    if (const auto link = autodevs::find_escaping_symlink(step.worktree, paths)) {
      reset_to_start(git, step);  // the link must not stay on the branch until a retry, either
      store_attempt_output(tc, step, run);
      throw std::runtime_error(
          "the step's change adds a symbolic link out of the worktree, which is refused: " +
          autodevs::sanitize_utf8(*link));
    }
  }

  void store_attempt_output(const wk::TaskContext& tc, const StepContext& step, const AgentRun& run) const {
    tc.query(
        "UPDATE autodevs_task_steps SET status = 'retrying', output = $3, output_truncated = $4, updated_at "
        "= now() "
        "WHERE task_id = $1 AND step_no = $2",
        {wk::Param::text(step.task_id), wk::Param::int64(step.step_no),
         wk::Param::text(autodevs::sanitize_utf8(run.output)), wk::Param::boolean(run.truncated)});
  }

  // Records the commit, then stages the next step or completes the task; one transaction.
  void finish(const wk::TaskContext& tc, const StepContext& step, const std::string& sha,
              const std::optional<AgentRun>& run) const {
    wk::Transaction tx = tc.begin();
    if (run) {
      tx.query(
          "UPDATE autodevs_task_steps SET status = 'done', commit_sha = $3, output = $4, output_truncated = "
          "$5, "
          "finished_at = now(), updated_at = now() WHERE task_id = $1 AND step_no = $2",
          {wk::Param::text(step.task_id), wk::Param::int64(step.step_no), wk::Param::text(sha),
           wk::Param::text(autodevs::sanitize_utf8(run->output)), wk::Param::boolean(run->truncated)});
    } else {
      tx.query(
          "UPDATE autodevs_task_steps SET status = 'done', commit_sha = COALESCE(commit_sha, $3), "
          "finished_at = COALESCE(finished_at, now()), updated_at = now() WHERE task_id = $1 AND step_no = "
          "$2",
          {wk::Param::text(step.task_id), wk::Param::int64(step.step_no), wk::Param::text(sha)});
    }
    const bool last = step.step_no >= step.step_count;
    if (last) {
      tx.query(
          "UPDATE autodevs_tasks SET status = 'completed', completed_at = COALESCE(completed_at, now()), "
          "last_error = NULL, updated_at = now() WHERE id = $1",
          {wk::Param::text(step.task_id)});
    }
    tx.commit();
    if (!last) {
      const nlohmann::json next = {{"task_id", step.task_id}, {"step", step.step_no + 1}};
      tc.enqueue("ai:execute", next.dump(),
                 placement_.step_options()
                     .task_id(autodevs::ai_execute_task_id(step.task_id, step.step_no + 1))
                     .timeout(step_task_timeout_));
    } else {
      tc.info("task completed", {{"autodevs_task_id", step.task_id}, {"steps", step.step_count}});
    }
    nlohmann::json result = {
        {"task_id", step.task_id}, {"step", step.step_no}, {"commit", sha}, {"completed", last}};
    tc.write_result(result.dump());
  }

  // A step whose worktree another machine holds. Sent on to that machine's queue, unless it came
  // from there: then no worker has served that queue for WORKER_HOST_QUEUE_TIMEOUT (the engine
  // let this one take it), the worktree and its uncommitted state are out of reach, and the
  // task fails with the reason (docs/operations.md, "Several machines").
  wk::Outcome hand_to_holder(const wk::TaskContext& tc, const wk::Task& task, const StepContext& step) const {
    const std::string holder_queue = wk::host_queue(step.holder);
    if (task.queue == holder_queue) {
      throw wk::Permanent("worktree_host_lost",
                          "the worktree of task " + step.task_id + " is on machine " + step.holder +
                              ", whose queue " + holder_queue +
                              " no worker has served for WORKER_HOST_QUEUE_TIMEOUT; step " +
                              std::to_string(step.step_no) + " cannot run on " + placement_.host_id);
    }
    autodevs::enqueue_once(tc, "ai:execute", task.payload,
                           wk::EnqueueOptions()
                               .queue(holder_queue)
                               .task_id(autodevs::ai_execute_task_id(step.task_id, step.step_no))
                               .timeout(step_task_timeout_)
                               .immediate());
    tc.info("step sent to the machine holding the worktree",
            {{"autodevs_task_id", step.task_id}, {"step", step.step_no}, {"host_id", step.holder}});
    return wk::Outcome::ok();
  }

  static void mark_failed(const wk::TaskContext& tc, const std::string& task_id, std::int64_t step_no,
                          const std::string& why) {
    try {
      tc.query(
          "UPDATE autodevs_task_steps SET status = 'failed', updated_at = now() WHERE task_id = $1 AND "
          "step_no = $2 "
          "AND commit_sha IS NULL",
          {wk::Param::text(task_id), wk::Param::int64(step_no)});
      tc.query(
          "UPDATE autodevs_tasks SET status = 'failed', last_error = $2, updated_at = now() "
          "WHERE id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')",
          {wk::Param::text(task_id), wk::Param::text(autodevs::sanitize_utf8(why.substr(0, 2000)))});
    } catch (const std::exception& e) {
      tc.warn("could not mark the task failed", {{"autodevs_task_id", task_id}, {"error", e.what()}});
    }
  }

  autodevs::Git make_git(const wk::TaskContext& tc) const {
    autodevs::GitOptions options;
    options.cancel_requested = autodevs::cancel_probe(tc);
    options.env_additions = {{"GIT_AUTHOR_NAME", author_name_},
                             {"GIT_AUTHOR_EMAIL", author_email_},
                             {"GIT_COMMITTER_NAME", author_name_},
                             {"GIT_COMMITTER_EMAIL", author_email_}};
    return autodevs::Git(std::move(options));
  }

  void parse_author(const std::string& author) {
    const auto open = author.find('<');
    const auto close = author.rfind('>');
    if (open == std::string::npos || close == std::string::npos || close < open + 2) {
      throw autodevs::ConfigError("AI_COMMIT_AUTHOR=\"" + author +
                                  "\" is invalid: expected \"Name <email>\"");
    }
    author_name_ = autodevs::trim(std::string_view(author).substr(0, open));
    author_email_ = autodevs::trim(std::string_view(author).substr(open + 1, close - open - 1));
    if (author_name_.empty()) author_name_ = "AutoDevs Worker";
  }

  const char* provider_name() const {
    switch (provider_) {
      case Provider::Command:
        return "command";
      case Provider::OpenAi:
        return "openai";
      case Provider::None:
        break;
    }
    return "none";
  }

  Provider provider_ = Provider::None;
  std::string command_line_;
  std::vector<std::string> command_argv_;
  autodevs::ChatEndpoint endpoint_;
  std::chrono::milliseconds ai_timeout_{30min};
  std::chrono::milliseconds step_task_timeout_{35min};
  autodevs::Placement placement_;
  std::uint64_t output_limit_ = 65536;
  std::string author_name_;
  std::string author_email_;
};

}  // namespace

WK_PLUGIN_BEGIN(AiExecutor, "dev.autodevs.ai", "1.0.0")
WK_HANDLER_OPT("ai:execute", &AiExecutor::execute,
               wk::HandlerOptions().idempotent().long_running().describe("runs one plan step and commits it"))
WK_PLUGIN_END()
