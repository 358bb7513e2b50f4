#include "http/server.hpp"

#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#include "posix/unique_fd.hpp"

namespace wk::http {

namespace {

using Clock = std::chrono::steady_clock;

// How much a client may cost. A request's head (request line and headers) must arrive whole
// within kRequestTimeout and within kMaxHeadBytes; up to kMaxWaiting connections (fewer when the
// process may open few files: a quarter of RLIMIT_NOFILE) may be arriving at once, each costing a
// descriptor and its buffer, no thread. kMaxResponders requests are answered at once (a
// readiness check may wait on Redis); past that a request gets 503. /healthz is answered on the
// loop itself, so a probe never waits for a responder.
constexpr auto kRequestTimeout = std::chrono::seconds(5);
constexpr size_t kMaxHeadBytes = size_t{16} * 1024;
constexpr size_t kMaxWaiting = 1024;
constexpr int kMaxResponders = 32;
// Out of descriptors (EMFILE): the listener stays readable, so stop watching it this long
// instead of spinning on accept().
constexpr auto kAcceptPause = std::chrono::milliseconds(100);
constexpr int kListenBacklog = 1024;
// After a response, how long the connection may take to be closed by the client before we close
// it ourselves (closing with unread input would reset the connection under the response).
constexpr auto kLingerLimit = std::chrono::seconds(1);
constexpr size_t kMaxClientBody = size_t{16} * 1024 * 1024;

constexpr const char* kText = "text/plain; charset=utf-8";
constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

int remaining_ms(Clock::time_point deadline) {
  // Rounded up: poll(0) just before a deadline would spin until it passes.
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 60'000));
}

// Waits until `fd` is ready for `events` or the deadline passes; false on timeout.
bool wait_for(int fd, short events, Clock::time_point deadline) {
  while (true) {
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, remaining_ms(deadline));
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) return false;
  }
}

// Sends all of `bytes` on a non-blocking socket before the deadline.
bool send_all(int fd, std::string_view bytes, Clock::time_point deadline) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n > 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_for(fd, POLLOUT, deadline)) return false;
    } else {
      return false;
    }
  }
  return true;
}

struct Reply {
  int status = 200;
  std::string content_type = kText;
  std::string body;
};

std::string_view reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Unknown";
  }
}

std::string serialize(const Reply& reply, bool with_body) {
  std::string out =
      "HTTP/1.1 " + std::to_string(reply.status) + " " + std::string(reason(reply.status)) + "\r\n";
  out += "Content-Type: " + reply.content_type + "\r\n";
  out += "Content-Length: " + std::to_string(reply.body.size()) + "\r\n";
  if (reply.status == 405) out += "Allow: GET, HEAD\r\n";
  out += "Connection: close\r\n\r\n";
  if (with_body) out += reply.body;
  return out;
}

// Writes a short reply to a connection about to be closed, without waiting for it (a few hundred
// bytes always fit the socket's send buffer).
void refuse_with(int fd, const Reply& reply) {
  const std::string bytes = serialize(reply, true);
  (void)::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

void refuse(int fd, int status, std::string_view why) {
  refuse_with(fd, {status, kText, std::string(why) + "\n"});
}

size_t waiting_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return kMaxWaiting;
  return std::clamp<size_t>(static_cast<size_t>(limit.rlim_cur / 4), 16, kMaxWaiting);
}

struct Request {
  std::string method;
  std::string path;  // the target without its query
};

// The request line of a complete head: "METHOD /target HTTP/1.x".
std::optional<Request> parse_request_line(std::string_view head) {
  const std::string_view line = head.substr(0, head.find_first_of("\r\n"));
  const size_t first = line.find(' ');
  const size_t last = line.rfind(' ');
  if (first == std::string_view::npos || first == last) return std::nullopt;
  const std::string_view method = line.substr(0, first);
  const std::string_view target = line.substr(first + 1, last - first - 1);
  const std::string_view version = line.substr(last + 1);
  if (method.empty() ||
      !std::all_of(method.begin(), method.end(), [](char c) { return c >= 'A' && c <= 'Z'; }))
    return std::nullopt;
  if (target.empty() || target.front() != '/' || target.find(' ') != std::string_view::npos)
    return std::nullopt;
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return std::nullopt;
  return Request{std::string(method), std::string(target.substr(0, target.find_first_of("?#")))};
}

// Where the head ends (just past its empty line), or npos while it is incomplete.
size_t head_end(std::string_view buffer) {
  const size_t crlf = buffer.find("\r\n\r\n");
  const size_t lf = buffer.find("\n\n");
  if (crlf == std::string_view::npos && lf == std::string_view::npos) return std::string_view::npos;
  return std::min(crlf == std::string_view::npos ? std::string_view::npos : crlf + 4,
                  lf == std::string_view::npos ? std::string_view::npos : lf + 2);
}

bool passes(const std::function<bool()>& check) {
  try {
    return check();
  } catch (...) {
    return false;  // a check that cannot tell is a failed check
  }
}

// A document from a callable; an exception becomes a 500 that says what failed.
Reply document(const std::function<std::string()>& source, const char* content_type,
               std::string_view failed) {
  try {
    return {200, content_type, source()};
  } catch (const std::exception& e) {
    return {500, kText, std::string(failed) + e.what() + "\n"};
  }
}

Reply answer(const ServerOptions& options, const std::string& path) {
  if (path == "/healthz") {
    const bool alive = !options.liveness || passes(options.liveness);
    return {alive ? 200 : 503, kText, alive ? "ok\n" : "unhealthy\n"};
  }
  if (path == "/readyz") {
    bool ready = true;
    std::string body;
    for (const auto& check : options.readiness) {
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
    return {ready ? 200 : 503, kText, body};
  }
  if (path == "/metrics") {
    if (!options.metrics) return {404, kText, "metrics disabled\n"};
    return document(options.metrics, kMetricsContentType, "metrics unavailable: ");
  }
  for (const auto& [json_path, source] : options.json) {
    if (path == json_path) return document(source, "application/json", "unavailable: ");
  }
  return {404, kText, "not found\n"};
}

// Binds a listening socket to host:port (numeric or a name); throws naming the address.
posix::UniqueFd listen_on(const std::string& address, const Endpoint& endpoint) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(endpoint.port);
  if (const int rc = ::getaddrinfo(endpoint.host.c_str(), port.c_str(), &hints, &found); rc != 0)
    throw std::runtime_error("cannot bind the metrics address " + address + ": " + ::gai_strerror(rc));
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> results(found, ::freeaddrinfo);
  int last_error = 0;
  for (const addrinfo* ai = results.get(); ai != nullptr; ai = ai->ai_next) {
    posix::UniqueFd fd(
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (fd.get() < 0) {
      last_error = errno;
      continue;
    }
    // SO_REUSEADDR (restart without TIME_WAIT trouble) but never SO_REUSEPORT: a second worker
    // on the same address must fail to start, not silently take half the scrapes.
    const int yes = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd.get(), kListenBacklog) == 0)
      return fd;
    last_error = errno;
  }
  throw std::runtime_error("cannot bind the metrics address " + address +
                           " (in use, or not a local address): " + std::strerror(last_error));
}

int bound_port(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return 0;
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&addr)->sin_port);
  if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_port);
  return 0;
}

}  // namespace

// One thread polls the listening socket and every connection whose request is still arriving
// (slow clients cost a descriptor, not a thread); each complete request is answered on a thread
// of its own, because a readiness check may wait on Redis.
class Server::Listener {
 public:
  Listener(const ServerOptions& options, posix::UniqueFd listening)
      : options_(options), listening_(std::move(listening)), wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (wake_.get() < 0) throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
    loop_ = std::thread([this] { run(); });
  }
  ~Listener() {
    const uint64_t one = 1;
    (void)::write(wake_.get(), &one, sizeof one);
    loop_.join();
    std::unique_lock lock(mu_);
    responders_done_.wait(lock, [&] { return responders_ == 0; });
  }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

 private:
  struct Arriving {
    posix::UniqueFd fd;
    std::string head;
    Clock::time_point deadline;
  };

  void run() {
    std::vector<Arriving> arriving;
    std::vector<pollfd> polled;
    while (true) {
      const bool accepting = Clock::now() >= accept_paused_until_;
      polled.assign(
          {{listening_.get(), static_cast<short>(accepting ? POLLIN : 0), 0}, {wake_.get(), POLLIN, 0}});
      auto next_deadline = accepting ? Clock::time_point::max() : accept_paused_until_;
      for (const Arriving& a : arriving) {
        polled.push_back({a.fd.get(), POLLIN, 0});
        next_deadline = std::min(next_deadline, a.deadline);
      }
      const int timeout = next_deadline == Clock::time_point::max() ? -1 : remaining_ms(next_deadline);
      if (::poll(polled.data(), polled.size(), timeout) < 0 && errno != EINTR) return;
      if (polled[1].revents != 0) return;  // stop(): arriving connections close with `arriving`
      for (size_t i = 0; i < arriving.size(); ++i) {
        if (polled[i + 2].revents != 0) read_from(arriving[i]);
      }
      const auto now = Clock::now();
      for (Arriving& a : arriving) {
        if (a.fd.get() >= 0 && now >= a.deadline) {
          refuse(a.fd.get(), 408, "request not received in time");
          a.fd.reset();
        }
      }
      std::erase_if(arriving, [](const Arriving& a) { return a.fd.get() < 0; });
      if (polled[0].revents != 0) accept_all(arriving);
    }
  }

  void accept_all(std::vector<Arriving>& arriving) {
    while (true) {
      posix::UniqueFd fd(::accept4(listening_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (fd.get() < 0) {
        if (errno == EMFILE || errno == ENFILE) accept_paused_until_ = Clock::now() + kAcceptPause;
        return;  // EAGAIN: all taken; other errors: the next poll tells again
      }
      if (arriving.size() >= max_waiting_) {
        refuse(fd.get(), 503, "too many connections");
        continue;
      }
      arriving.push_back({std::move(fd), {}, Clock::now() + kRequestTimeout});
    }
  }

  // Reads what has arrived; hands a complete request to a responder. Leaves `a.fd` empty when
  // the connection is done with here.
  void read_from(Arriving& a) {
    char buffer[4096];
    const ssize_t n = ::recv(a.fd.get(), buffer, sizeof buffer, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) {
      a.fd.reset();  // closed by the client, or broken
      return;
    }
    a.head.append(buffer, static_cast<size_t>(n));
    const size_t end = head_end(a.head);
    if ((end == std::string::npos ? a.head.size() : end) > kMaxHeadBytes) {
      refuse(a.fd.get(), 431, "request head too large");
      a.fd.reset();
      return;
    }
    if (end == std::string::npos) return;
    const std::optional<Request> request = parse_request_line(std::string_view(a.head).substr(0, end));
    if (!request) {
      refuse(a.fd.get(), 400, "malformed request");
      a.fd.reset();
      return;
    }
    if (request->path == "/healthz" && request->method == "GET") {
      // Cheap and what a probe asks: answered here, never behind a busy responder. The head was
      // read whole, so closing at once resets nothing the client still sends.
      refuse_with(a.fd.get(), answer(options_, request->path));
      a.fd.reset();
      return;
    }
    std::unique_lock lock(mu_);
    if (responders_ >= kMaxResponders) {
      lock.unlock();
      refuse(a.fd.get(), 503, "busy");
      a.fd.reset();
      return;
    }
    ++responders_;
    lock.unlock();
    try {
      // Detached: the destructor waits for responders_ to reach zero before anything goes away.
      std::thread([this, fd = a.fd.get(), request = *request] {
        try {
          respond(posix::UniqueFd(fd), request);
        } catch (...) {  // only allocation can throw here; the connection is closed either way
        }
        finished_responding();
      }).detach();
      (void)a.fd.release();            // the responder owns it now
    } catch (const std::exception&) {  // no thread to be had (system_error, bad_alloc)
      refuse(a.fd.get(), 503, "busy");
      a.fd.reset();
      finished_responding();
    }
  }

  void finished_responding() {
    std::lock_guard lock(mu_);
    --responders_;
    responders_done_.notify_all();
  }

  void respond(posix::UniqueFd fd, const Request& request) {
    const bool head_only = request.method == "HEAD";
    const Reply reply = (request.method == "GET" || head_only)
                            ? answer(options_, request.path)
                            : Reply{405, kText, "only GET and HEAD are served\n"};
    const auto deadline = Clock::now() + kRequestTimeout;
    if (!send_all(fd.get(), serialize(reply, !head_only), deadline)) return;
    // Half-close, then wait briefly for the client to close: closing with unread input (a body
    // the client sent) would reset the connection and could destroy the response in flight.
    ::shutdown(fd.get(), SHUT_WR);
    const auto linger_until = Clock::now() + kLingerLimit;
    char sink[1024];
    while (wait_for(fd.get(), POLLIN, linger_until)) {
      const ssize_t n = ::recv(fd.get(), sink, sizeof sink, 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) break;
    }
  }

  const ServerOptions& options_;
  posix::UniqueFd listening_;
  posix::UniqueFd wake_;
  const size_t max_waiting_ = waiting_limit();
  Clock::time_point accept_paused_until_{};
  std::thread loop_;
  std::mutex mu_;
  std::condition_variable responders_done_;
  int responders_ = 0;
};

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
  if (listener_) throw std::logic_error("http::Server started twice");
  const Endpoint endpoint = parse_address(options_.address);
  posix::UniqueFd listening = listen_on(options_.address, endpoint);
  const int port = bound_port(listening.get());
  listener_ = std::make_unique<Listener>(options_, std::move(listening));
  port_ = port;
}

void Server::stop() { listener_.reset(); }

Response get(const Endpoint& endpoint, std::string_view path, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const std::string where = endpoint.host + ":" + std::to_string(endpoint.port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(endpoint.port);
  if (const int rc = ::getaddrinfo(endpoint.host.c_str(), port.c_str(), &hints, &found); rc != 0)
    throw std::runtime_error(where + ": " + ::gai_strerror(rc));
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> results(found, ::freeaddrinfo);
  posix::UniqueFd fd;
  std::string failure = "no address";
  for (const addrinfo* ai = results.get(); ai != nullptr && fd.get() < 0; ai = ai->ai_next) {
    posix::UniqueFd attempt(
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (attempt.get() < 0) continue;
    if (::connect(attempt.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        failure = std::strerror(errno);
        continue;
      }
      if (!wait_for(attempt.get(), POLLOUT, deadline)) {
        failure = "connect timed out";
        continue;
      }
      int error = 0;
      socklen_t len = sizeof error;
      ::getsockopt(attempt.get(), SOL_SOCKET, SO_ERROR, &error, &len);
      if (error != 0) {
        failure = std::strerror(error);
        continue;
      }
    }
    fd = std::move(attempt);
  }
  if (fd.get() < 0) throw std::runtime_error(where + ": " + failure);
  const std::string request =
      "GET " + std::string(path) + " HTTP/1.1\r\nHost: " + endpoint.host + "\r\nConnection: close\r\n\r\n";
  if (!send_all(fd.get(), request, deadline))
    throw std::runtime_error(where + ": the request could not be sent");
  std::string reply;
  char buffer[16384];
  while (true) {
    const ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, 0);
    if (n > 0) {
      reply.append(buffer, static_cast<size_t>(n));
      if (reply.size() > kMaxClientBody) throw std::runtime_error(where + ": the reply is over 16 MiB");
    } else if (n == 0) {
      break;
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_for(fd.get(), POLLIN, deadline)) throw std::runtime_error(where + ": no reply in time");
    } else {
      throw std::runtime_error(where + ": " + std::strerror(errno));
    }
  }
  // "HTTP/1.x NNN reason", headers, an empty line, the body up to the close.
  const size_t end = head_end(reply);
  int status = 0;
  if (end == std::string::npos || reply.rfind("HTTP/1.", 0) != 0 || reply.size() < 12 ||
      std::from_chars(reply.data() + 9, reply.data() + 12, status).ec != std::errc())
    throw std::runtime_error(where + ": the reply is not HTTP");
  return {status, reply.substr(end)};
}

}  // namespace wk::http
