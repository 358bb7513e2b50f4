// planning:task through `worker exec` against the test PostgreSQL: bullets become steps and
// worktree:create is staged; malformed payloads are archived naming the field.

#include "plugins/pipeline_fixture.hpp"

namespace pipeline_test {
namespace {

class PlanningExec : public PipelineTest {};

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

}  // namespace
}  // namespace pipeline_test
