#pragma once
// End-to-end fixture: the real `worker` binary serving the test Redis (DB kRedisDb) and the test
// PostgreSQL with the three shipped plugins, a private git repository, a private worktree base,
// and direct access to Redis and PostgreSQL for arranging and asserting.

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "redis/redis.hpp"
#include "support/child_process.hpp"
#include "support/pg_database.hpp"
#include "task/task.hpp"

namespace e2e {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// The Redis database index these tests own (FLUSHDB'd before each test). The e2e tests share it
// and the queue names, so CTest runs them one at a time (RESOURCE_LOCK in CMakeLists.txt).
inline constexpr int kRedisDb = 8;

using Database = wk::test::Database;

using wk::task::new_uuid;  // task ids for the tests' rows

// One line of the test agent's CONTROL_DIR/runs file.
struct AgentRun {
  std::string task_id;
  int step = 0;
  long pid = 0;
  std::chrono::nanoseconds at{0};  // wall clock, since the epoch
};

class E2eTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // The worker's environment: test services, private dirs, short engine timings; `extra`
  // overrides ("" values included: an empty value is a value for the worker).
  std::map<std::string, std::string> worker_env(const std::map<std::string, std::string>& extra) const;
  // Starts `worker` and waits until it has loaded the three plugins (their migrations ran).
  std::unique_ptr<wk::test::ChildProcess> start_worker(const std::map<std::string, std::string>& extra);
  // AI_COMMAND for the test agent: "<agent> <control> [mode step]".
  std::string agent_command(const std::string& mode = "edit", int step = 0) const;
  std::vector<AgentRun> agent_runs() const;
  int runs_of(int step) const;

  // `worker enqueue` of planning:task on queue planning; returns the asynq task id.
  std::string enqueue_planning(const std::string& task_id);
  fs::path make_repo(const std::string& name);
  std::string git(const fs::path& dir, const std::vector<std::string>& args);
  void insert_task(const std::string& id, const fs::path& repo, const std::string& title,
                   const std::string& description);
  std::string task_status(const std::string& id);
  // Awaits the task reaching `status` (or a terminal status), then returns its status.
  std::string await_finished(const std::string& id, std::chrono::milliseconds timeout);

  // Asserts the finished pipeline: task completed; one worktree at <base>/<repo>/<task_id> on
  // branch autodevs/<task_id>, the only one git knows besides the main checkout and the only
  // directory under <base>/<repo>; exactly `steps` commits on the branch above main, in order,
  // each with the step's trailer and recorded in autodevs_task_steps. Returns the worktree.
  // `base`: the worktree base of the worker that made it (default: base_).
  fs::path expect_pipeline_done(const std::string& task_id, const fs::path& repo, int steps,
                                const fs::path& base = {});
  // Asserts that no task of the pipeline is left in Redis (pending, active, retry, archived).
  void expect_queues_drained();

  long long redis_count(const std::string& type, const std::string& key);

  fs::path dir_;
  fs::path base_;
  fs::path plugins_;
  fs::path control_;
  fs::path agent_;
  std::unique_ptr<wk::redis::Connection> redis_;
  Database db_;
};

}  // namespace e2e
