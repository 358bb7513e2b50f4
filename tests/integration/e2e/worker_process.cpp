#include "worker_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace e2e {

namespace {

void close_fd(int& fd) noexcept {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// posix_spawn's C structures, destroyed on every path.
struct SpawnSetup {
  posix_spawn_file_actions_t actions{};
  posix_spawnattr_t attr{};
  SpawnSetup() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;
};

}  // namespace

WorkerProcess::WorkerProcess(std::vector<std::string> argv, const std::map<std::string, std::string>& env) {
  if (argv.empty()) throw std::invalid_argument("WorkerProcess: empty argv");
  int out_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0)
    throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  if (::pipe2(wake_fd_, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  }

  std::map<std::string, std::string> full = env;
  for (const char* inherited : {"PATH", "HOME", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"}) {
    if (const char* v = std::getenv(inherited); v != nullptr && full.count(inherited) == 0)
      full[inherited] = v;
  }
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : full) env_strings.push_back(k + "=" + v);
  std::vector<char*> c_argv;
  for (auto& a : argv) c_argv.push_back(a.data());
  c_argv.push_back(nullptr);
  std::vector<char*> c_env;
  for (auto& e : env_strings) c_env.push_back(e.data());
  c_env.push_back(nullptr);

  int rc = 0;
  {
    SpawnSetup spawn;
    posix_spawn_file_actions_addopen(&spawn.actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&spawn.actions, out_pipe[1], 1);
    posix_spawn_file_actions_adddup2(&spawn.actions, out_pipe[1], 2);
    // Default signal dispositions and an empty mask, whatever the test runner set; its own
    // process group, so a terminal's Ctrl-C reaches the test only (the destructor cleans up).
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&spawn.attr, &none);
    sigset_t defaults;
    sigemptyset(&defaults);
    for (int s : {SIGTERM, SIGINT, SIGHUP, SIGPIPE}) sigaddset(&defaults, s);
    posix_spawnattr_setsigdefault(&spawn.attr, &defaults);
    posix_spawnattr_setpgroup(&spawn.attr, 0);
    posix_spawnattr_setflags(&spawn.attr,
                             POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
    rc = ::posix_spawn(&pid_, c_argv[0], &spawn.actions, &spawn.attr, c_argv.data(), c_env.data());
  }
  ::close(out_pipe[1]);
  out_fd_ = out_pipe[0];
  if (rc != 0) {
    pid_ = -1;
    close_fd(out_fd_);
    close_fd(wake_fd_[0]);
    close_fd(wake_fd_[1]);
    throw std::runtime_error("posix_spawn " + argv.front() + ": " + std::strerror(rc));
  }
  reader_ = std::thread([this] { read_output(); });
}

WorkerProcess::~WorkerProcess() {
  if (pid_ > 0 && status_ < 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    status_ = status;
  }
  if (wake_fd_[1] >= 0) {
    const char byte = 1;
    [[maybe_unused]] const auto n = ::write(wake_fd_[1], &byte, 1);
  }
  if (reader_.joinable()) reader_.join();
  close_fd(out_fd_);
  close_fd(wake_fd_[0]);
  close_fd(wake_fd_[1]);
}

void WorkerProcess::read_output() {
  char buf[8192];
  while (true) {
    pollfd fds[2] = {{out_fd_, POLLIN, 0}, {wake_fd_[0], POLLIN, 0}};
    const int n = ::poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if ((fds[1].revents & POLLIN) != 0) break;
    if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
    const ssize_t got = ::read(out_fd_, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    {
      std::lock_guard lock(mu_);
      output_.append(buf, static_cast<std::size_t>(got));
    }
    cv_.notify_all();
  }
  {
    std::lock_guard lock(mu_);
    eof_ = true;
  }
  cv_.notify_all();
}

bool WorkerProcess::await_log(std::string_view needle, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return output_.find(needle) != std::string::npos || eof_; }) &&
         output_.find(needle) != std::string::npos;
}

std::string WorkerProcess::log() const {
  std::lock_guard lock(mu_);
  return output_;
}

std::size_t WorkerProcess::count(std::string_view needle) const {
  std::lock_guard lock(mu_);
  std::size_t n = 0;
  for (auto at = output_.find(needle); at != std::string::npos; at = output_.find(needle, at + needle.size()))
    ++n;
  return n;
}

bool WorkerProcess::wait_exit(std::chrono::milliseconds timeout) {
  if (status_ >= 0) return true;
  // The child's end of the output pipe closes when it exits (its own children run with their own
  // pipes), so the reader's EOF is the event to await; waitpid(WNOHANG) confirms it.
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      status_ = status;
      return true;
    }
    if (r < 0 && errno != EINTR) return false;
    const auto now = std::chrono::steady_clock::now();
    if (now >= until) return false;
    std::unique_lock lock(mu_);
    // Woken by EOF; the short bound covers the moment between EOF and the exit being reapable.
    const auto step =
        std::min<std::chrono::steady_clock::duration>(until - now, std::chrono::milliseconds(eof_ ? 2 : 50));
    if (eof_) {
      cv_.wait_for(lock, step);
    } else {
      cv_.wait_for(lock, step, [&] { return eof_; });
    }
  }
}

int WorkerProcess::exit_code() const {
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
  return -1;
}

int WorkerProcess::stop(std::chrono::milliseconds grace) {
  if (status_ < 0) {
    ::kill(pid_, SIGTERM);
    if (!wait_exit(grace)) return kill();
  }
  return exit_code();
}

int WorkerProcess::kill() {
  if (status_ < 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    status_ = status;
  }
  return exit_code();
}

}  // namespace e2e
