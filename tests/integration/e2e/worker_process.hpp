#pragma once
// The real `worker` binary as a child process of a test: argv only (no shell), an explicit
// environment, stdout+stderr captured by a reader thread so the test can await a log line at any
// time, graceful stop (SIGTERM, then SIGKILL after a grace) or a hard kill, and RAII: the
// destructor SIGKILLs and reaps a child that is still running and joins the reader.
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace e2e {

class WorkerProcess {
 public:
  // Spawns argv[0] (a path) with exactly `env` plus PATH, HOME and the sanitizer options of this
  // process. Throws std::runtime_error when the child cannot be started.
  WorkerProcess(std::vector<std::string> argv, const std::map<std::string, std::string>& env);
  ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  pid_t pid() const noexcept { return pid_; }

  // Waits until the captured output contains `needle` (true), or `timeout` passes or the child
  // closes its output without it (false).
  bool await_log(std::string_view needle, std::chrono::milliseconds timeout);
  // Everything the child wrote so far (stderr and stdout interleaved as they arrived).
  std::string log() const;
  // How many times `needle` occurs in the output so far.
  std::size_t count(std::string_view needle) const;

  // SIGTERM, then wait up to `grace` for the exit; SIGKILL after that. Returns the exit code, or
  // 128 + signal when the child was killed by a signal.
  int stop(std::chrono::milliseconds grace);
  // SIGKILL now and reap; returns like stop().
  int kill();
  bool running() const noexcept { return status_ < 0; }

 private:
  void read_output();
  // Waits up to `timeout` for the child to exit; true when it was reaped.
  bool wait_exit(std::chrono::milliseconds timeout);
  int exit_code() const;

  pid_t pid_ = -1;
  int status_ = -1;            // waitpid status once reaped
  int out_fd_ = -1;            // read end of the child's stdout/stderr pipe
  int wake_fd_[2] = {-1, -1};  // self-pipe: tells the reader to stop
  std::thread reader_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string output_;
  bool eof_ = false;
};

}  // namespace e2e
