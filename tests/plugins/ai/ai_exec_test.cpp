// ai:execute through `worker exec` against the test PostgreSQL: the command agent and an
// OpenAI-compatible endpoint on loopback.
#include <httplib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "plugins/pipeline_fixture.hpp"

namespace pipeline_test {
namespace {

class AiExec : public PipelineTest {};

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

  const auto shas = step_commits(repo, id);
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
  EXPECT_TRUE(step_commits(repo, id).empty());
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
    EXPECT_TRUE(step_commits(repo, id).empty());  // the agent's own commit is undone
    EXPECT_FALSE(fs::exists(fs::symlink_status(fs::canonical(base_) / "symlink-agent-repo" / id / "sub")));
  }
  const auto kept =
      exec("ai:execute", payload, {{"AI_COMMAND", "sh -c 'mkdir sub && ln -s ../README.md sub/in'"}});
  ASSERT_EQ(kept.line("disposition"), "succeeded") << kept.out << kept.err;
  EXPECT_EQ(step_commits(repo, id).size(), 1u);
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
  EXPECT_TRUE(step_commits(repo, id).empty());
  EXPECT_FALSE(db_.scalar("SELECT commit_sha FROM autodevs_task_steps WHERE task_id = $1", {id}).has_value());
}

}  // namespace
}  // namespace pipeline_test
