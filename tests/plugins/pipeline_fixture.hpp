#pragma once
// Shared fixture of the shipped plugins' tests (tests/plugins/*), which run them through
// `worker exec` (no Redis): a private plugins dir with the three .so files, a private worktree
// base, a git repository, and direct SQL access to the test database for arranging and
// asserting rows.

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/pg_database.hpp"
#include "support/test_env.hpp"
#include "task/task.hpp"

namespace pipeline_test {

namespace fs = std::filesystem;

using Database = wk::test::Database;

struct ExecResult {
  int exit_code = -1;
  std::string out;  // disposition:, error:, result:, staged:, enqueued: lines
  std::string err;  // the worker's log
  std::string line(const std::string& label) const;  // value of the first "label: ..." line
  std::vector<std::string> lines(const std::string& label) const;
};

using wk::task::new_uuid;  // task ids for the tests' rows

// A description planning turns into three steps.
inline constexpr const char* kBulleted =
    "Make the README friendlier.\n"
    "- Add a greeting section\n"
    "- Document the build\n"
    "1. Mention the licence\n";

// The payload of every step of the pipeline: {"task_id": ...}.
std::string payload_for(const std::string& task_id);

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // `worker exec` with the test's settings plus `extra_env` ("NAME=value").
  ExecResult exec(const std::string& type, const std::string& payload,
                  const std::vector<std::pair<std::string, std::string>>& extra_env = {});
  // A repository with one commit on main; returns its path.
  fs::path make_repo(const std::string& name);
  // git -C dir args...; stdout, failing the test on a non-zero exit.
  std::string git(const fs::path& dir, const std::vector<std::string>& args);
  // Inserts a task row.
  void insert_task(const std::string& id, const fs::path& repo, const std::string& title,
                   const std::string& description, const std::string& status = "pending");
  // insert_task with one step, then planning:task and worktree:create through `exec`: a task
  // ready for ai:execute step 1. Fails the test (fatally) when either does not succeed.
  void plan_one_step_with_worktree(const std::string& id, const fs::path& repo);
  // Commits on the task's branch that are not on main, newest first.
  std::vector<std::string> step_commits(const fs::path& repo, const std::string& task_id);

  fs::path dir_;
  fs::path base_;
  fs::path plugins_;
  std::map<std::string, std::string> settings_;
  Database db_;
};

}  // namespace pipeline_test
