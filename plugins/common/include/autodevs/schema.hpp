#pragma once
// The tables of the shipped plugins. The three plugins work on one model (a task, its steps,
// its worktree), so they share ONE schema: each plugin registers the same versioned
// migrations under its own plugin id, and every statement is idempotent. Whichever plugin
// loads first creates the tables; the others find them. The migration takes its own
// transaction-level advisory lock first, so workers starting at once (each migrating a
// different plugin under a different per-plugin lock) cannot race on CREATE TABLE.
// Documented for operators in docs/plugins.md. New versions are appended, never edited.
#include <cstdint>
#include <string_view>

namespace autodevs::schema {

// Arbitrary but fixed: the ASCII bytes of "autodevs"; the SQL below spells it in decimal.
inline constexpr std::int64_t kSchemaLockKey = 0x6175746f64657673;  // "autodevs"

inline constexpr std::string_view kMigrationV1Name = "autodevs tasks, steps and worktrees";
inline constexpr std::string_view kMigrationV1Sql = R"sql(
SELECT pg_advisory_xact_lock(7022647215728719475);

CREATE TABLE IF NOT EXISTS autodevs_tasks (
  id            uuid PRIMARY KEY,
  title         text NOT NULL DEFAULT '',
  description   text NOT NULL DEFAULT '',
  repo_path     text NOT NULL,
  base_ref      text NOT NULL DEFAULT 'HEAD',
  status        text NOT NULL DEFAULT 'pending',
  planner       text,
  last_error    text,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  completed_at  timestamptz
);
CREATE INDEX IF NOT EXISTS autodevs_tasks_status_updated ON autodevs_tasks (status, updated_at);

CREATE TABLE IF NOT EXISTS autodevs_task_steps (
  task_id       uuid NOT NULL REFERENCES autodevs_tasks (id) ON DELETE CASCADE,
  step_no       integer NOT NULL CHECK (step_no > 0),
  title         text NOT NULL,
  instructions  text NOT NULL,
  status        text NOT NULL DEFAULT 'pending',
  commit_sha    text,
  output        text,
  output_truncated boolean NOT NULL DEFAULT false,
  attempts      integer NOT NULL DEFAULT 0,
  started_at    timestamptz,
  finished_at   timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (task_id, step_no)
);

CREATE TABLE IF NOT EXISTS autodevs_worktrees (
  task_id       uuid PRIMARY KEY,
  repo_path     text NOT NULL,
  path          text NOT NULL,
  branch        text NOT NULL,
  base_commit   text,
  created_at    timestamptz NOT NULL DEFAULT now(),
  removed_at    timestamptz
);
CREATE INDEX IF NOT EXISTS autodevs_worktrees_active ON autodevs_worktrees (repo_path) WHERE removed_at IS NULL;
)sql";

// Which machine holds each worktree (WORKER_HOST_ID of the worker that created it): its steps
// run there (docs/plugins.md, "Several machines"). NULL for worktrees made before.
inline constexpr std::string_view kMigrationV2Name = "autodevs worktree host";
inline constexpr std::string_view kMigrationV2Sql = R"sql(
SELECT pg_advisory_xact_lock(7022647215728719475);
ALTER TABLE autodevs_worktrees ADD COLUMN IF NOT EXISTS host_id text;
)sql";

}  // namespace autodevs::schema
