#pragma once
// Running the git CLI: always `git -C <dir> <args...>` from an argv (no shell), with
// GIT_TERMINAL_PROMPT=0 so a credential prompt can never hang a worker, and LC_ALL=C so
// messages are stable. Callers put `--` before any path or ref that comes from input.
#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "autodevs/subprocess.hpp"

namespace autodevs {

class GitError : public std::runtime_error {
 public:
  GitError(const std::string& message, SubprocessResult result)
      : std::runtime_error(message), result_(std::move(result)) {}
  const SubprocessResult& result() const noexcept { return result_; }

 private:
  SubprocessResult result_;
};

struct GitOptions {
  std::string program = "git";
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  std::function<bool()> cancel_requested;
  // Called after every command (WORKTREE_ENABLE_LOGGING): the argv, what happened, and whether
  // it was a probe (is_repository, resolve_commit), for which a non-zero exit is an answer
  // ("no such ref"), not a failure.
  std::function<void(const std::vector<std::string>& argv, const SubprocessResult& result, bool probe)>
      observer;
  std::vector<std::pair<std::string, std::string>> env_additions;
};

class Git {
 public:
  explicit Git(GitOptions options = {}) : options_(std::move(options)) {}

  // Runs `git -C dir args...`; never throws for a non-zero exit (inspect the result).
  // Throws SpawnError when git cannot be started.
  SubprocessResult run(const std::filesystem::path& dir, const std::vector<std::string>& args,
                       const std::string& stdin_data = {}) const;
  // Like run(), but a non-zero exit, timeout or cancellation throws GitError carrying the
  // command and the tail of stderr. Returns stdout.
  std::string run_checked(const std::filesystem::path& dir, const std::vector<std::string>& args,
                          const std::string& stdin_data = {}) const;

  // True when `dir` is inside a git work tree or is a git directory.
  bool is_repository(const std::filesystem::path& dir) const;
  // The commit a ref resolves to, or nullopt.
  std::optional<std::string> resolve_commit(const std::filesystem::path& dir, const std::string& ref) const;

 private:
  SubprocessResult run_command(const std::filesystem::path& dir, const std::vector<std::string>& args,
                               const std::string& stdin_data, bool probe) const;
  GitOptions options_;
};

struct WorktreeEntry {
  std::filesystem::path path;
  std::string head;    // commit sha
  std::string branch;  // "refs/heads/..." or empty when detached
  bool bare = false;
  bool prunable = false;
};

// Parses `git worktree list --porcelain -z` (git >= 2.36; use -z: without it a path with a
// newline reads as two lines), or the output without -z.
std::vector<WorktreeEntry> parse_worktree_list(const std::string& porcelain);

// Rejects refs that git could read as options or that are not plausible ref names.
bool is_safe_ref_name(const std::string& ref) noexcept;

}  // namespace autodevs
