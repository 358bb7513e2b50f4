#include "e2e_fixture.hpp"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "support/git_repo.hpp"
#include "support/redis_env.hpp"
#include "support/test_env.hpp"

namespace e2e {

namespace {

wk::redis::Settings redis_settings() { return wk::test::test_redis_settings(kRedisDb); }

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

void E2eTest::SetUp() {
  dir_ = fs::temp_directory_path() / ("wk-e2e-" + std::to_string(::getpid()) + "-" +
                                      ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::remove_all(dir_);
  base_ = dir_ / "worktrees";
  plugins_ = dir_ / "plugins";
  control_ = dir_ / "agent";
  fs::create_directories(base_);
  fs::create_directories(plugins_);
  fs::create_directories(control_);
  fs::permissions(plugins_, fs::perms::owner_all,
                  fs::perm_options::replace);  // the loader refuses g/o-writable dirs
  // Only the shipped plugins: the build's plugins dir may hold other fixtures.
  for (const char* name : {"autodevs_planning.so", "autodevs_worktree.so", "autodevs_ai.so"}) {
    fs::copy_file(fs::path(wk::test::build_dir()) / "plugins" / name, plugins_ / name);
  }
  agent_ = fs::path(WK_E2E_SOURCE_DIR) / "test-agent.sh";
  std::ofstream(dir_ / "empty.env") << "# settings come from the environment\n";
  redis_ = std::make_unique<wk::redis::Connection>(redis_settings());
  redis_->command({"FLUSHDB"});
}

void E2eTest::TearDown() {
  // Agents the test left blocked (orphans of a SIGKILLed worker): kill their process groups.
  for (const char* mode : {"block", "stubborn"}) {
    const std::string pid_text = read_text(control_ / (std::string(mode) + ".pid"));
    if (!pid_text.empty()) {
      const long pid = std::stol(pid_text);
      if (pid > 1) ::kill(-static_cast<pid_t>(pid), SIGKILL);
    }
  }
  if (HasFailure()) {
    std::cerr << "test files kept in " << dir_ << "\n";
  } else {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

std::map<std::string, std::string> E2eTest::worker_env(
    const std::map<std::string, std::string>& extra) const {
  const auto redis = wk::test::redis_addr();
  const auto pg = wk::test::pg_addr();
  std::map<std::string, std::string> env = {
      {"REDIS_HOST", redis.host},
      {"REDIS_PORT", std::to_string(redis.port)},
      {"REDIS_DB", std::to_string(kRedisDb)},
      {"DB_HOST", pg.host},
      {"DB_PORT", std::to_string(pg.port)},
      {"DB_USERNAME", pg.user},
      {"DB_NAME", pg.db},
      {"WORKER_PLUGINS_DIR", plugins_.string()},
      {"WORKER_QUEUES", "planning=6,default=2"},
      {"WORKER_CONCURRENCY", "2"},
      {"WORKER_METRICS_ADDR", ""},
      {"WORKER_SHUTDOWN_TIMEOUT", "10s"},
      // Advanced timings (docs/configuration.md): a due retry is forwarded within 200 ms.
      {"WORKER_FORWARDER_INTERVAL", "200ms"},
      {"WORKTREE_BASE_DIR", base_.string()},
      {"WORKTREE_MIN_DISK_SPACE", "0"},
      {"AI_PROVIDER", "command"},
      {"AI_COMMAND", agent_command()},
      {"AI_TIMEOUT", "60s"},
      {"LANG", "C.UTF-8"},
  };
  // ctest runs every case twice: plugins in runner processes (the default), and in process.
  if (const char* isolation = std::getenv("WK_TEST_ISOLATION")) env["WORKER_ISOLATION"] = isolation;
  for (const auto& [k, v] : extra) env[k] = v;
  return env;
}

std::unique_ptr<wk::test::ChildProcess> E2eTest::start_worker(
    const std::map<std::string, std::string>& extra) {
  auto worker = std::make_unique<wk::test::ChildProcess>(
      std::vector<std::string>{wk::test::worker_binary(), "--env-file", (dir_ / "empty.env").string()},
      wk::test::minimal_env(worker_env(extra)));
  EXPECT_TRUE(worker->await("msg=\"Plugins loaded\"", 30s)) << worker->output();
  EXPECT_NE(worker->output().find("loaded=3 refused=0"), std::string::npos) << worker->output();
  return worker;
}

std::string E2eTest::agent_command(const std::string& mode, int step) const {
  std::string cmd = agent_.string() + " " + control_.string();
  if (mode != "edit") cmd += " " + mode + " " + std::to_string(step);
  return cmd;
}

std::vector<AgentRun> E2eTest::agent_runs() const {
  std::vector<AgentRun> runs;
  std::istringstream in(read_text(control_ / "runs"));
  AgentRun r;
  long long ns = 0;
  while (in >> r.task_id >> r.step >> r.pid >> ns) {
    r.at = std::chrono::nanoseconds(ns);
    runs.push_back(r);
  }
  return runs;
}

int E2eTest::runs_of(int step) const {
  int n = 0;
  for (const auto& r : agent_runs()) n += r.step == step ? 1 : 0;
  return n;
}

std::string E2eTest::enqueue_planning(const std::string& task_id) {
  const auto r = wk::test::run(
      {wk::test::worker_binary(), "--env-file", (dir_ / "empty.env").string(), "enqueue", "--type",
       "planning:task", "--queue", "planning", "--payload", R"({"task_id":")" + task_id + R"("})"},
      wk::test::inherited_env(worker_env({})), 60s);
  EXPECT_TRUE(r.succeeded()) << "worker enqueue: exit " << r.exit_code.value_or(-1) << ": " << r.err;
  std::string id = r.out;
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  EXPECT_FALSE(id.empty());
  return id;
}

fs::path E2eTest::make_repo(const std::string& name) {
  const fs::path repo = dir_ / "repos" / name;
  wk::test::make_repo(repo, name);
  return repo;
}

std::string E2eTest::git(const fs::path& dir, const std::vector<std::string>& args) {
  std::string out = wk::test::git(dir, args);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

void E2eTest::insert_task(const std::string& id, const fs::path& repo, const std::string& title,
                          const std::string& description) {
  db_.exec(
      "INSERT INTO autodevs_tasks (id, title, description, repo_path, base_ref) VALUES ($1, $2, $3, $4, "
      "'main')",
      {id, title, description, repo.string()});
}

std::string E2eTest::task_status(const std::string& id) {
  return db_.scalar("SELECT status FROM autodevs_tasks WHERE id = $1", {id}).value_or("<no task>");
}

std::string E2eTest::await_finished(const std::string& id, std::chrono::milliseconds timeout) {
  wk::test::eventually(
      [&] {
        const auto s = task_status(id);
        return s == "completed" || s == "failed";
      },
      timeout, 50ms);
  return task_status(id);
}

fs::path E2eTest::expect_pipeline_done(const std::string& task_id, const fs::path& repo, int steps,
                                       const fs::path& base_dir) {
  const fs::path base = base_dir.empty() ? base_ : base_dir;
  const std::string branch = "autodevs/" + task_id;
  const fs::path expected = base / repo.filename() / task_id;
  EXPECT_EQ(task_status(task_id), "completed");
  EXPECT_EQ(
      db_.scalar("SELECT path FROM autodevs_worktrees WHERE task_id = $1 AND removed_at IS NULL", {task_id}),
      fs::weakly_canonical(expected).string());
  EXPECT_TRUE(fs::is_directory(expected)) << expected;
  EXPECT_EQ(git(expected, {"symbolic-ref", "--short", "HEAD"}), branch);
  EXPECT_EQ(git(expected, {"status", "--porcelain"}), "") << "the worktree has uncommitted changes";

  // Exactly one worktree for the task: git knows the main checkout and it, nothing else; no
  // second directory appeared under the base.
  const std::string porcelain = git(repo, {"worktree", "list", "--porcelain"});
  std::size_t listed = 0;
  for (auto at = porcelain.find("worktree "); at != std::string::npos;
       at = porcelain.find("\nworktree ", at + 1))
    ++listed;
  EXPECT_EQ(listed, 2u) << porcelain;
  std::size_t dirs = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(base / repo.filename())) ++dirs;
  EXPECT_EQ(dirs, 1u);

  // One commit per step, in order, each recorded in its step row.
  EXPECT_EQ(git(repo, {"rev-list", "--count", "main.." + branch}), std::to_string(steps));
  std::istringstream shas(git(repo, {"rev-list", "--reverse", "main.." + branch}));
  const auto rows = db_.exec(
      "SELECT step_no, status, commit_sha FROM autodevs_task_steps WHERE task_id = $1 ORDER BY step_no",
      {task_id});
  EXPECT_EQ(rows.size(), static_cast<std::size_t>(steps));
  std::string sha;
  for (int n = 1; std::getline(shas, sha); ++n) {
    EXPECT_EQ(git(repo, {"log", "-1", "--format=%(trailers:key=AutoDevs-Step,valueonly)", sha}),
              task_id + "/" + std::to_string(n));
    EXPECT_EQ(git(repo, {"log", "-1", "--format=%s", sha})
                  .rfind("AutoDevs step " + std::to_string(n) + "/" + std::to_string(steps) + ": ", 0),
              0u);
    if (static_cast<std::size_t>(n) <= rows.size()) {
      EXPECT_EQ(rows[n - 1][1], "done");
      EXPECT_EQ(rows[n - 1][2], sha) << "step " << n;
    }
  }
  return expected;
}

long long E2eTest::redis_count(const std::string& type, const std::string& key) {
  return redis_->command({type == "list" ? "LLEN" : "ZCARD", key}).integer();
}

void E2eTest::expect_queues_drained() {
  // The last handler's acknowledgement follows its database commit: await it.
  // The pipeline's queues and every machine's queue (host:<id>) the workers used.
  std::vector<std::string> queues = {"planning", "default"};
  const auto known = redis_->command({"SMEMBERS", "asynq:queues"});
  for (std::size_t i = 0; i < known.size(); ++i) {
    if (std::string(known[i].str()).rfind("host:", 0) == 0) queues.emplace_back(known[i].str());
  }
  const auto drained = [&] {
    long long n = 0;
    for (const std::string& q : queues) {
      n += redis_count("list", "asynq:{" + q + "}:pending") +
           redis_count("list", "asynq:{" + q + "}:active") + redis_count("zset", "asynq:{" + q + "}:retry") +
           redis_count("zset", "asynq:{" + q + "}:archived");
    }
    return n == 0;
  };
  EXPECT_TRUE(wk::test::eventually(drained, 10s, 20ms));
  // What stays scheduled is the worktree plugin's periodic cleanup, nothing of the pipeline.
  for (const std::string& q : queues) {
    const auto scheduled = redis_->command({"ZRANGE", "asynq:{" + q + "}:scheduled", "0", "-1"});
    for (std::size_t i = 0; i < scheduled.size(); ++i) {
      EXPECT_EQ(std::string(scheduled[i].str()).rfind("worktree-cleanup:", 0), 0u) << scheduled[i].str();
    }
  }
}

}  // namespace e2e
