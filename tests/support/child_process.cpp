#include "support/child_process.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>
#include <utility>

#include "support/test_env.hpp"

extern char** environ;

namespace wk::test {

namespace {

// One file descriptor, closed on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = other.release();
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

void close_fd(int& fd) noexcept {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// A pipe with both ends close-on-exec; throws on failure.
std::pair<Fd, Fd> make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  return {Fd(fds[0]), Fd(fds[1])};
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

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

bool contains_all(const std::string& line, const std::vector<std::string>& needles) {
  return std::all_of(needles.begin(), needles.end(),
                     [&](const std::string& n) { return line.find(n) != std::string::npos; });
}

std::string name_of(const std::string& entry) { return entry.substr(0, entry.find('=')); }

}  // namespace

// ---- TempDir, free_port, environments ---------------------------------------------------------

TempDir::TempDir(const std::string& prefix) {
  static std::atomic<int> counter{0};
  path_ = std::filesystem::temp_directory_path() /
          (prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
  std::filesystem::permissions(path_, std::filesystem::perms::owner_all);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::permissions(path_, std::filesystem::perms::owner_all, ec);  // a test may have locked it
  std::filesystem::remove_all(path_, ec);
}

int free_port() {
  // Below the kernel's ephemeral range (32768+ by default): a port from bind(0) could be handed
  // to another socket (an outgoing connection, another test's bind(0)) between this check and
  // the server starting on it, seconds later for PostgreSQL after initdb.
  int low = 20000;
  int high = 32768;
  if (std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range"); range >> high)
    high = std::min(high, 65536);
  if (high - low < 1000) low = 1024;
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> pick(low, high - 1);
  for (int attempt = 0; attempt < 200; ++attempt) {
    const Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) throw std::runtime_error("socket() failed");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(pick(rng)));
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return ntohs(addr.sin_port);
  }
  throw std::runtime_error("cannot find a free port");
}

std::vector<std::string> inherited_env(const std::map<std::string, std::string>& overrides) {
  std::vector<std::string> out;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    if (overrides.count(name_of(entry)) == 0) out.push_back(entry);
  }
  for (const auto& [k, v] : overrides) out.push_back(k + "=" + v);
  return out;
}

std::vector<std::string> worker_env(const std::map<std::string, std::string>& settings) {
  std::vector<std::string> out;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    bool ours = settings.count(name_of(entry)) != 0;
    for (const char* prefix : {"REDIS_", "DB_", "WORKER_", "LOG_", "WORKTREE_", "AI_"}) {
      if (entry.rfind(prefix, 0) == 0) ours = true;
    }
    if (!ours) out.push_back(entry);
  }
  for (const auto& [k, v] : settings) out.push_back(k + "=" + v);
  return out;
}

std::vector<std::string> minimal_env(const std::map<std::string, std::string>& env) {
  std::map<std::string, std::string> full = env;
  for (const char* inherited : {"PATH", "HOME", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"}) {
    if (const char* v = std::getenv(inherited); v != nullptr && full.count(inherited) == 0)
      full[inherited] = v;
  }
  std::vector<std::string> out;
  for (const auto& [k, v] : full) out.push_back(k + "=" + v);
  return out;
}

std::string worker_binary() { return build_dir() + "/bin/worker"; }

// ---- ChildProcess -----------------------------------------------------------------------------

ChildProcess::ChildProcess(std::vector<std::string> argv, std::vector<std::string> env) {
  if (argv.empty()) throw std::invalid_argument("ChildProcess: empty argv");
  auto [out_read, out_write] = make_pipe();
  auto [err_read, err_write] = make_pipe();
  auto [wake_read, wake_write] = make_pipe();
  auto c_argv = c_strings(argv);
  auto c_env = c_strings(env);
  int rc = 0;
  {
    SpawnSetup spawn;
    posix_spawn_file_actions_addopen(&spawn.actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&spawn.actions, out_write.get(), 1);
    posix_spawn_file_actions_adddup2(&spawn.actions, err_write.get(), 2);
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
    rc = ::posix_spawnp(&pid_, c_argv[0], &spawn.actions, &spawn.attr, c_argv.data(), c_env.data());
  }
  if (rc != 0) {
    pid_ = -1;
    throw std::runtime_error("posix_spawn " + argv.front() + ": " + std::strerror(rc));
  }
  out_write.reset();
  err_write.reset();
  wake_[0] = wake_read.release();
  wake_[1] = wake_write.release();
  const int out_fd = out_read.release();
  const int err_fd = err_read.release();
  reader_ = std::thread([this, out_fd, err_fd] { read_output(out_fd, err_fd); });
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && status_ < 0) kill();
  if (wake_[1] >= 0) {
    const char byte = 1;
    [[maybe_unused]] const auto n = ::write(wake_[1], &byte, 1);
  }
  if (reader_.joinable()) reader_.join();
  close_fd(wake_[0]);
  close_fd(wake_[1]);
}

void ChildProcess::read_output(int out_fd, int err_fd) {
  int open_fds[2] = {out_fd, err_fd};
  char buf[8192];
  while (open_fds[0] >= 0 || open_fds[1] >= 0) {
    pollfd fds[3] = {{open_fds[0], POLLIN, 0}, {open_fds[1], POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if ((fds[2].revents & POLLIN) != 0) break;  // the owner is going away (the child is reaped)
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        close_fd(open_fds[i]);
        continue;
      }
      {
        std::lock_guard lock(mu_);
        const auto n = static_cast<std::size_t>(got);
        output_.append(buf, n);
        stream_[i].append(buf, n);
        std::string& part = partial_[i];
        part.append(buf, n);
        std::size_t start = 0;
        for (std::size_t nl = 0; (nl = part.find('\n', start)) != std::string::npos; start = nl + 1) {
          lines_.push_back(part.substr(start, nl - start));
        }
        part.erase(0, start);
      }
      cv_.notify_all();
    }
  }
  close_fd(open_fds[0]);
  close_fd(open_fds[1]);
  {
    std::lock_guard lock(mu_);
    for (auto& part : partial_) {
      if (!part.empty()) lines_.push_back(part);
      part.clear();
    }
    eof_ = true;
  }
  cv_.notify_all();
}

void ChildProcess::signal(int signo) {
  if (status_ < 0) ::kill(pid_, signo);
}

bool ChildProcess::running() {
  if (status_ >= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    status_ = status;
    return false;
  }
  return true;
}

bool ChildProcess::signaled() const noexcept { return status_ >= 0 && WIFSIGNALED(status_); }

std::optional<int> ChildProcess::wait_exit(std::chrono::milliseconds timeout) {
  // The child's ends of the output pipes close when it exits (its own children run with their
  // own pipes), so the reader's EOF is the event to await; waitpid(WNOHANG) confirms it.
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= until) return std::nullopt;
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
  // Reaped: what it wrote last may still be in the pipes; a descendant holding them open (it
  // escaped with our pipes) bounds this wait by the timeout.
  std::unique_lock lock(mu_);
  cv_.wait_until(lock, std::max(until, std::chrono::steady_clock::now() + std::chrono::seconds(1)),
                 [&] { return eof_; });
  return exit_code();
}

int ChildProcess::exit_code() const {
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
  return -1;
}

int ChildProcess::stop(std::chrono::milliseconds grace) {
  if (status_ < 0) {
    ::kill(pid_, SIGTERM);
    if (!wait_exit(grace)) return kill();
  }
  return exit_code();
}

int ChildProcess::kill() {
  if (status_ < 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    status_ = status;
  }
  return exit_code();
}

bool ChildProcess::await(std::string_view needle, std::chrono::milliseconds timeout, Stream stream) {
  std::unique_lock lock(mu_);
  const auto found = [&] {
    const std::string& text = stream == Stream::both ? output_ : stream_[stream == Stream::out ? 0 : 1];
    return text.find(needle) != std::string::npos;
  };
  cv_.wait_for(lock, timeout, [&] { return found() || eof_; });
  return found();
}

std::optional<std::string> ChildProcess::await_line(const std::vector<std::string>& needles,
                                                    std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  std::size_t seen = 0;
  std::optional<std::string> line;
  cv_.wait_for(lock, timeout, [&] {
    for (; seen < lines_.size(); ++seen) {
      if (contains_all(lines_[seen], needles)) {
        line = lines_[seen];
        return true;
      }
    }
    return eof_;
  });
  return line;
}

std::size_t ChildProcess::count(std::string_view needle) const {
  std::lock_guard lock(mu_);
  std::size_t n = 0;
  for (auto at = output_.find(needle); at != std::string::npos; at = output_.find(needle, at + needle.size()))
    ++n;
  return n;
}

int ChildProcess::count_lines(const std::vector<std::string>& needles) const {
  std::lock_guard lock(mu_);
  return static_cast<int>(std::count_if(lines_.begin(), lines_.end(),
                                        [&](const std::string& l) { return contains_all(l, needles); }));
}

std::string ChildProcess::output() const {
  std::lock_guard lock(mu_);
  return output_;
}

std::string ChildProcess::out() const {
  std::lock_guard lock(mu_);
  return stream_[0];
}

std::string ChildProcess::err() const {
  std::lock_guard lock(mu_);
  return stream_[1];
}

RunResult run(std::vector<std::string> argv, std::vector<std::string> env,
              std::chrono::milliseconds timeout) {
  ChildProcess child(std::move(argv), std::move(env));
  RunResult r;
  r.exit_code = child.wait_exit(timeout);
  if (!r.exit_code) child.kill();
  r.signaled = child.signaled();
  r.out = child.out();
  r.err = child.err();
  return r;
}

}  // namespace wk::test
