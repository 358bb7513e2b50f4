#include "autodevs/subprocess.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <string_view>

extern char** environ;

namespace autodevs {
namespace {

using Clock = std::chrono::steady_clock;

std::string errno_text(int err) { return std::strerror(err); }

// Both ends close-on-exec: the child only sees what posix_spawn dup2()s onto 0/1/2.
std::pair<UniqueFd, UniqueFd> make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    const int err = errno;
    throw SpawnError("pipe2 failed: " + errno_text(err), err);
  }
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

// RAII over the spawn attribute objects, which own memory in glibc.
struct SpawnAttributes {
  posix_spawnattr_t attr{};
  posix_spawn_file_actions_t actions{};
  SpawnAttributes() {
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_init(&actions);
  }
  ~SpawnAttributes() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
  SpawnAttributes(const SpawnAttributes&) = delete;
  SpawnAttributes& operator=(const SpawnAttributes&) = delete;
};

// Owns a spawned child: unless it was reaped, destruction kills its whole process group and
// reaps it, so no exit path (exception included) leaves a running agent or a zombie behind.
class ChildProcess {
 public:
  explicit ChildProcess(pid_t pid) noexcept : pid_(pid) {
    // A pidfd becomes readable when the child exits, so poll() wakes at once instead of
    // waiting for the next tick. Old kernels: fall back to ticking.
    // glibc 2.36's <sys/pidfd.h> lacks extern "C" for C++, so the raw syscall is used.
    pidfd_ = UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() {
    if (!reaped_) {
      signal_group(SIGKILL);
      int status = 0;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
  }

  int pidfd() const noexcept { return pidfd_.get(); }

  // The child is its own process-group leader (pgid == pid). While it is not reaped the pid
  // cannot be recycled, so signalling -pid reaches only its group.
  void signal_group(int sig) const noexcept { ::kill(-pid_, sig); }

  // True once the leader has exited; leaves it a zombie (WNOWAIT) so the group id stays ours.
  bool has_exited() const noexcept {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0) return false;
    return info.si_pid == pid_;
  }

  int reap() noexcept {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
    return status;
  }

 private:
  pid_t pid_;
  UniqueFd pidfd_;
  bool reaped_ = false;
};

// Writes without letting SIGPIPE kill the host when the child closed its stdin early: the
// signal is blocked for this thread during the write and a pending one is consumed.
ssize_t write_without_sigpipe(int fd, const char* data, std::size_t size) {
  sigset_t pipe_only;
  sigset_t previous;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, &previous);
  const ssize_t written = ::write(fd, data, size);
  const int saved_errno = errno;
  if (written < 0 && saved_errno == EPIPE) {
    const timespec no_wait{};
    while (sigtimedwait(&pipe_only, nullptr, &no_wait) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  errno = saved_errno;
  return written;
}

struct CaptureStream {
  UniqueFd fd;
  std::string* text;
  bool* truncated;
  std::size_t limit;

  // Reads what is available; returns false at EOF or on a hard error.
  bool read_available() {
    std::array<char, 65536> buffer{};
    while (true) {
      const ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
      if (n > 0) {
        const std::size_t room = limit > text->size() ? limit - text->size() : 0;
        const std::size_t keep = std::min(room, static_cast<std::size_t>(n));
        text->append(buffer.data(), keep);
        if (keep < static_cast<std::size_t>(n)) *truncated = true;
        continue;
      }
      if (n == 0) return false;
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK;
    }
  }
};

std::vector<std::string> merged_environment(
    const std::vector<std::string>& drop_prefixes,
    const std::vector<std::pair<std::string, std::string>>& additions) {
  std::map<std::string, std::string> variables;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    std::string_view text(*entry);
    const auto eq = text.find('=');
    if (eq == std::string_view::npos) continue;
    const std::string_view name = text.substr(0, eq);
    if (std::any_of(drop_prefixes.begin(), drop_prefixes.end(),
                    [name](const std::string& prefix) { return name.starts_with(prefix); })) {
      continue;
    }
    variables[std::string(text.substr(0, eq))] = std::string(text.substr(eq + 1));
  }
  for (const auto& [name, value] : additions) variables[name] = value;
  std::vector<std::string> result;
  result.reserve(variables.size());
  for (const auto& [name, value] : variables) result.push_back(std::string(name).append("=").append(value));
  return result;
}

int poll_timeout_ms(Clock::time_point now, Clock::time_point until, std::chrono::milliseconds cap) {
  if (until == Clock::time_point::max()) return static_cast<int>(cap.count());
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - now);
  return static_cast<int>(std::clamp<std::int64_t>(left.count() + 1, 0, cap.count()));
}

}  // namespace

void UniqueFd::reset() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool is_transient_spawn_errno(int err) noexcept {
  return err == EAGAIN || err == ENOMEM || err == EMFILE || err == ENFILE;
}

bool SpawnError::transient() const noexcept { return is_transient_spawn_errno(error_code_); }

std::string SubprocessResult::describe() const {
  if (timed_out) return "timed out";
  if (cancelled) return "cancelled";
  if (exited_normally) return "exit code " + std::to_string(exit_code);
  if (term_signal != 0) return "killed by signal " + std::to_string(term_signal);
  return "did not finish";
}

SubprocessResult run_subprocess(const SubprocessOptions& options) {
  if (options.argv.empty() || options.argv.front().empty()) throw SpawnError("empty argv");

  auto [stdin_read, stdin_write] = make_pipe();
  auto [stdout_read, stdout_write] = make_pipe();
  auto [stderr_read, stderr_write] = make_pipe();

  SpawnAttributes spawn;
  posix_spawn_file_actions_adddup2(&spawn.actions, stdin_read.get(), STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&spawn.actions, stdout_write.get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&spawn.actions, stderr_write.get(), STDERR_FILENO);
  if (!options.cwd.empty()) {
    posix_spawn_file_actions_addchdir_np(&spawn.actions, options.cwd.c_str());
  }
  // Host descriptors without O_CLOEXEC (sockets, log files) must not leak into agents.
  posix_spawn_file_actions_addclosefrom_np(&spawn.actions, STDERR_FILENO + 1);

  // Own process group (so the whole tree can be signalled), an empty signal mask and default
  // dispositions: host threads may block or ignore signals the child must honour.
  sigset_t empty_mask;
  sigemptyset(&empty_mask);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM}) {
    sigaddset(&defaults, sig);
  }
  posix_spawnattr_setflags(&spawn.attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&spawn.attr, 0);
  posix_spawnattr_setsigmask(&spawn.attr, &empty_mask);
  posix_spawnattr_setsigdefault(&spawn.attr, &defaults);

  std::vector<char*> argv;
  argv.reserve(options.argv.size() + 1);
  for (const auto& arg : options.argv) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> environment = merged_environment(options.env_drop_prefixes, options.env_additions);
  std::vector<char*> envp;
  envp.reserve(environment.size() + 1);
  for (auto& entry : environment) envp.push_back(entry.data());
  envp.push_back(nullptr);

  const auto started = Clock::now();
  pid_t pid = -1;
  const int spawn_rc = ::posix_spawnp(&pid, argv[0], &spawn.actions, &spawn.attr, argv.data(), envp.data());
  if (spawn_rc != 0) {
    throw SpawnError("cannot start " + options.argv.front() + ": " + errno_text(spawn_rc), spawn_rc);
  }
  ChildProcess child(pid);
  stdin_read.reset();
  stdout_write.reset();
  stderr_write.reset();

  SubprocessResult result;
  CaptureStream out{std::move(stdout_read), &result.stdout_text, &result.stdout_truncated,
                    options.max_output_bytes};
  CaptureStream err{std::move(stderr_read), &result.stderr_text, &result.stderr_truncated,
                    options.max_output_bytes};
  set_nonblocking(out.fd.get());
  set_nonblocking(err.fd.get());
  set_nonblocking(stdin_write.get());
  std::size_t stdin_offset = 0;
  if (options.stdin_data.empty()) stdin_write.reset();

  const auto deadline = options.timeout.count() > 0 ? started + options.timeout : Clock::time_point::max();
  auto kill_at = Clock::time_point::max();  // set once SIGTERM was sent
  bool terminating = false;

  // Phase 1: run until the leader exits, feeding stdin and draining output.
  while (!child.has_exited()) {
    const auto now = Clock::now();
    if (!terminating) {
      if (now >= deadline) {
        result.timed_out = true;
      } else if (options.cancel_requested && options.cancel_requested()) {
        result.cancelled = true;
      }
      if (result.timed_out || result.cancelled) {
        terminating = true;
        child.signal_group(SIGTERM);
        kill_at = now + options.kill_grace;
      }
    } else if (now >= kill_at) {
      child.signal_group(SIGKILL);
      kill_at = Clock::time_point::max();
    }

    std::array<pollfd, 4> fds{};
    std::size_t count = 0;
    if (out.fd.valid()) fds[count++] = {out.fd.get(), POLLIN, 0};
    if (err.fd.valid()) fds[count++] = {err.fd.get(), POLLIN, 0};
    if (stdin_write.valid()) fds[count++] = {stdin_write.get(), POLLOUT, 0};
    if (child.pidfd() >= 0) fds[count++] = {child.pidfd(), POLLIN, 0};
    const auto wake_at = terminating ? kill_at : deadline;
    const int ready = ::poll(fds.data(), count, poll_timeout_ms(now, wake_at, options.poll_interval));
    if (ready < 0 && errno != EINTR) break;
    for (std::size_t i = 0; i < count && ready > 0; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == out.fd.get()) {
        if (!out.read_available()) out.fd.reset();
      } else if (fds[i].fd == err.fd.get()) {
        if (!err.read_available()) err.fd.reset();
      } else if (fds[i].fd == stdin_write.get()) {
        const ssize_t n = write_without_sigpipe(stdin_write.get(), options.stdin_data.data() + stdin_offset,
                                                options.stdin_data.size() - stdin_offset);
        if (n > 0) stdin_offset += static_cast<std::size_t>(n);
        // EPIPE: the child does not want more input; that is its business, not an error.
        if ((n < 0 && errno != EAGAIN && errno != EINTR) || stdin_offset >= options.stdin_data.size()) {
          stdin_write.reset();
        }
      }
    }
  }

  // Phase 2: the leader is gone (still a zombie, so its group id is still ours). Anything it
  // left running in its group is killed; what they wrote stays readable in the pipes.
  child.signal_group(SIGKILL);
  const int status = child.reap();
  stdin_write.reset();
  if (WIFEXITED(status)) {
    result.exited_normally = true;
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.term_signal = WTERMSIG(status);
  }

  // Phase 3: drain. A descendant that escaped the group (setsid) could hold a pipe open
  // forever, so the drain is bounded.
  const auto drain_until = Clock::now() + std::chrono::seconds(2);
  while (out.fd.valid() || err.fd.valid()) {
    const auto now = Clock::now();
    if (now >= drain_until) break;
    std::array<pollfd, 2> fds{};
    std::size_t count = 0;
    if (out.fd.valid()) fds[count++] = {out.fd.get(), POLLIN, 0};
    if (err.fd.valid()) fds[count++] = {err.fd.get(), POLLIN, 0};
    const int ready =
        ::poll(fds.data(), count, poll_timeout_ms(now, drain_until, std::chrono::milliseconds(500)));
    if (ready < 0 && errno != EINTR) break;
    for (std::size_t i = 0; i < count; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == out.fd.get()) {
        if (!out.read_available()) out.fd.reset();
      } else if (fds[i].fd == err.fd.get()) {
        if (!err.read_available()) err.fd.reset();
      }
    }
  }
  result.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
  return result;
}

}  // namespace autodevs
