#pragma once
// Runs a child process from an argv (never through a shell), in its own process group, with
// bounded capture of stdout/stderr, optional stdin data, a timeout and cooperative cancellation.
// On timeout or cancellation the whole process group gets SIGTERM, then SIGKILL after a grace,
// so an agent CLI cannot leave grandchildren behind.
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace autodevs {

// Owns one file descriptor; closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  void reset() noexcept;

 private:
  int fd_ = -1;
};

// Prefixes of the worker's settings (docs/configuration.md, "What plugins see").
inline std::vector<std::string> worker_setting_prefixes() {
  return {"REDIS_", "DB_", "WORKER_", "LOG_", "WORKTREE_", "AI_"};
}

struct SubprocessOptions {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH when it has no slash
  std::filesystem::path cwd;      // empty: inherit the host's working directory
  // Variables of the host's environment whose names start with one of these are not passed
  // on. The default drops the worker's own settings (database and Redis credentials,
  // AI_API_KEY, ...): an agent CLI runs model-driven code and must not see them.
  std::vector<std::string> env_drop_prefixes = worker_setting_prefixes();
  // Added to (or overriding) the host's environment; applied after env_drop_prefixes.
  std::vector<std::pair<std::string, std::string>> env_additions;
  std::string stdin_data;                       // written to the child's stdin, then closed
  std::size_t max_output_bytes = 1 << 20;       // per stream; the rest is read and dropped
  std::chrono::milliseconds timeout{0};         // 0: no timeout
  std::chrono::milliseconds kill_grace{2000};   // SIGTERM -> SIGKILL delay
  std::chrono::milliseconds poll_interval{50};  // how often cancel_requested is asked
  // Polled while the child runs; returning true stops it like a timeout does.
  std::function<bool()> cancel_requested;
};

struct SubprocessResult {
  int exit_code = -1;   // valid when exited_normally
  int term_signal = 0;  // the signal that ended the child, if any
  bool exited_normally = false;
  bool timed_out = false;
  bool cancelled = false;
  std::string stdout_text;
  std::string stderr_text;
  bool stdout_truncated = false;
  bool stderr_truncated = false;
  std::chrono::milliseconds elapsed{0};

  bool succeeded() const noexcept { return exited_normally && exit_code == 0 && !timed_out && !cancelled; }
  // "exit code 2", "killed by signal 9", "timed out", "cancelled": for error messages.
  std::string describe() const;
};

// The child could not be started (bad argv, missing program, bad cwd), or the host lacked the
// resources to start it (error_code() EAGAIN, ENOMEM, EMFILE, ENFILE: see transient()).
class SpawnError : public std::runtime_error {
 public:
  explicit SpawnError(const std::string& message, int error_code = 0)
      : std::runtime_error(message), error_code_(error_code) {}
  int error_code() const noexcept { return error_code_; }  // errno of the failing call; 0: none
  // Resource exhaustion (process/thread limit, memory, descriptors): worth retrying later.
  bool transient() const noexcept;

 private:
  int error_code_ = 0;
};

// Whether a spawn (or pipe) failure with this errno is resource exhaustion rather than a
// property of the command: EAGAIN, ENOMEM, EMFILE, ENFILE.
bool is_transient_spawn_errno(int err) noexcept;

// Runs the child to completion (or until timeout/cancellation) and returns what it did.
// Throws SpawnError when the program cannot be started.
SubprocessResult run_subprocess(const SubprocessOptions& options);

}  // namespace autodevs
