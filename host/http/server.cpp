#include "http/server.hpp"

#include <httplib.h>
#include <sys/socket.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace wk::http {

namespace {
constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

// A thread per connection, started when none is idle, up to kMaxConnectionThreads; idle ones
// leave after a while. httplib's default pool has 8 threads, so 8 slow or idle clients (a
// header line every few seconds keeps a connection inside its read timeout) starved /healthz
// for everyone else; a probe's health check then failed on an unauthenticated port.
class ConnectionThreads final : public httplib::TaskQueue {
 public:
  static constexpr size_t kMaxConnectionThreads = 1024;
  static constexpr auto kIdleExit = std::chrono::seconds(30);

  void enqueue(std::function<void()> job) override {
    std::lock_guard lock(mu_);
    if (shutdown_) return;
    jobs_.push_back(std::move(job));
    if (idle_ < jobs_.size() && threads_ < kMaxConnectionThreads) {
      ++threads_;
      std::thread([this] { loop(); }).detach();  // shutdown() waits for every one to leave
    } else {
      cv_.notify_one();
    }
  }
  void shutdown() override {
    std::unique_lock lock(mu_);
    shutdown_ = true;
    cv_.notify_all();
    cv_.wait(lock, [&] { return threads_ == 0; });
  }

 private:
  void loop() {
    std::unique_lock lock(mu_);
    while (true) {
      ++idle_;
      const bool woke = cv_.wait_for(lock, kIdleExit, [&] { return !jobs_.empty() || shutdown_; });
      --idle_;
      if (jobs_.empty()) break;  // shutting down, or idle too long
      (void)woke;
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
    --threads_;
    cv_.notify_all();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  size_t threads_ = 0;
  size_t idle_ = 0;
  bool shutdown_ = false;
};

constexpr int kListenBacklog = 1024;

bool passes(const std::function<bool()>& check) {
  try {
    return check();
  } catch (...) {
    return false;  // a check that cannot tell is a failed check
  }
}
}  // namespace

Endpoint parse_address(std::string_view address) {
  const auto colon = address.rfind(':');
  if (colon == std::string_view::npos) {
    throw std::invalid_argument("metrics address \"" + std::string(address) + "\": expected host:port");
  }
  std::string_view host = address.substr(0, colon);
  const std::string_view port_text = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = -1;
  const auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || ptr != port_text.data() + port_text.size() || port < 0 || port > 65535) {
    throw std::invalid_argument("metrics address \"" + std::string(address) + "\": port must be 0-65535");
  }
  if (host.empty()) host = "0.0.0.0";
  return {std::string(host), port};
}

Server::Server(ServerOptions options) : options_(std::move(options)) {}

Server::~Server() { stop(); }

void Server::start() {
  if (server_) throw std::logic_error("http::Server started twice");
  const Endpoint endpoint = parse_address(options_.address);
  auto server = std::make_unique<httplib::Server>();
  server->new_task_queue = [] { return new ConnectionThreads(); };
  // A request has 5 s between reads and writes; a kept-alive connection idles 5 s at most.
  server->set_read_timeout(5, 0);
  server->set_write_timeout(5, 0);
  server->set_keep_alive_timeout(5);
  // httplib's default also sets SO_REUSEPORT, which lets a second worker bind the same address
  // and silently take half the scrapes. Keep SO_REUSEADDR only (restart without TIME_WAIT
  // trouble) so a clash is a start-up error.
  // The listening socket, noted as httplib makes it (the callback's last socket is the one bound).
  auto listening = std::make_shared<int>(-1);
  server->set_socket_options([listening](int sock) {
    const int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    *listening = sock;
  });

  server->Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
    const bool alive = !options_.liveness || passes(options_.liveness);
    res.status = alive ? 200 : 503;
    res.set_content(alive ? "ok\n" : "unhealthy\n", "text/plain; charset=utf-8");
  });
  server->Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
    bool ready = true;
    std::string body;
    for (const auto& check : options_.readiness) {
      if (check.problem) {
        std::string problem;
        try {
          problem = check.problem();
        } catch (const std::exception& e) {
          problem = e.what();
        }
        ready = ready && problem.empty();
        body += check.name + (problem.empty() ? " ok\n" : " failed: " + problem + "\n");
        continue;
      }
      const bool ok = passes(check.ok);
      ready = ready && ok;
      body += check.name + (ok ? " ok\n" : " failed\n");
    }
    res.status = ready ? 200 : 503;
    res.set_content(body, "text/plain; charset=utf-8");
  });
  for (const auto& [path, document] : options_.json) {
    server->Get(path, [&source = document](const httplib::Request&, httplib::Response& res) {
      try {
        res.set_content(source(), "application/json");
      } catch (const std::exception& e) {
        res.status = 500;
        res.set_content(std::string("unavailable: ") + e.what() + "\n", "text/plain; charset=utf-8");
      }
    });
  }
  server->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    if (!options_.metrics) {
      res.status = 404;
      res.set_content("metrics disabled\n", "text/plain; charset=utf-8");
      return;
    }
    try {
      res.set_content(options_.metrics(), kMetricsContentType);
    } catch (const std::exception& e) {
      res.status = 500;
      res.set_content(std::string("metrics unavailable: ") + e.what() + "\n", "text/plain; charset=utf-8");
    }
  });

  int bound = endpoint.port;
  if (endpoint.port == 0) {
    bound = server->bind_to_any_port(endpoint.host);
    if (bound <= 0) throw std::runtime_error("cannot bind the metrics address " + options_.address);
  } else if (!server->bind_to_port(endpoint.host, endpoint.port)) {
    throw std::runtime_error("cannot bind the metrics address " + options_.address +
                             " (in use, or not a local address)");
  }
  // Debian's compiled httplib listens with a backlog of 5: a burst of connections (a scan, or
  // many slow clients at once) filled it, and every later SYN, a probe's included, waited out a
  // 1 s retransmission. listen() again on the bound socket raises it.
  if (*listening >= 0) ::listen(*listening, kListenBacklog);
  port_ = bound;
  server_ = std::move(server);
  listener_done_ = std::make_shared<std::atomic<bool>>(false);
  thread_ = std::thread([s = server_.get(), done = listener_done_] {
    s->listen_after_bind();
    done->store(true);
  });
  // The socket already listens (connections queue in the backlog), but httplib's stop() is a
  // no-op until the accept loop has marked itself running: wait for that so a stop() right
  // after start() cannot leave the thread blocked in accept forever.
  while (!server_->is_running() && !listener_done_->load())
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void Server::stop() {
  if (!server_) return;
  server_->stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

}  // namespace wk::http
