#include "fault_support.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <stdexcept>

#include "asynq/keys.hpp"
#include "queue/client.hpp"
#include "support/test_env.hpp"

extern char** environ;

namespace wk::faults {

namespace {

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

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

int decode_status(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

}  // namespace

// ---- TempDir ------------------------------------------------------------------------------------

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
  std::filesystem::remove_all(path_, ec);
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot find a free port");
  }
  const int port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

// ---- WorkerProcess ------------------------------------------------------------------------------

WorkerProcess::WorkerProcess(std::vector<std::string> argv, std::vector<std::string> env) {
  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    throw std::runtime_error("pipe2");
  }
  if (::pipe2(wake_, O_CLOEXEC) != 0) {
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) ::close(fd);
    throw std::runtime_error("pipe2");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // The worker must see SIGTERM/SIGINT with default dispositions and an empty mask, whatever
  // the test runner set.
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGTERM);
  sigaddset(&defaults, SIGINT);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  auto c_argv = c_strings(argv);
  auto c_env = c_strings(env);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, c_argv[0], &actions, &attr, c_argv.data(), c_env.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (rc != 0) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    close_fd(wake_[0]);
    close_fd(wake_[1]);
    throw std::runtime_error("posix_spawn " + argv.front() + " failed: " + std::to_string(rc));
  }
  pid_ = pid;
  reader_ = std::thread([this, out = out_pipe[0], err = err_pipe[0]] { read_loop(out, err); });
}

WorkerProcess::~WorkerProcess() {
  if (running()) kill_now();
  if (wake_[1] >= 0) {
    const char x = 'x';
    (void)!::write(wake_[1], &x, 1);
  }
  if (reader_.joinable()) reader_.join();
  close_fd(wake_[0]);
  close_fd(wake_[1]);
}

void WorkerProcess::read_loop(int out_fd, int err_fd) {
  int fds_open[2] = {out_fd, err_fd};
  char buf[8192];
  while (fds_open[0] >= 0 || fds_open[1] >= 0) {
    pollfd fds[3] = {{fds_open[0], POLLIN, 0}, {fds_open[1], POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const auto n = ::read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        close_fd(fds_open[i]);
        continue;
      }
      std::lock_guard lock(mu_);
      std::string& part = partial_[i];
      part.append(buf, static_cast<size_t>(n));
      size_t start = 0;
      for (size_t nl; (nl = part.find('\n', start)) != std::string::npos; start = nl + 1) {
        lines_.push_back(part.substr(start, nl - start));
      }
      part.erase(0, start);
    }
    if (fds[2].revents != 0) break;  // the owner is going away (the child is reaped by then)
  }
  close_fd(fds_open[0]);
  close_fd(fds_open[1]);
  std::lock_guard lock(mu_);
  for (auto& part : partial_) {
    if (!part.empty()) lines_.push_back(part);
    part.clear();
  }
}

void WorkerProcess::signal(int signo) {
  if (!status_) ::kill(pid_, signo);
}

void WorkerProcess::kill_now() {
  if (status_) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  status_ = decode_status(status);
}

bool WorkerProcess::running() {
  if (status_) return false;
  int status = 0;
  const int r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    status_ = decode_status(status);
    return false;
  }
  return true;
}

std::optional<int> WorkerProcess::wait_exit(std::chrono::milliseconds timeout) {
  if (!test::eventually([&] { return !running(); }, timeout, std::chrono::milliseconds(5)))
    return std::nullopt;
  return status_;
}

std::optional<std::string> WorkerProcess::await_line(const std::vector<std::string>& needles,
                                                     std::chrono::milliseconds timeout) const {
  std::optional<std::string> found;
  test::eventually(
      [&] {
        std::lock_guard lock(mu_);
        for (const auto& line : lines_) {
          if (contains_all(line, needles)) {
            found = line;
            return true;
          }
        }
        return false;
      },
      timeout);
  return found;
}

int WorkerProcess::count_lines(const std::vector<std::string>& needles) const {
  std::lock_guard lock(mu_);
  return static_cast<int>(std::count_if(lines_.begin(), lines_.end(),
                                        [&](const std::string& l) { return contains_all(l, needles); }));
}

std::string WorkerProcess::output() const {
  std::lock_guard lock(mu_);
  std::string all;
  for (const auto& l : lines_) all += l + "\n";
  return all;
}

std::vector<std::string> worker_env(const std::map<std::string, std::string>& settings) {
  std::vector<std::string> out;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    bool ours = settings.count(entry.substr(0, entry.find('='))) != 0;
    for (const char* prefix : {"REDIS_", "DB_", "WORKER_", "LOG_", "WORKTREE_", "AI_"}) {
      if (entry.rfind(prefix, 0) == 0) ours = true;
    }
    if (!ours) out.push_back(entry);
  }
  for (const auto& [k, v] : settings) out.push_back(k + "=" + v);
  return out;
}

std::string worker_binary() { return test::build_dir() + "/bin/worker"; }

// ---- RedisServer --------------------------------------------------------------------------------

RedisServer::RedisServer(std::filesystem::path dir) : dir_(std::move(dir)), port_(free_port()) { start(); }

RedisServer::~RedisServer() { stop(); }

redis::Settings RedisServer::settings() const {
  redis::Settings s;
  s.host = "127.0.0.1";
  s.port = port_;
  s.connect_timeout = std::chrono::milliseconds(500);
  return s;
}

void RedisServer::start() {
  if (pid_ > 0) return;
  std::vector<std::string> args{
      "redis-server", "--port", std::to_string(port_), "--bind",      "127.0.0.1",
      "--save",       "",       "--appendonly",        "yes",         "--appendfsync",
      "always",       "--dir",  dir_.string(),         "--daemonize", "no",
      "--loglevel",   "warning"};
  auto argv = c_strings(args);
  posix_spawn_file_actions_t quiet;
  posix_spawn_file_actions_init(&quiet);
  posix_spawn_file_actions_addopen(&quiet, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, "redis-server", &quiet, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&quiet);
  if (rc != 0) throw std::runtime_error("cannot start redis-server (is it installed?)");
  pid_ = pid;
  const bool up = test::eventually(
      [&] {
        try {
          return connect().command({"PING"}).str() == "PONG";
        } catch (const redis::Error&) {
          return false;
        }
      },
      std::chrono::seconds(10));
  if (!up) throw std::runtime_error("redis-server did not answer on port " + std::to_string(port_));
}

void RedisServer::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

// ---- Redis views --------------------------------------------------------------------------------

std::string enqueue(const redis::Settings& redis, task::EnqueueRequest request) {
  redis::Pool pool(redis, 1);
  queue::Client client(pool);
  return client.enqueue(request);
}

std::vector<std::string> QueueView::list(const std::string& which) const {
  const std::string key = asynq::queue_key_prefix(queue) + which;
  auto reply = conn.command({"LRANGE", key, "0", "-1"});
  std::vector<std::string> out;
  for (size_t i = 0; i < reply.size(); ++i) out.emplace_back(reply[i].str());
  return out;
}

std::vector<std::string> QueueView::zset(const std::string& which) const {
  const std::string key = asynq::queue_key_prefix(queue) + which;
  auto reply = conn.command({"ZRANGE", key, "0", "-1"});
  std::vector<std::string> out;
  for (size_t i = 0; i < reply.size(); ++i) out.emplace_back(reply[i].str());
  return out;
}

std::optional<std::string> QueueView::field(const std::string& id, const std::string& name) const {
  auto reply = conn.command({"HGET", asynq::task_key(queue, id), name});
  if (reply.is_nil()) return std::nullopt;
  return std::string(reply.str());
}

std::optional<asynq::TaskMessage> QueueView::message(const std::string& id) const {
  const auto raw = field(id, "msg");
  if (!raw) return std::nullopt;
  return asynq::decode_task_message(*raw);
}

bool QueueView::exists(const std::string& id) const {
  return conn.command({"EXISTS", asynq::task_key(queue, id)}).integer() == 1;
}

}  // namespace wk::faults
