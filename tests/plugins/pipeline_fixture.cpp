#include "plugins/pipeline_fixture.hpp"

#include <unistd.h>

#include <fstream>
#include <sstream>

#include "support/child_process.hpp"
#include "support/git_repo.hpp"

namespace pipeline_test {

std::string payload_for(const std::string& task_id) { return R"({"task_id":")" + task_id + R"("})"; }

std::string ExecResult::line(const std::string& label) const {
  auto all = lines(label);
  return all.empty() ? std::string() : all.front();
}

std::vector<std::string> ExecResult::lines(const std::string& label) const {
  std::vector<std::string> found;
  std::istringstream in(out);
  std::string l;
  const std::string prefix = label + ": ";
  while (std::getline(in, l)) {
    if (l.rfind(prefix, 0) == 0) found.push_back(l.substr(prefix.size()));
  }
  return found;
}

void PipelineTest::SetUp() {
  dir_ = fs::temp_directory_path() / ("wk-pipeline-" + std::to_string(::getpid()) + "-" +
                                      ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::remove_all(dir_);
  base_ = dir_ / "worktrees";
  plugins_ = dir_ / "plugins";
  fs::create_directories(base_);
  fs::create_directories(plugins_);
  // Only our three plugins: the build's plugins dir also holds other fixtures.
  for (const char* name : {"autodevs_planning.so", "autodevs_worktree.so", "autodevs_ai.so"}) {
    fs::copy_file(fs::path(wk::test::build_dir()) / "plugins" / name, plugins_ / name);
  }
  std::ofstream(dir_ / "empty.env") << "# settings come from the environment\n";
  const auto pg = wk::test::pg_addr();
  settings_ = {{"DB_HOST", pg.host},
               {"DB_PORT", std::to_string(pg.port)},
               {"DB_USERNAME", pg.user},
               {"DB_NAME", pg.db},
               {"WORKER_METRICS_ADDR", ""},
               {"WORKTREE_BASE_DIR", base_.string()},
               {"WORKTREE_MIN_DISK_SPACE", "0"},
               {"AI_PROVIDER", "command"},
               {"AI_COMMAND", std::string(WK_PIPELINE_SOURCE_DIR) + "/config/agent-example.sh"},
               {"AI_TIMEOUT", "60s"}};
  // Tables exist before the first arrange step: loading any of our plugins migrates them.
  const auto ready = exec("worktree:remove", payload_for(new_uuid()));
  ASSERT_EQ(ready.line("disposition"), "succeeded") << ready.out << ready.err;
}

void PipelineTest::TearDown() {
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

ExecResult PipelineTest::exec(const std::string& type, const std::string& payload,
                              const std::vector<std::pair<std::string, std::string>>& extra_env) {
  std::vector<std::string> argv = {wk::test::worker_binary(),
                                   "--env-file",
                                   (dir_ / "empty.env").string(),
                                   "--plugins",
                                   plugins_.string(),
                                   "exec",
                                   "--type",
                                   type,
                                   "--payload",
                                   payload,
                                   "--timeout",
                                   "120s"};
  // Settings of the developer's shell must not leak in: blank every one we know.
  std::map<std::string, std::string> env;
  for (const char* name :
       {"REDIS_HOST", "REDIS_PORT", "DB_PASSWORD", "WORKTREE_MAX_PATH_LENGTH", "WORKTREE_CLEANUP_INTERVAL",
        "AI_BASE_URL", "AI_API_KEY", "AI_MODEL", "AI_PLANNER"}) {
    env[name] = "";
  }
  for (const auto& [k, v] : settings_) env[k] = v;
  for (const auto& [k, v] : extra_env) env[k] = v;
  auto r = wk::test::run(std::move(argv), wk::test::inherited_env(env), std::chrono::seconds(180));
  return ExecResult{r.exit_code && !r.signaled ? *r.exit_code : -1, r.out, r.err};
}

fs::path PipelineTest::make_repo(const std::string& name) {
  const fs::path repo = dir_ / "repos" / name;
  wk::test::make_repo(repo, name);
  return repo;
}

void PipelineTest::plan_one_step_with_worktree(const std::string& id, const fs::path& repo) {
  insert_task(id, repo, "t", "one step");
  const std::string payload = payload_for(id);
  ASSERT_EQ(exec("planning:task", payload).line("disposition"), "succeeded");
  ASSERT_EQ(exec("worktree:create", payload).line("disposition"), "succeeded");
}

std::string PipelineTest::git(const fs::path& dir, const std::vector<std::string>& args) {
  return wk::test::git(dir, args);
}

std::vector<std::string> PipelineTest::step_commits(const fs::path& repo, const std::string& task_id) {
  const std::string log = git(repo, {"log", "--format=%H", "main..autodevs/" + task_id});
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

void PipelineTest::insert_task(const std::string& id, const fs::path& repo, const std::string& title,
                               const std::string& description, const std::string& status) {
  db_.exec(
      "INSERT INTO autodevs_tasks (id, title, description, repo_path, base_ref, status) VALUES ($1, $2, $3, "
      "$4, 'main', $5)",
      {id, title, description, repo.string(), status});
}

}  // namespace pipeline_test
