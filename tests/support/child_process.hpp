#pragma once
// Child processes of a test (the real `worker` binary, a server, a script): argv only (no shell),
// an explicit environment, stdout and stderr captured by a reader thread so a test can await a
// line at any time, signals, graceful stop (SIGTERM, then SIGKILL after a grace) or a hard kill,
// and RAII: the destructor SIGKILLs and reaps a child that is still running and joins the reader.
// Also the small things every process test needs: a private temp dir, a free port, environments.
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace wk::test {

// A directory of our own under the temp dir (mode 0700), removed with everything in it.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// A loopback TCP port that nobody listened on a moment ago.
int free_port();

// Environments ("KEY=VALUE" lists) for a child:
// this process's environment with `overrides` replacing or adding variables;
std::vector<std::string> inherited_env(const std::map<std::string, std::string>& overrides);
// this process's environment without any worker setting (REDIS_, DB_, WORKER_, LOG_, WORKTREE_,
// AI_), so the developer's settings never leak into a test, plus `settings`;
std::vector<std::string> worker_env(const std::map<std::string, std::string>& settings);
// exactly `env` plus PATH, HOME and the sanitizer options of this process.
std::vector<std::string> minimal_env(const std::map<std::string, std::string>& env);
// <build>/bin/worker
std::string worker_binary();

class ChildProcess {
 public:
  enum class Stream { out, err, both };

  // Spawns argv[0] (a path, or a name looked up in PATH) with exactly `env`, stdin from
  // /dev/null, default signal dispositions, an empty signal mask and its own process group.
  // Throws std::runtime_error when the child cannot be started.
  ChildProcess(std::vector<std::string> argv, std::vector<std::string> env);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const noexcept { return pid_; }
  // Sends `signo` unless the child was reaped already.
  void signal(int signo);
  // SIGTERM, then wait up to `grace` for the exit; SIGKILL after that. Returns the exit code, or
  // 128 + signal when the child was killed by a signal.
  int stop(std::chrono::milliseconds grace);
  // SIGKILL now and reap (the child never runs its shutdown); returns like stop().
  int kill();
  // Waits up to `timeout` for the child to exit and its output to be read; returns the exit code
  // (128 + signal when killed) or nullopt on timeout.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  bool running();
  // After the exit: whether a signal ended the child.
  bool signaled() const noexcept;

  // Waits until the captured output of `stream` contains `needle` (true), or `timeout` passes or
  // the child closes its output without it (false).
  bool await(std::string_view needle, std::chrono::milliseconds timeout, Stream stream = Stream::both);
  // Waits until an output line contains every one of `needles`; returns that line.
  std::optional<std::string> await_line(const std::vector<std::string>& needles,
                                        std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // How many times `needle` occurs in the output so far (both streams).
  std::size_t count(std::string_view needle) const;
  // Lines (so far) that contain every one of `needles`.
  int count_lines(const std::vector<std::string>& needles) const;

  // Everything the child wrote so far, stdout and stderr interleaved as they arrived.
  std::string output() const;
  std::string out() const;  // stdout only
  std::string err() const;  // stderr only

 private:
  void read_output(int out_fd, int err_fd);
  int exit_code() const;

  pid_t pid_ = -1;
  int status_ = -1;         // waitpid status once reaped
  int wake_[2] = {-1, -1};  // self-pipe: tells the reader to stop
  std::thread reader_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string output_;
  std::string stream_[2];   // stdout, stderr
  std::string partial_[2];  // an unfinished line of each stream
  std::vector<std::string> lines_;
  bool eof_ = false;
};

// Runs a child to its end (SIGKILL after `timeout`) and returns what it wrote.
struct RunResult {
  std::optional<int> exit_code;  // nullopt: killed after the timeout
  bool signaled = false;         // a signal ended it (exit_code is 128 + signal)
  std::string out;
  std::string err;
  bool succeeded() const { return exit_code == 0 && !signaled; }
};
RunResult run(std::vector<std::string> argv, std::vector<std::string> env, std::chrono::milliseconds timeout);

}  // namespace wk::test
