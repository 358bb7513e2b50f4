// The pipeline across several machines (docs/operations.md, "Several machines"): workers with
// different WORKER_HOST_IDs and different worktree base directories stand in for machines that
// share Redis and PostgreSQL but not their disks.
#include <signal.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <set>

#include "e2e_fixture.hpp"
#include "support/test_env.hpp"

namespace e2e {
namespace {

constexpr const char* kTwoSteps = "Please:\n- add a greeting\n- add a farewell\n";

long read_pid(const fs::path& path) {
  std::ifstream in(path);
  long pid = 0;
  in >> pid;
  return pid;
}

class MachinesTest : public E2eTest {
 protected:
  // A worker standing in for machine `host`: its own host id, name and worktree base.
  std::unique_ptr<wk::test::ChildProcess> start_machine(const std::string& host,
                                                        std::map<std::string, std::string> extra = {}) {
    const fs::path base = machine_base(host);
    fs::create_directories(base);
    extra["WORKER_HOST_ID"] = host;
    extra["WORKER_NAME"] = "worker-" + host;
    extra["WORKTREE_BASE_DIR"] = base.string();
    return start_worker(extra);
  }
  fs::path machine_base(const std::string& host) const { return dir_ / ("machine-" + host); }
  std::string holder(const std::string& task_id) {
    return db_.scalar("SELECT host_id FROM autodevs_worktrees WHERE task_id = $1", {task_id}).value_or("");
  }
  // Starts a two-step pipeline; returns {task id, repository}.
  std::pair<std::string, fs::path> start_pipeline(const std::string& name) {
    const fs::path repo = make_repo(name);
    const std::string id = new_uuid();
    insert_task(id, repo, "Two small changes", kTwoSteps);
    enqueue_planning(id);
    return {id, repo};
  }
};

// Two machines, 20 pipelines: each pipeline's steps run on the machine that created its
// worktree (its host queue), are committed there, and none is run or even sent on by the other.
// Machine A alone takes the first ten; the other ten arrive while A's slots are busy with its
// own steps (its host queue comes first, each step takes half a second), so B takes them.
TEST_F(MachinesTest, EveryStepRunsOnTheMachineHoldingItsWorktree) {
  const std::map<std::string, std::string> busy = {{"AI_COMMAND", agent_command("pace")}};
  auto a = start_machine("machine-a", busy);
  std::vector<std::pair<std::string, fs::path>> pipelines;
  pipelines.reserve(20);
  for (int i = 0; i < 10; ++i) pipelines.push_back(start_pipeline("repo-a" + std::to_string(i)));
  ASSERT_TRUE(wk::test::eventually(
      [&] {
        return std::all_of(pipelines.begin(), pipelines.end(),
                           [&](const auto& p) { return !holder(p.first).empty(); });
      },
      60s))
      << a->output();
  auto b = start_machine("machine-b", busy);
  for (int i = 0; i < 10; ++i) pipelines.push_back(start_pipeline("repo-b" + std::to_string(i)));
  std::map<std::string, int> per_machine;
  for (const auto& [id, repo] : pipelines) {
    ASSERT_EQ(await_finished(id, 120s), "completed") << a->output() << b->output();
    const std::string host = holder(id);
    ASSERT_TRUE(host == "machine-a" || host == "machine-b") << host;
    ++per_machine[host];
    expect_pipeline_done(id, repo, 2, machine_base(host));
    auto& other = host == "machine-a" ? b : a;
    EXPECT_EQ(other->count_lines({"step committed", "autodevs_task_id=" + id}), 0) << other->output();
  }
  expect_queues_drained();
  EXPECT_EQ(a->count_lines({"step sent to the machine holding the worktree"}) +
                b->count_lines({"step sent to the machine holding the worktree"}),
            0);
  // Both machines held worktrees: the affinity was tested, not a single machine's pipeline.
  std::cout << "[machines] worktrees on machine-a: " << per_machine["machine-a"]
            << ", on machine-b: " << per_machine["machine-b"] << "\n";
  EXPECT_GE(per_machine["machine-a"], 10);
  EXPECT_GT(per_machine["machine-b"], 0) << b->output();
}

// The machine holding a worktree is killed for good while its agent runs step 2. Once no worker
// has served its queue for WORKER_HOST_QUEUE_TIMEOUT, the other machine takes the queue over;
// the step's handler finds the worktree out of reach and fails the task with the reason; nothing
// of the dead machine's queue stays pending or active.
TEST_F(MachinesTest, AMachineGoneForGoodHasItsWaitingStepFailedWithTheReason) {
  const std::map<std::string, std::string> timings = {{"WORKER_LEASE", "2s"},
                                                      {"WORKER_HEARTBEAT_INTERVAL", "500ms"},
                                                      {"WORKER_RECOVERER_INTERVAL", "500ms"},
                                                      {"WORKER_RECOVERER_CUTOFF", "0s"},
                                                      {"WORKER_RETRY_DELAY", "1s"},
                                                      {"WORKER_HOST_QUEUE_TIMEOUT", "2s"},
                                                      {"AI_COMMAND", agent_command("block", 2)}};
  auto a = start_machine("machine-a", timings);
  const auto [id, repo] = start_pipeline("gone");
  ASSERT_TRUE(wk::test::eventually([&] { return read_pid(control_ / "block.pid") > 0; }, 60s, 20ms))
      << a->output();
  EXPECT_EQ(a->kill(), 128 + SIGKILL);
  ASSERT_EQ(::kill(-static_cast<pid_t>(read_pid(control_ / "block.pid")), SIGKILL), 0);
  EXPECT_EQ(redis_count("list", "asynq:{host:machine-a}:active"), 1);

  auto b = start_machine("machine-b", timings);
  ASSERT_EQ(await_finished(id, 60s), "failed") << b->output();
  EXPECT_TRUE(b->await("Taking over the queue of a machine no worker serves", 1s)) << b->output();
  const std::string error =
      db_.scalar("SELECT last_error FROM autodevs_tasks WHERE id = $1", {id}).value_or("");
  EXPECT_NE(error.find("is on machine machine-a"), std::string::npos) << error;
  EXPECT_NE(error.find("host:machine-a"), std::string::npos) << error;
  EXPECT_EQ(db_.scalar("SELECT status FROM autodevs_task_steps WHERE task_id = $1 AND step_no = 2", {id}),
            "failed");
  // The step ended in the dead machine's archive, where asynq's tools list it; nothing waits.
  EXPECT_TRUE(
      wk::test::eventually([&] { return redis_count("zset", "asynq:{host:machine-a}:archived") == 1; }));
  EXPECT_EQ(redis_count("list", "asynq:{host:machine-a}:pending"), 0);
  EXPECT_EQ(redis_count("list", "asynq:{host:machine-a}:active"), 0);
  EXPECT_EQ(redis_count("zset", "asynq:{host:machine-a}:retry"), 0);
  // Machine B's disk was never touched for it.
  EXPECT_FALSE(fs::exists(machine_base("machine-b") / repo.filename() / id));
}

// Each machine cleans its own finished worktrees within an interval (2 s here), and only its
// own: the other machine's worktrees stay until their machine removes them.
TEST_F(MachinesTest, EachMachineCleansItsOwnFinishedWorktrees) {
  const std::map<std::string, std::string> cleanup = {{"WORKTREE_CLEANUP_INTERVAL", "2s"}};
  std::vector<std::string> on_a;
  std::vector<std::string> on_b;
  on_a.reserve(2);
  on_b.reserve(2);
  {
    // Machine A alone makes two worktrees, then stops for a while (its worktrees stay).
    auto a = start_machine("machine-a", cleanup);
    for (int i = 0; i < 2; ++i) on_a.push_back(start_pipeline("a-" + std::to_string(i)).first);
    for (const auto& id : on_a) ASSERT_EQ(await_finished(id, 60s), "completed") << a->output();
    EXPECT_EQ(a->stop(15s), 0) << a->output();
  }
  auto b = start_machine("machine-b", cleanup);
  for (int i = 0; i < 2; ++i) on_b.push_back(start_pipeline("b-" + std::to_string(i)).first);
  for (const auto& id : on_b) ASSERT_EQ(await_finished(id, 60s), "completed") << b->output();
  const auto removed = [&](const std::string& id) {
    return db_.scalar("SELECT removed_at IS NOT NULL FROM autodevs_worktrees WHERE task_id = $1", {id}) ==
           "t";
  };
  // B cleans its own; A's stay while A is away.
  for (const auto& id : on_b)
    EXPECT_TRUE(wk::test::eventually([&] { return removed(id); }, 10s)) << b->output();
  for (const auto& id : on_a) EXPECT_FALSE(removed(id)) << "machine B removed machine A's worktree";
  // A back: it cleans its own within an interval or two of its start.
  auto a = start_machine("machine-a", cleanup);
  for (const auto& id : on_a)
    EXPECT_TRUE(wk::test::eventually([&] { return removed(id); }, 10s)) << a->output();
  for (const auto& id : on_a) {
    EXPECT_EQ(b->count_lines({"worktree removed", "autodevs_task_id=" + id}), 0) << b->output();
  }
  for (const auto& id : on_b) {
    EXPECT_EQ(a->count_lines({"worktree removed", "autodevs_task_id=" + id}), 0) << a->output();
  }
  for (const auto& base : {machine_base("machine-a"), machine_base("machine-b")}) {
    std::size_t left = 0;
    for (const auto& repo_dir : fs::directory_iterator(base)) {
      for ([[maybe_unused]] const auto& entry : fs::directory_iterator(repo_dir.path())) ++left;
    }
    EXPECT_EQ(left, 0u) << base;
  }
}

// WORKTREE_SHARED=true (one disk for all workers): no host queue is used, any worker takes any
// step, and the pipeline completes as on one machine.
TEST_F(MachinesTest, WithASharedDiskAnyWorkerTakesAnyStep) {
  const std::map<std::string, std::string> shared = {{"WORKTREE_SHARED", "true"},
                                                     {"WORKER_CONCURRENCY", "4"}};
  auto a = start_worker([&] {
    auto env = shared;
    env["WORKER_HOST_ID"] = "machine-a";
    env["WORKER_NAME"] = "worker-a";
    return env;
  }());
  auto b = start_worker([&] {
    auto env = shared;
    env["WORKER_HOST_ID"] = "machine-b";
    env["WORKER_NAME"] = "worker-b";
    return env;
  }());
  std::vector<std::pair<std::string, fs::path>> pipelines;
  pipelines.reserve(6);
  for (int i = 0; i < 6; ++i) pipelines.push_back(start_pipeline("shared-" + std::to_string(i)));
  for (const auto& [id, repo] : pipelines) {
    ASSERT_EQ(await_finished(id, 60s), "completed") << a->output() << b->output();
    expect_pipeline_done(id, repo, 2);
  }
  expect_queues_drained();
  // Nothing went to a machine's queue.
  const auto queues = redis_->command({"SMEMBERS", "asynq:queues"});
  for (size_t i = 0; i < queues.size(); ++i)
    EXPECT_EQ(std::string(queues[i].str()).rfind("host:", 0), std::string::npos);
}

}  // namespace
}  // namespace e2e
