#pragma once
// The operations endpoint: /healthz, /readyz and /metrics over HTTP/1.1, on threads of its own.
// It knows nothing about Redis, the engine or metrics: everything it reports comes from callables
// handed in, so the runtime decides what "alive" and "ready" mean.
//
//   GET /healthz  200 "ok" while `liveness()` is true, else 503 "unhealthy". For a supervisor
//                 or orchestrator restart decision: true unless the process is wedged.
//   GET /readyz   runs every named check; 200 when all pass, else 503. The body lists each
//                 check as "<name> ok" or "<name> failed" (a thrown exception counts as failed),
//                 "<name> failed: <problem>" when the check can say what is wrong.
//   GET <path>    for each of `json`: its text, Content-Type application/json.
//   GET /metrics  `metrics()` with Content-Type text/plain; version=0.0.4.
//
// HEAD is answered like GET without the body; other methods get 405. Every response closes its
// connection. docs/operations.md, "The HTTP endpoint", says how slow and malformed requests are
// bounded.
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

  // Binds and starts serving. Throws std::runtime_error when the address cannot be bound (in
  // use, not local), std::invalid_argument when it is malformed.
  void start();
  // Stops accepting, drops requests still arriving, lets the responses being written finish,
  // joins every thread. Idempotent.
  void stop();
  // The bound port (useful with port 0); 0 before start().
  int port() const noexcept { return port_; }

 private:
  class Listener;
  ServerOptions options_;
  std::unique_ptr<Listener> listener_;
  int port_ = 0;
};

struct Response {
  int status = 0;
  std::string body;
};

// GET `path` from the worker's HTTP endpoint at `endpoint` (for `worker plugins`, which asks a
// running worker): the body is what arrives up to the connection's close, as Server answers.
// Throws std::runtime_error saying what failed: connect, timeout, a reply that is not HTTP, a
// reply over 16 MiB.
Response get(const Endpoint& endpoint, std::string_view path, std::chrono::milliseconds timeout);

}  // namespace wk::http
