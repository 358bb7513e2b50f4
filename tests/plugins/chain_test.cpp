// The three shipped plugins in order through `worker exec`: planning -> worktree -> every step
// -> completed, with one commit per step.
#include <filesystem>
#include <fstream>

#include "plugins/pipeline_fixture.hpp"

namespace pipeline_test {
namespace {

class PipelineChain : public PipelineTest {};

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
  const auto shas = step_commits(repo, id);
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
