#pragma once
// The operations endpoint: /healthz, /readyz and /metrics over HTTP (cpp-httplib), on its own
// thread. It knows nothing about Redis, the engine or metrics: everything it reports comes from
// callables handed in, so the runtime decides what "alive" and "ready" mean.
//
//   GET /healthz  200 "ok" while `liveness()` is true, else 503 "unhealthy". For a supervisor
//                 or orchestrator restart decision: true unless the process is wedged.
//   GET /readyz   runs every named check; 200 when all pass, else 503. The body lists each
//                 check as "<name> ok" or "<name> failed" (a thrown exception counts as failed),
//                 "<name> failed: <problem>" when the check can say what is wrong.
//   GET <path>    for each of `json`: its text, Content-Type application/json.
//   GET /metrics  `metrics()` with Content-Type text/plain; version=0.0.4.
#include <atomic>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace httplib {
class Server;
}

namespace wk::http {

struct ReadinessCheck {
  std::string name;
  std::function<bool()> ok;
  // Instead of `ok`: "" when ready, else what is wrong (named in the body).
  std::function<std::string()> problem = {};
};

struct ServerOptions {
  // "host:port" (e.g. "127.0.0.1:9090", "0.0.0.0:9090", "[::1]:9090"); port 0 picks a free one.
  std::string address;
  std::function<bool()> liveness;  // empty: always alive
  std::vector<ReadinessCheck> readiness;
  std::function<std::string()> metrics;  // empty: /metrics answers 404
  // Further read-only documents by path (e.g. "/plugins").
  std::vector<std::pair<std::string, std::function<std::string()>>> json;
};

struct Endpoint {
  std::string host;
  int port = 0;
};
// Splits "host:port". Throws std::invalid_argument naming what is wrong.
Endpoint parse_address(std::string_view address);

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();  // stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts serving on a thread. Throws std::runtime_error when the address cannot be
  // bound (in use, not local), std::invalid_argument when it is malformed.
  void start();
  // Stops accepting, finishes the request being served, joins the thread. Idempotent.
  void stop();
  // The bound port (useful with port 0); 0 before start().
  int port() const noexcept { return port_; }

 private:
  ServerOptions options_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::shared_ptr<std::atomic<bool>> listener_done_;
  int port_ = 0;
};

}  // namespace wk::http
