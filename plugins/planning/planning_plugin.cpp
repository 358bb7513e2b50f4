// planning:task {"task_id": "<uuid>"} on queue "planning".
//
// Reads the task, turns it into ordered steps (the OpenAI-compatible planner when configured,
// else the deterministic one), stores them and marks the task `planned` in one transaction,
// then stages worktree:create with the deterministic id worktree-create:<task_id>.
// Idempotent: a task that already has steps is not planned again; the follow-up is re-staged
// (asynq refuses the duplicate id if it was published before).
#include <wk_sdk.hpp>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "autodevs/chat.hpp"
#include "autodevs/pipeline.hpp"
#include "autodevs/sdk_glue.hpp"
#include "autodevs/text.hpp"

namespace {

using namespace std::chrono_literals;

constexpr std::string_view kPlannerSystemPrompt =
    "You are the planner of an automated software engineering pipeline. Split the task into a "
    "short ordered list of concrete implementation steps; each step is executed by a coding "
    "agent in the repository, one commit per step. Reply with JSON only, no prose, exactly in "
    "this shape: {\"steps\": [{\"title\": \"<short title>\", \"instructions\": \"<what to change>\"}]}";

struct TaskRow {
  std::string title;
  std::string description;
  std::string status;
};

class Planning {
 public:
  explicit Planning(wk::Context& ctx) {
    // AI_PLANNER: "auto" (default) uses the AI provider when AI_PROVIDER=openai, else the
    // deterministic planner; "deterministic" or "openai" force one.
    const std::string planner = autodevs::config_string(ctx, "AI_PLANNER", "auto");
    const std::string provider = autodevs::config_string(ctx, "AI_PROVIDER", "");
    if (planner == "openai" || (planner == "auto" && provider == "openai")) {
      use_ai_ = true;
    } else if (planner != "auto" && planner != "deterministic") {
      throw autodevs::ConfigError("AI_PLANNER=\"" + planner +
                                  "\" is invalid: expected auto, deterministic or openai");
    }
    endpoint_.base_url = autodevs::config_string(ctx, "AI_BASE_URL", "https://api.openai.com/v1");
    endpoint_.model = autodevs::config_string(ctx, "AI_MODEL", "gpt-4o-mini");
    endpoint_.api_key = autodevs::config_string(ctx, "AI_API_KEY", "");
    endpoint_.timeout = autodevs::ai_timeout(ctx);
    autodevs::migrate_shared_schema(ctx);
    ctx.info("planning plugin ready", {{"planner", use_ai_ ? "openai" : "deterministic"}});
  }

  wk::Outcome plan(wk::TaskContext& tc, const wk::Task& task) {
    const nlohmann::json payload = autodevs::payload_or_permanent(task);
    const std::string task_id =
        autodevs::payload_field([&] { return autodevs::required_uuid(payload, "task_id"); });

    const TaskRow row = load_task(tc, task_id);
    if (row.status == "completed" || row.status == "failed" || row.status == "cancelled") {
      tc.info("task already finished; nothing to plan",
              {{"autodevs_task_id", task_id}, {"status", row.status}});
      return wk::Outcome::ok();
    }
    if (count_steps(tc, task_id) > 0) {
      tc.info("task already planned; re-staging worktree:create", {{"autodevs_task_id", task_id}});
      stage_worktree(tc, task_id);
      return wk::Outcome::ok();
    }

    std::string planner_used;
    std::vector<autodevs::PlannedStep> steps;
    if (use_ai_) {
      steps = plan_with_ai(tc, row);
      planner_used = "openai:" + endpoint_.model;
    } else {
      steps = autodevs::plan_steps_from_description(row.title, row.description);
      planner_used = "deterministic";
    }
    tc.throw_if_cancelled();

    wk::Transaction tx = tc.begin();
    // Row lock: two deliveries of the same task (a lease expired mid-run) serialise here, and
    // the second one sees the first one's steps.
    auto locked =
        tx.query("SELECT status FROM autodevs_tasks WHERE id = $1 FOR UPDATE", {wk::Param::text(task_id)});
    if (locked.empty())
      throw wk::Permanent("unknown_task", "task " + task_id + " was deleted while planning");
    auto existing =
        tx.query("SELECT count(*) FROM autodevs_task_steps WHERE task_id = $1", {wk::Param::text(task_id)});
    if (existing.int64(0, 0).value_or(0) == 0) {
      for (std::size_t i = 0; i < steps.size(); ++i) {
        tx.query(
            "INSERT INTO autodevs_task_steps (task_id, step_no, title, instructions, status) "
            "VALUES ($1, $2, $3, $4, 'pending')",
            {wk::Param::text(task_id), wk::Param::int64(static_cast<std::int64_t>(i + 1)),
             wk::Param::text(steps[i].title), wk::Param::text(steps[i].instructions)});
      }
      tx.query(
          "UPDATE autodevs_tasks SET status = 'planned', planner = $2, last_error = NULL, updated_at = now() "
          "WHERE id = $1",
          {wk::Param::text(task_id), wk::Param::text(planner_used)});
      tx.commit();
    } else {
      tx.rollback();
    }

    stage_worktree(tc, task_id);
    nlohmann::json result = {{"task_id", task_id}, {"steps", steps.size()}, {"planner", planner_used}};
    tc.write_result(result.dump());
    tc.info("task planned",
            {{"autodevs_task_id", task_id}, {"steps", steps.size()}, {"planner", planner_used}});
    return wk::Outcome::ok();
  }

 private:
  static TaskRow load_task(const wk::TaskContext& tc, const std::string& task_id) {
    auto rows = tc.query("SELECT title, description, status FROM autodevs_tasks WHERE id = $1",
                         {wk::Param::text(task_id)});
    if (rows.empty()) throw wk::Permanent("unknown_task", "no task " + task_id + " in autodevs_tasks");
    return TaskRow{std::string(rows.text(0, 0).value_or("")), std::string(rows.text(0, 1).value_or("")),
                   std::string(rows.text(0, 2).value_or(""))};
  }

  static std::int64_t count_steps(const wk::TaskContext& tc, const std::string& task_id) {
    auto rows =
        tc.query("SELECT count(*) FROM autodevs_task_steps WHERE task_id = $1", {wk::Param::text(task_id)});
    return rows.int64(0, 0).value_or(0);
  }

  static void stage_worktree(const wk::TaskContext& tc, const std::string& task_id) {
    const nlohmann::json follow_up = {{"task_id", task_id}};
    tc.enqueue("worktree:create", follow_up.dump(),
               wk::EnqueueOptions()
                   .queue(autodevs::kPipelineQueue)
                   .task_id(autodevs::worktree_create_task_id(task_id)));
  }

  std::vector<autodevs::PlannedStep> plan_with_ai(const wk::TaskContext& tc, const TaskRow& row) const {
    const std::vector<autodevs::ChatMessage> messages = {
        {"system", std::string(kPlannerSystemPrompt)},
        {"user", "Task title: " + row.title + "\n\nTask description:\n" + row.description}};
    autodevs::ChatEndpoint endpoint = endpoint_;
    endpoint.timeout =
        std::min(endpoint.timeout, std::max(tc.remaining() - 5s, std::chrono::milliseconds(1000)));
    try {
      return autodevs::parse_planned_steps(
          autodevs::chat_complete(endpoint, messages, autodevs::cancel_probe(tc)));
    } catch (const autodevs::HttpCancelled&) {
      throw wk::Cancelled(tc.reason());
    } catch (const autodevs::ChatError& e) {
      autodevs::throw_for_host(e, "planner_rejected");
    }
  }

  bool use_ai_ = false;
  autodevs::ChatEndpoint endpoint_;
};

}  // namespace

WK_PLUGIN_BEGIN(Planning, "dev.autodevs.planning", "1.0.0")
WK_HANDLER_OPT("planning:task", &Planning::plan,
               wk::HandlerOptions().idempotent().describe("plans a task into ordered steps"))
WK_PLUGIN_END()
