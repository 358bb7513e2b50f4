// The whole pipeline through Redis (docs/plugins.md): a task row in PostgreSQL, planning:task
// enqueued in asynq's layout by `worker enqueue`, the real `worker` binary serving the queues
// with the three shipped plugins, and the result checked in PostgreSQL, git and Redis.
#include <signal.h>

#include <cerrno>
#include <fstream>

#include "e2e_fixture.hpp"
#include "fake_openai.hpp"
#include "support/test_env.hpp"

namespace e2e {
namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

long read_pid(const fs::path& path) {
  const std::string text = read_file(path);
  return text.empty() ? 0 : std::stol(text);
}

TEST_F(E2eTest, CommandAgentRunsEveryStepThroughRedis) {
  auto worker = start_worker({});
  const fs::path repo = make_repo("alpha");
  const std::string id = new_uuid();
  insert_task(id, repo, "Three small changes",
              "Please:\n- add a greeting\n- add a farewell\n- add a signature\n");
  const std::string queued = enqueue_planning(id);
  EXPECT_EQ(queued.size(), 36u) << "asynq ids are UUIDs: " << queued;

  ASSERT_EQ(await_finished(id, 60s), "completed") << worker->output();
  const fs::path worktree = expect_pipeline_done(id, repo, 3);
  expect_queues_drained();

  EXPECT_EQ(db_.scalar("SELECT planner FROM autodevs_tasks WHERE id = $1", {id}), "deterministic");
  // The agent ran once per step, in the worktree, and its edits are what was committed.
  EXPECT_EQ(runs_of(1), 1);
  EXPECT_EQ(runs_of(2), 1);
  EXPECT_EQ(runs_of(3), 1);
  const std::string notes = read_file(worktree / "STEPS.md");
  EXPECT_NE(notes.find("## Step 1 of 3: add a greeting"), std::string::npos) << notes;
  EXPECT_NE(notes.find("## Step 3 of 3: add a signature"), std::string::npos) << notes;
  EXPECT_EQ(git(repo, {"show", "--format=", "--name-only", "autodevs/" + id + "~2"}), "STEPS.md");
  // The worker logged the asynq tasks it processed, with their ids.
  EXPECT_NE(worker->output().find("task_id=" + queued), std::string::npos);

  EXPECT_EQ(worker->stop(15s), 0) << worker->output();
  EXPECT_NE(worker->output().find("msg=\"Worker stopped\""), std::string::npos);
}

TEST_F(E2eTest, OpenAiPlannerAndDiffsThroughRedis) {
  FakeOpenAi server(FakeOpenAi::Script{});
  auto worker = start_worker({{"AI_PROVIDER", "openai"},
                              {"AI_COMMAND", ""},
                              {"AI_BASE_URL", server.base_url()},
                              {"AI_MODEL", "e2e-model"},
                              {"AI_API_KEY", "sk-e2e-secret-key"}});
  const fs::path repo = make_repo("beta");
  const std::string id = new_uuid();
  insert_task(id, repo, "Two files", "Add two files.");
  enqueue_planning(id);

  ASSERT_EQ(await_finished(id, 60s), "completed") << worker->output();
  const fs::path worktree = expect_pipeline_done(id, repo, 2);
  expect_queues_drained();

  // The planner asked the endpoint (JSON steps), each step applied the model's diff.
  EXPECT_EQ(db_.scalar("SELECT planner FROM autodevs_tasks WHERE id = $1", {id}), "openai:e2e-model");
  EXPECT_EQ(
      db_.scalar("SELECT string_agg(title, '|' ORDER BY step_no) FROM autodevs_task_steps WHERE task_id = $1",
                 {id}),
      "Add the first file|Add the second file");
  EXPECT_EQ(read_file(worktree / "step-1.txt"), FakeOpenAi::file_content(1) + "\n");
  EXPECT_EQ(read_file(worktree / "step-2.txt"), FakeOpenAi::file_content(2) + "\n");
  EXPECT_EQ(git(repo, {"show", "--format=", "--name-only", "autodevs/" + id + "~1"}), "step-1.txt");
  EXPECT_EQ(git(repo, {"show", "--format=", "--name-only", "autodevs/" + id}), "step-2.txt");

  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[0].kind, "planner");
  EXPECT_EQ(requests[1].step, 1);
  EXPECT_EQ(requests[2].step, 2);
  for (const auto& r : requests) {
    EXPECT_EQ(r.authorization, "Bearer sk-e2e-secret-key");
    EXPECT_EQ(r.model, "e2e-model");
  }
  EXPECT_EQ(worker->output().find("sk-e2e-secret-key"), std::string::npos)
      << "the API key leaked into the log";
}

TEST_F(E2eTest, OpenAiRateLimitIsRetriedNoEarlierThanRetryAfter) {
  FakeOpenAi::Script script;
  script.throttle_step = 1;
  script.throttle_count = 1;
  script.retry_after_seconds = 2;
  FakeOpenAi server(script);
  auto worker = start_worker({{"AI_PROVIDER", "openai"},
                              {"AI_COMMAND", ""},
                              {"AI_BASE_URL", server.base_url()},
                              {"AI_MODEL", "e2e-model"}});
  const fs::path repo = make_repo("gamma");
  const std::string id = new_uuid();
  insert_task(id, repo, "Two files", "Add two files.");
  enqueue_planning(id);

  ASSERT_EQ(await_finished(id, 60s), "completed") << worker->output();
  expect_pipeline_done(id, repo, 2);
  expect_queues_drained();

  std::vector<ChatRequest> step1;
  for (const auto& r : server.requests()) {
    if (r.kind == "step" && r.step == 1) step1.push_back(r);
  }
  ASSERT_EQ(step1.size(), 2u);
  EXPECT_EQ(step1[0].status, 429);
  EXPECT_EQ(step1[1].status, 200);
  // The retry came no earlier than Retry-After (2 s) after the 429, and because of it: asynq's
  // default backoff for a first retry is at least 15 s (whole-second scores and the forwarder
  // add up to about a second; the rest of the bound is room for a loaded machine).
  EXPECT_GE(step1[1].at - step1[0].at, std::chrono::seconds(2));
  EXPECT_LT(step1[1].at - step1[0].at, std::chrono::seconds(12));
  EXPECT_EQ(db_.scalar("SELECT attempts FROM autodevs_task_steps WHERE task_id = $1 AND step_no = 1", {id}),
            "2");
  EXPECT_NE(worker->output().find("HTTP 429"), std::string::npos) << worker->output();
}

// Backpressure across the fleet: the provider answers a step with 429 and Retry-After: 2. The
// worker that got it pauses ai:execute in Redis; pipelines started meanwhile on either worker
// reach their steps and wait (parked), and no step request reaches the provider until the 2 s
// are over; then both workers resume and every pipeline completes. The throttled step is
// retried no earlier than Retry-After, without an attempt counted in asynq.
TEST_F(E2eTest, RateLimitPausesTheStepTypeOnEveryWorker) {
  FakeOpenAi::Script script;
  script.throttle_step = 1;
  script.throttle_count = 1;
  script.retry_after_seconds = 2;
  FakeOpenAi server(script);
  const auto settings = [&](const std::string& name) {
    return std::map<std::string, std::string>{
        {"AI_PROVIDER", "openai"}, {"AI_COMMAND", ""},    {"AI_BASE_URL", server.base_url()},
        {"AI_MODEL", "e2e-model"}, {"WORKER_NAME", name}, {"LOG_LEVEL", "info"}};
  };
  auto host_a = start_worker(settings("host-a"));
  auto host_b = start_worker(settings("host-b"));
  std::vector<std::string> ids;
  const auto start_pipeline = [&](const std::string& name) {
    const fs::path repo = make_repo(name);
    ids.push_back(new_uuid());
    insert_task(ids.back(), repo, "Two files", "Add two files.");
    enqueue_planning(ids.back());
  };
  start_pipeline("first");
  std::chrono::system_clock::time_point throttled_at{};
  ASSERT_TRUE(wk::test::eventually(
      [&] {
        for (const auto& r : server.requests()) {
          if (r.status == 429) throttled_at = r.at;
        }
        return throttled_at != std::chrono::system_clock::time_point{};
      },
      60s, 5ms))
      << host_a->output() << host_b->output();
  // Pipelines started during the pause: planning runs (its type is not paused), their steps wait.
  for (int i = 0; i < 5; ++i) start_pipeline("during-" + std::to_string(i));
  for (const auto& id : ids) {
    ASSERT_EQ(await_finished(id, 90s), "completed") << host_a->output() << host_b->output();
  }
  expect_queues_drained();

  int steps_after_pause = 0;
  for (const auto& r : server.requests()) {
    if (r.kind != "step" || r.at <= throttled_at) continue;
    // The pause began after the 429 went out and lasts 2 s from then.
    EXPECT_GE(r.at - throttled_at, 2s) << "a step request reached the provider during the pause";
    ++steps_after_pause;
  }
  EXPECT_EQ(steps_after_pause, 12) << "both steps of all six pipelines (the throttled step again)";
  // Tasks of the paused type were dequeued meanwhile and parked (by one worker or both).
  EXPECT_GT(host_a->count_lines({"Task type throttled", "task_type=ai:execute", "reason=paused"}) +
                host_b->count_lines({"Task type throttled", "task_type=ai:execute", "reason=paused"}),
            0)
      << host_a->output() << host_b->output();
  EXPECT_EQ(host_a->count_lines({"Task type paused across the fleet", "task_type=ai:execute"}) +
                host_b->count_lines({"Task type paused across the fleet", "task_type=ai:execute"}),
            1);
}

// SIGKILL of the host while the agent of step 2 runs; a second host recovers the task once the
// lease has expired and finishes the pipeline: no second worktree, no duplicate commit, no step
// run twice except the interrupted one, and the interrupted attempt's partial edit is dropped.
TEST_F(E2eTest, SigkillMidStepAnotherHostFinishesWithoutDuplicates) {
  const std::map<std::string, std::string> timings = {
      {"WORKER_LEASE", "2s"},  // the lease host A writes: expires 2 s after its death
      {"WORKER_HEARTBEAT_INTERVAL", "500ms"},
      {"WORKER_RECOVERER_INTERVAL", "500ms"},  // host B looks for expired leases twice a second
      {"WORKER_RECOVERER_CUTOFF", "0s"},
      {"WORKER_RETRY_DELAY", "1s"},
      {"WORKER_HOST_ID", "this-machine"},  // two workers of one machine: one host queue
      {"AI_COMMAND", agent_command("block", 2)}};
  auto host_a = start_worker([&] {
    auto env = timings;
    env["WORKER_NAME"] = "host-a";
    return env;
  }());
  const fs::path repo = make_repo("delta");
  const std::string id = new_uuid();
  insert_task(id, repo, "Three steps", "1. first\n2. second\n3. third\n");
  enqueue_planning(id);

  // Host A is inside step 2: the agent left a partial edit and blocks.
  ASSERT_TRUE(wk::test::eventually([&] { return read_pid(control_ / "block.pid") > 0; }, 60s, 20ms))
      << host_a->output();
  const fs::path worktree = base_ / repo.filename() / id;
  EXPECT_TRUE(fs::exists(worktree / "partial-edit.txt"));
  EXPECT_EQ(redis_count("list", "asynq:{host:this-machine}:active"), 1);

  EXPECT_EQ(host_a->kill(), 128 + SIGKILL);
  // The orphaned agent is not the host's to clean up any more; stop it as a crash would.
  const long agent_pid = read_pid(control_ / "block.pid");
  ASSERT_EQ(::kill(-static_cast<pid_t>(agent_pid), SIGKILL), 0);
  // The dead host's task is still active in Redis, with its lease.
  EXPECT_EQ(redis_count("list", "asynq:{host:this-machine}:active"), 1);
  EXPECT_EQ(task_status(id), "in_progress");

  auto host_b = start_worker([&] {
    auto env = timings;
    env["WORKER_NAME"] = "host-b";
    return env;
  }());
  EXPECT_TRUE(host_b->await("Recovering a task whose lease expired", 30s)) << host_b->output();
  ASSERT_EQ(await_finished(id, 60s), "completed") << host_b->output();
  expect_pipeline_done(id, repo, 3);
  expect_queues_drained();

  EXPECT_EQ(runs_of(1), 1);
  EXPECT_EQ(runs_of(2), 2);  // the killed attempt and the recovered one
  EXPECT_EQ(runs_of(3), 1);  // step 3 was staged once
  EXPECT_EQ(db_.scalar("SELECT attempts FROM autodevs_task_steps WHERE task_id = $1 AND step_no = 2", {id}),
            "2");
  EXPECT_FALSE(fs::exists(worktree / "partial-edit.txt"));
  EXPECT_EQ(git(repo, {"log", "--format=", "--name-only", "main..autodevs/" + id}).find("partial-edit.txt"),
            std::string::npos);
  // Planning and the worktree were done by host A only.
  EXPECT_EQ(host_b->count("task_type=planning:task"), 0u) << host_b->output();
  EXPECT_EQ(host_b->count("task_type=worktree:create"), 0u) << host_b->output();
  EXPECT_EQ(host_b->stop(15s), 0) << host_b->output();
}

// An agent that ignores SIGTERM: at AI_TIMEOUT its process group gets SIGTERM, then SIGKILL after
// the 5 s grace; the attempt fails and the task is retried, and the retry completes the step.
TEST_F(E2eTest, AgentIgnoringSigtermIsKilledAtItsTimeoutAndRetried) {
  auto worker = start_worker(
      {{"AI_TIMEOUT", "2s"}, {"WORKER_RETRY_DELAY", "1s"}, {"AI_COMMAND", agent_command("stubborn", 1)}});
  const fs::path repo = make_repo("epsilon");
  const std::string id = new_uuid();
  insert_task(id, repo, "One step", "Just one thing to do.");
  enqueue_planning(id);

  ASSERT_TRUE(wk::test::eventually([&] { return read_pid(control_ / "stubborn.pid") > 0; }, 60s, 20ms))
      << worker->output();
  const long stubborn = read_pid(control_ / "stubborn.pid");

  ASSERT_EQ(await_finished(id, 60s), "completed") << worker->output();
  expect_pipeline_done(id, repo, 1);
  expect_queues_drained();

  // The stubborn agent is gone (killed and reaped), the retry ran the step again.
  EXPECT_EQ(::kill(static_cast<pid_t>(stubborn), 0), -1);
  EXPECT_EQ(errno, ESRCH);
  const auto runs = agent_runs();
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].step, 1);
  EXPECT_EQ(runs[1].step, 1);
  // Not before AI_TIMEOUT (2 s) plus the SIGTERM -> SIGKILL grace (5 s).
  EXPECT_GE(runs[1].at - runs[0].at, std::chrono::seconds(7));
  EXPECT_EQ(db_.scalar("SELECT attempts FROM autodevs_task_steps WHERE task_id = $1 AND step_no = 1", {id}),
            "2");
  const std::string log = worker->output();
  EXPECT_NE(log.find("Task failed; will retry"), std::string::npos) << log;
  EXPECT_NE(log.find("timed out"), std::string::npos) << log;
  EXPECT_EQ(worker->stop(15s), 0) << log;
}

}  // namespace
}  // namespace e2e
