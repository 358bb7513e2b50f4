#pragma once
// Building blocks of the process-level fault tests: the real `worker` binary as a child process
// (environment in, stderr lines out, signals, RAII reap), a private redis-server that a test may
// stop and restart on the same port with its data (appendonly), a temporary directory, and
// readers of the asynq keys a test asserts on. Argv only, never a shell.
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "asynq/messages.hpp"
#include "redis/redis.hpp"
#include "task/task.hpp"

namespace wk::faults {

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

// A loopback TCP port that was free a moment ago.
int free_port();

// The `worker` binary running as a child. Its stdout and stderr are read by a thread into a
// list of lines as they arrive, so a test can await a log line while it watches Redis.
class WorkerProcess {
 public:
  // argv[0] is the program path; env is the complete environment ("KEY=VALUE").
  WorkerProcess(std::vector<std::string> argv, std::vector<std::string> env);
  ~WorkerProcess();  // SIGKILL if still running, reap, join the reader
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  int pid() const { return pid_; }
  void signal(int signo);
  // SIGKILL and reap at once (the child never runs its shutdown).
  void kill_now();
  // Waits up to `timeout` for the child to exit; returns its exit code (128 + signal when
  // killed) or nullopt on timeout. Output read before the exit stays available.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  bool running();

  // Waits until a stderr line contains every one of `needles`; returns that line.
  std::optional<std::string> await_line(const std::vector<std::string>& needles,
                                        std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  // Lines (so far) that contain every one of `needles`.
  int count_lines(const std::vector<std::string>& needles) const;
  // Everything read so far from stdout and stderr, for failure messages.
  std::string output() const;

 private:
  void read_loop(int out_fd, int err_fd);

  int pid_ = -1;
  std::optional<int> status_;
  int wake_[2] = {-1, -1};  // self-pipe that ends the reader
  std::thread reader_;
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
  std::string partial_[2];
};

// The environment of this process without any worker settings (REDIS_, DB_, WORKER_, LOG_,
// WORKTREE_, AI_), plus `settings` (which replace inherited variables of the same name).
std::vector<std::string> worker_env(const std::map<std::string, std::string>& settings);
// <build>/bin/worker
std::string worker_binary();

// A private redis-server on a free loopback port with appendonly persistence in `dir`, so a
// stop() (SIGTERM: the server flushes its AOF) and start() keep every key.
class RedisServer {
 public:
  explicit RedisServer(std::filesystem::path dir);
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;
  void start();  // returns once the server answers PING
  void stop();   // SIGTERM and reap
  int port() const { return port_; }
  redis::Settings settings() const;
  redis::Connection connect() const { return redis::Connection(settings()); }

 private:
  std::filesystem::path dir_;
  int port_ = 0;
  int pid_ = -1;
};

// Publishes a task the way an asynq client does (the host's own producer code).
std::string enqueue(const redis::Settings& redis, task::EnqueueRequest request);

// Views of one queue's keys.
struct QueueView {
  redis::Connection& conn;
  std::string queue;

  std::vector<std::string> list(const std::string& which) const;  // pending, active (LRANGE 0 -1)
  std::vector<std::string> zset(const std::string& which) const;  // retry, archived, completed...
  // HGET of the task hash; nullopt when the hash or field is absent.
  std::optional<std::string> field(const std::string& id, const std::string& name) const;
  std::optional<asynq::TaskMessage> message(const std::string& id) const;
  bool exists(const std::string& id) const;
};

}  // namespace wk::faults
