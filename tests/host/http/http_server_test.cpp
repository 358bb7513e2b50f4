// http::Server with the real parts behind it: a RedisBroker and an Engine on a private
// redis-server, WorkerMetrics as the engine's observer. Checks /metrics counters by type and
// queue after real tasks ran, and /readyz / /healthz while Redis goes away and comes back.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "http/server.hpp"
#include "metrics/registry.hpp"
#include "metrics/worker_metrics.hpp"
#include "queue/broker_redis.hpp"
#include "queue/engine.hpp"
#include "support/private_redis.hpp"
#include "support/test_env.hpp"

extern char** environ;

namespace wk::test {
namespace {

using namespace std::chrono_literals;

// Routes by task type to a function; the engine's contract with the plugin layer, in miniature.
class TypeDispatcher : public task::Dispatcher {
 public:
  void on(std::string type, task::Outcome outcome) { outcomes_[std::move(type)] = std::move(outcome); }
  bool handles(std::string_view type) const override { return outcomes_.contains(std::string(type)); }
  task::Outcome dispatch(task::Execution& ex) override {
    const auto it = outcomes_.find(ex.task.type);
    if (it == outcomes_.end()) return {task::Disposition::fail_no_retry, "no handler", {}, {}};
    return it->second;
  }

 private:
  std::map<std::string, task::Outcome> outcomes_;
};

struct Response {
  int status = 0;  // 0: no answer
  std::string body;
  std::string content_type;
};

Response get(int port, const std::string& path) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2);
  client.set_read_timeout(10);
  auto res = client.Get(path.c_str());
  if (!res) return {};
  return {res->status, res->body, res->get_header_value("Content-Type")};
}

// The value of the sample line `series` (name plus labels, exactly as rendered), or -1.
double sample(const std::string& text, const std::string& series) {
  const std::string needle = "\n" + series + " ";
  const auto at = text.find(needle);
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + needle.size()));
}

// Runs `promtool check metrics` on `text` when promtool is installed; the packaging test
// promtool_check installs it and checks the same renderer's output when it is not.
void promtool_check(const std::string& text) {
  std::string promtool;
  for (const char* dir : {"/usr/bin", "/usr/local/bin"}) {
    if (std::filesystem::exists(std::string(dir) + "/promtool")) promtool = std::string(dir) + "/promtool";
  }
  if (promtool.empty()) {
    std::printf("promtool not installed here: the ctest 'promtool_check' installs it and runs the check\n");
    return;
  }
  const auto file =
      std::filesystem::temp_directory_path() / ("wk-metrics-" + std::to_string(::getpid()) + ".txt");
  std::ofstream(file) << text;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, file.c_str(), O_RDONLY, 0);
  std::vector<std::string> args{promtool, "check", "metrics"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  ASSERT_EQ(posix_spawn(&pid, promtool.c_str(), &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  int status = 0;
  waitpid(pid, &status, 0);
  std::filesystem::remove(file);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "promtool check metrics failed on:\n" << text;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_.start();
    settings_.port = redis_.port();
    settings_.connect_timeout = 300ms;
    settings_.command_timeout = 1000ms;
    queue::RedisBrokerSettings bs;
    bs.redis = settings_;
    bs.pool_size = 4;
    broker_ = std::make_unique<queue::RedisBroker>(bs, log_);

    queue::Settings es;
    es.queues = {{"alpha", 2}, {"beta", 1}};
    es.concurrency = 4;
    es.heartbeat_interval = 100ms;
    es.forwarder_interval = 100ms;
    es.recoverer_interval = 200ms;
    es.janitor_interval = 200ms;
    es.sync_interval = 100ms;
    es.shutdown_timeout = 300ms;
    es.wait_timeout = 300ms;
    es.resubscribe_delay = 200ms;
    es.redis_backoff = 100ms;
    dispatcher_.on("ok", {});
    dispatcher_.on("bad", {task::Disposition::fail_no_retry, "bad input", {}, {}});
    engine_ = std::make_unique<queue::Engine>(*broker_, dispatcher_, log_, es);

    metrics::WorkerMetricsOptions mo;
    mo.worker_name = "test-worker";
    mo.version = "9.9.9";
    mo.queues = {"alpha", "beta"};
    mo.redis = settings_;
    mo.redis_up = [this] { return engine_->redis_up(); };
    mo.plugins_loaded = [] { return 1; };
    worker_metrics_ = std::make_unique<metrics::WorkerMetrics>(registry_, mo);
    engine_->set_observer(worker_metrics_.get());
    engine_->start();

    http::ServerOptions so;
    so.address = "127.0.0.1:0";
    so.liveness = [this] { return engine_->healthy(); };
    so.readiness = {{"redis", [this] { return broker_->ping(); }}, {"plugins", [] { return true; }}};
    so.metrics = [this] { return registry_.render(); };
    server_ = std::make_unique<http::Server>(so);
    server_->start();
  }
  void TearDown() override {
    server_.reset();
    engine_.reset();
    broker_.reset();
  }
  void enqueue(const std::string& type, const std::string& queue) {
    task::EnqueueRequest r;
    r.type = type;
    r.queue = queue;
    r.payload = "{}";
    r.max_retry = 0;
    broker_->client().enqueue(r);
  }

  log::Logger log_ = log::Logger::in_memory(log::Level::warn, log::Format::logfmt);
  PrivateRedis redis_{[] {
    PrivateRedis::Options o;
    o.start = false;
    return o;
  }()};
  redis::Settings settings_;
  TypeDispatcher dispatcher_;
  metrics::Registry registry_;
  std::unique_ptr<queue::RedisBroker> broker_;
  std::unique_ptr<queue::Engine> engine_;
  std::unique_ptr<metrics::WorkerMetrics> worker_metrics_;
  std::unique_ptr<http::Server> server_;
};

TEST_F(HttpServerTest, MetricsCountTasksByTypeAndQueue) {
  constexpr int kOkAlpha = 7, kOkBeta = 4, kBadAlpha = 3;
  for (int i = 0; i < kOkAlpha; ++i) enqueue("ok", "alpha");
  for (int i = 0; i < kOkBeta; ++i) enqueue("ok", "beta");
  for (int i = 0; i < kBadAlpha; ++i) enqueue("bad", "alpha");

  const std::string processed_alpha =
      R"(autodevs_worker_tasks_processed_total{task_type="ok",queue="alpha"})";
  const std::string processed_beta = R"(autodevs_worker_tasks_processed_total{task_type="ok",queue="beta"})";
  const std::string archived_alpha = R"(autodevs_worker_tasks_archived_total{task_type="bad",queue="alpha"})";
  const std::string archived_in_redis = R"(autodevs_worker_queue_size{queue="alpha",state="archived"})";
  // Everything a finished task changes: its counters, its duration and (written to Redis with
  // the next round trip) the queue sizes. One scrape may land between any two of them.
  std::string text;
  Response res;
  ASSERT_TRUE(eventually(
      [&] {
        res = get(server_->port(), "/metrics");
        text = res.body;
        return sample(text, processed_alpha) == kOkAlpha && sample(text, processed_beta) == kOkBeta &&
               sample(text, archived_alpha) == kBadAlpha &&
               sample(text, R"(autodevs_worker_task_duration_seconds_count{task_type="ok"})") ==
                   kOkAlpha + kOkBeta &&
               sample(text, R"(autodevs_worker_task_duration_seconds_count{task_type="bad"})") == kBadAlpha &&
               sample(text, archived_in_redis) == kBadAlpha &&
               sample(text, "autodevs_worker_tasks_in_flight") == 0;
      },
      15s))
      << text;
  EXPECT_EQ(res.status, 200);
  EXPECT_EQ(res.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(sample(text, R"(autodevs_worker_tasks_failed_total{task_type="bad",queue="alpha"})"), kBadAlpha);
  EXPECT_EQ(sample(text, R"(autodevs_worker_tasks_failed_total{task_type="ok",queue="alpha"})"), -1);
  EXPECT_EQ(sample(text, R"(autodevs_worker_tasks_processed_total{task_type="bad",queue="alpha"})"), -1);
  EXPECT_EQ(sample(text, R"(autodevs_worker_task_duration_seconds_count{task_type="ok"})"),
            kOkAlpha + kOkBeta);
  EXPECT_EQ(sample(text, R"(autodevs_worker_task_duration_seconds_count{task_type="bad"})"), kBadAlpha);
  // Queue sizes come from Redis: the archived tasks sit in alpha's archive, nothing else waits.
  EXPECT_EQ(sample(text, R"(autodevs_worker_queue_size{queue="alpha",state="archived"})"), kBadAlpha);
  EXPECT_EQ(sample(text, R"(autodevs_worker_queue_size{queue="alpha",state="pending"})"), 0);
  EXPECT_EQ(sample(text, R"(autodevs_worker_queue_size{queue="beta",state="archived"})"), 0);
  EXPECT_EQ(sample(text, R"(autodevs_worker_queue_paused{queue="alpha"})"), 0);
  EXPECT_EQ(sample(text, "autodevs_worker_tasks_in_flight"), 0);
  EXPECT_EQ(sample(text, "autodevs_worker_redis_up"), 1);
  EXPECT_EQ(sample(text, "autodevs_worker_plugins_loaded"), 1);
  EXPECT_EQ(sample(text, R"(autodevs_worker_build_info{version="9.9.9",worker="test-worker"})"), 1);
  promtool_check(text);
}

// A queue that has tasks and no worker serving it (registered in asynq:queues by its producer)
// is in queue_size too: the one an operator most needs an alert on.
TEST_F(HttpServerTest, QueueSizesIncludeQueuesNoWorkerServes) {
  enqueue("ok", "nobody-serves");
  enqueue("ok", "nobody-serves");
  std::string text;
  ASSERT_TRUE(eventually(
      [&] {
        text = get(server_->port(), "/metrics").body;
        return sample(text, R"(autodevs_worker_queue_size{queue="nobody-serves",state="pending"})") == 2;
      },
      10s))
      << text;
  EXPECT_EQ(sample(text, R"(autodevs_worker_queue_size{queue="alpha",state="pending"})"), 0);
}

TEST_F(HttpServerTest, ReadinessFollowsRedisWhileLivenessStays) {
  auto ready = get(server_->port(), "/readyz");
  EXPECT_EQ(ready.status, 200);
  EXPECT_EQ(ready.body, "redis ok\nplugins ok\n");
  EXPECT_EQ(get(server_->port(), "/healthz").status, 200);

  redis_.stop();
  ASSERT_TRUE(eventually([&] { return get(server_->port(), "/readyz").status == 503; }, 10s));
  ready = get(server_->port(), "/readyz");
  EXPECT_EQ(ready.body, "redis failed\nplugins ok\n");
  // Redis being away is not a reason to restart the worker: it reconnects by itself.
  EXPECT_EQ(get(server_->port(), "/healthz").status, 200);
  // Queue sizes cannot be read: none are reported (not stale ones), and the failure is flagged.
  ASSERT_TRUE(eventually(
      [&] { return sample(get(server_->port(), "/metrics").body, "autodevs_worker_redis_up") == 0; }, 10s));
  const auto text = get(server_->port(), "/metrics").body;
  EXPECT_EQ(sample(text, "autodevs_worker_queue_size_read_errors"), 1);
  EXPECT_EQ(text.find("autodevs_worker_queue_size{"), std::string::npos) << text;
  EXPECT_EQ(get(server_->port(), "/healthz").status, 200);

  redis_.start();
  ASSERT_TRUE(eventually([&] { return get(server_->port(), "/readyz").status == 200; }, 10s));
  EXPECT_EQ(get(server_->port(), "/healthz").status, 200);
  // And the worker serves again: a task enqueued now is processed.
  enqueue("ok", "beta");
  EXPECT_TRUE(eventually(
      [&] {
        return sample(get(server_->port(), "/metrics").body,
                      R"(autodevs_worker_tasks_processed_total{task_type="ok",queue="beta"})") == 1;
      },
      10s));
}

TEST(HttpServer, LivenessAndFailingOrThrowingChecks) {
  bool alive = true;
  http::ServerOptions so;
  so.address = "127.0.0.1:0";
  so.liveness = [&] { return alive; };
  so.readiness = {{"database", [] { return false; }},
                  {"thrower", []() -> bool { throw std::runtime_error("x"); }}};
  http::Server server(so);
  server.start();
  EXPECT_EQ(get(server.port(), "/healthz").status, 200);
  alive = false;
  EXPECT_EQ(get(server.port(), "/healthz").status, 503);
  const auto ready = get(server.port(), "/readyz");
  EXPECT_EQ(ready.status, 503);
  EXPECT_EQ(ready.body, "database failed\nthrower failed\n");
  EXPECT_EQ(get(server.port(), "/metrics").status, 404);  // no metrics source given
  server.stop();
  EXPECT_EQ(get(server.port(), "/healthz").status, 0);  // nothing listens any more
  server.stop();                                        // idempotent
}

// 200 clients that each send a header line every second hold their connections open (inside the
// read timeout); /healthz still answers everyone else at once.
TEST(HttpServer, HealthzAnswersBesideTwoHundredSlowConnections) {
  http::ServerOptions so;
  so.address = "127.0.0.1:0";
  http::Server server(so);
  server.start();
  std::vector<int> slow;
  for (int i = 0; i < 200; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(server.port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    const std::string start = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
    ASSERT_EQ(::send(fd, start.data(), start.size(), MSG_NOSIGNAL), static_cast<ssize_t>(start.size()));
    slow.push_back(fd);
  }
  using Clock = std::chrono::steady_clock;
  std::chrono::milliseconds worst{0};
  const auto until = Clock::now() + std::chrono::seconds(3);
  auto next_drip = Clock::now();
  while (Clock::now() < until) {
    if (Clock::now() >= next_drip) {  // one more header line each: never a complete request
      for (int fd : slow) ::send(fd, "X-Slow: 1\r\n", 11, MSG_NOSIGNAL);
      next_drip += std::chrono::seconds(1);
    }
    const auto t0 = Clock::now();
    EXPECT_EQ(get(server.port(), "/healthz").status, 200);
    worst = std::max(worst, std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_LT(worst.count(), 100) << "slowest /healthz beside 200 slow connections";
  for (int fd : slow) ::close(fd);
  server.stop();
}

// Sends `bytes` on a fresh connection and returns all that comes back until the server closes it
// (at most 10 s).
std::string round_trip(int port, std::string_view bytes) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  const timeval ten_seconds{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &ten_seconds, sizeof ten_seconds);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
  std::string reply;
  char buffer[4096];
  for (ssize_t n; (n = ::recv(fd, buffer, sizeof buffer, 0)) > 0;)
    reply.append(buffer, static_cast<size_t>(n));
  ::close(fd);
  return reply;
}

std::string status_line(const std::string& reply) { return reply.substr(0, reply.find("\r\n")); }

// What the server answers to requests a scraper would not send: each gets its status and the
// connection closes (round_trip() returns only at the close).
TEST(HttpServer, MalformedOversizedAndOtherMethodsGetTheirStatus) {
  http::ServerOptions so;
  so.address = "127.0.0.1:0";
  so.metrics = [] { return std::string("up 1\n"); };
  http::Server server(so);
  server.start();
  const int port = server.port();
  EXPECT_EQ(status_line(round_trip(port, "GARBAGE\r\n\r\n")), "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(status_line(round_trip(port, "GET metrics HTTP/1.1\r\n\r\n")), "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(status_line(round_trip(port, "GET /metrics HTTP/2.0\r\n\r\n")), "HTTP/1.1 400 Bad Request");
  const std::string post = round_trip(port, "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
  EXPECT_EQ(status_line(post), "HTTP/1.1 405 Method Not Allowed");
  EXPECT_NE(post.find("\r\nAllow: GET, HEAD\r\n"), std::string::npos) << post;
  const std::string huge = "GET /metrics HTTP/1.1\r\nX-Filler: " + std::string(20000, 'x') + "\r\n\r\n";
  EXPECT_EQ(status_line(round_trip(port, huge)), "HTTP/1.1 431 Request Header Fields Too Large");
  EXPECT_EQ(status_line(round_trip(port, "GET /nothing HTTP/1.1\r\n\r\n")), "HTTP/1.1 404 Not Found");

  // A query string is ignored; a bare-LF head is accepted; HEAD has the headers without the body.
  const std::string with_query = round_trip(port, "GET /metrics?x=1 HTTP/1.0\n\n");
  EXPECT_EQ(status_line(with_query), "HTTP/1.1 200 OK");
  EXPECT_EQ(with_query.substr(with_query.size() - 5), "up 1\n");
  const std::string head = round_trip(port, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(status_line(head), "HTTP/1.1 200 OK");
  EXPECT_NE(head.find("Content-Length: 5\r\n"), std::string::npos) << head;
  EXPECT_EQ(head.substr(head.size() - 4), "\r\n\r\n") << "HEAD carries no body";

  // http::get, the client `worker plugins` uses, reads the same answers.
  const http::Response got = http::get({"127.0.0.1", port}, "/metrics", 5s);
  EXPECT_EQ(got.status, 200);
  EXPECT_EQ(got.body, "up 1\n");
  EXPECT_EQ(http::get({"127.0.0.1", port}, "/nothing", 5s).status, 404);
  server.stop();
  EXPECT_THROW(http::get({"127.0.0.1", port}, "/metrics", 5s), std::runtime_error);  // nothing listens
}

// A connection that never completes its request is answered 408 after the request timeout (5 s),
// and stop() does not wait for connections still arriving.
TEST(HttpServer, IncompleteRequestsTimeOutAndDoNotHoldStop) {
  http::ServerOptions so;
  so.address = "127.0.0.1:0";
  http::Server server(so);
  server.start();
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(status_line(round_trip(server.port(), "GET /healthz HTTP/1.1\r\n")),
            "HTTP/1.1 408 Request Timeout");
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 4500ms);

  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(server.port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::send(fd, "GET /", 5, MSG_NOSIGNAL), 5);
  const auto t1 = std::chrono::steady_clock::now();
  server.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t1, 2s) << "stop() waited for a request still arriving";
  // Closed by stop(): an orderly end, or a reset when the request's bytes were still unread.
  char byte = 0;
  const ssize_t got = ::recv(fd, &byte, 1, 0);
  EXPECT_TRUE(got == 0 || (got < 0 && errno == ECONNRESET)) << "recv returned " << got;
  ::close(fd);
}

// 40 /readyz requests stuck in a check (Redis hanging, say) take every responder; /healthz is
// still answered, and the requests past the 32 responders are told 503 at once.
TEST(HttpServer, HealthzIsAnsweredWhileEveryResponderWaits) {
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  int waiting = 0;
  http::ServerOptions so;
  so.address = "127.0.0.1:0";
  so.readiness = {{"stuck", [&] {
                     std::unique_lock lock(mu);
                     ++waiting;
                     cv.notify_all();
                     cv.wait(lock, [&] { return release; });
                     return true;
                   }}};
  http::Server server(so);
  server.start();
  std::vector<std::thread> clients;
  std::vector<std::string> replies(40);
  std::atomic<int> answered{0};
  for (size_t i = 0; i < replies.size(); ++i)
    clients.emplace_back([&, i] {
      replies[i] = round_trip(server.port(), "GET /readyz HTTP/1.1\r\n\r\n");
      ++answered;
    });
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return waiting == 32; })) << waiting << " checks running";
  }
  EXPECT_EQ(http::get({"127.0.0.1", server.port()}, "/healthz", 5s).status, 200);
  // The 8 past the responders are answered while the 32 still wait; only then are the 32 let go
  // (a request arriving after that would find a free responder).
  ASSERT_TRUE(eventually([&] { return answered.load() == 8; }, 10s)) << answered.load() << " answered";
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  for (auto& c : clients) c.join();
  const auto busy = std::count_if(replies.begin(), replies.end(), [](const std::string& r) {
    return status_line(r) == "HTTP/1.1 503 Service Unavailable";
  });
  const auto ready = std::count_if(replies.begin(), replies.end(),
                                   [](const std::string& r) { return status_line(r) == "HTTP/1.1 200 OK"; });
  EXPECT_EQ(busy, 8);
  EXPECT_EQ(ready, 32);
  server.stop();
}

TEST(HttpServer, AddressErrors) {
  EXPECT_THROW(http::parse_address("9090"), std::invalid_argument);
  EXPECT_THROW(http::parse_address("host:99999"), std::invalid_argument);
  EXPECT_THROW(http::parse_address("host:x"), std::invalid_argument);
  EXPECT_EQ(http::parse_address(":9090").host, "0.0.0.0");
  EXPECT_EQ(http::parse_address("[::1]:9090").host, "::1");
  // A port in use is a start() error, not a silent non-start.
  http::ServerOptions so;
  so.address = "127.0.0.1:0";
  http::Server first(so);
  first.start();
  so.address = "127.0.0.1:" + std::to_string(first.port());
  http::Server second(so);
  EXPECT_THROW(second.start(), std::runtime_error);
}

}  // namespace
}  // namespace wk::test
