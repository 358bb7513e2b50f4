// The worker over TLS (docs/operations.md, "Redis in production"): it drains 10k tasks through a
// TLS-only Redis, with and without a client certificate, and its one-shot commands (`enqueue`,
// `stats`) and /metrics use the same settings; a certificate that does not verify stops it at start-up with
// the setting named and no task touched.
#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "asynq/keys.hpp"
#include "fault_support.hpp"
#include "support/child_process.hpp"
#include "support/private_redis.hpp"
#include "support/test_certs.hpp"
#include "support/test_env.hpp"

namespace wk::faults {
namespace {

using namespace std::chrono_literals;
using test::ChildProcess;
using test::TempDir;

constexpr const char* kQueue = "tls";
constexpr size_t kTasks = 10000;

class WorkerOverTls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { certs_ = std::make_unique<test::TestCertificates>(); }
  static void TearDownTestSuite() { certs_.reset(); }

  WorkerOverTls() : dir_("wk-tls") {
    std::filesystem::create_directories(plugins_);
    std::filesystem::permissions(plugins_, std::filesystem::perms::owner_all);
    std::filesystem::copy_file(WK_FAULTS_PLUGIN, plugins_ / "faults.so");
  }

  // A TLS-only Redis showing `shown`; the test's own connections to it verify nothing.
  void start_redis(const test::TestCertificates::Pair& shown, bool require_client_cert) {
    test::PrivateRedis::Options o;
    o.tls = test::PrivateRedis::Options::Tls{shown.cert, shown.key, certs_->ca(), require_client_cert};
    redis::TlsOptions tls;
    tls.insecure = true;
    tls.cert_file = certs_->client().cert.string();
    tls.key_file = certs_->client().key.string();
    o.client_tls = redis::make_tls_client(tls);
    redis_ = std::make_unique<test::PrivateRedis>(o);
  }

  // The fault tests' settings with the Redis ones replaced by `redis_settings`.
  std::map<std::string, std::string> settings(
      const std::map<std::string, std::string>& redis_settings) const {
    auto s = worker_settings(redis_->port(), plugins_, "tls-host", kQueue);
    for (const char* replaced : {"REDIS_HOST", "REDIS_PORT", "REDIS_DB"}) s.erase(replaced);
    s["WORKER_CONCURRENCY"] = "8";
    s["LOG_LEVEL"] = "info";  // a line per task at debug: 10k of them
    for (const auto& [k, v] : redis_settings) s[k] = v;
    return s;
  }

  task::EnqueueRequest quick_task() const {
    task::EnqueueRequest r;
    r.type = "fault:quick";
    r.queue = kQueue;
    return r;
  }

  // Enqueues kTasks (kTasks - 1 directly, one with `worker enqueue`), runs a worker with `s`
  // until every task is processed, then checks `worker stats` agrees.
  void drain(const std::map<std::string, std::string>& s) {
    enqueue_many(redis_->settings(), quick_task(), kTasks - 1);
    const auto [enqueue_code, enqueue_out] =
        run_worker_command({"enqueue", "--type", "fault:quick", "--queue", kQueue}, s);
    ASSERT_EQ(enqueue_code, 0) << enqueue_out;

    auto serving = s;
    const int metrics_port = test::free_port();
    serving["WORKER_METRICS_ADDR"] = "127.0.0.1:" + std::to_string(metrics_port);
    ChildProcess worker({test::worker_binary(), "--plugins", plugins_.string()}, test::worker_env(serving));
    ASSERT_TRUE(worker.await_line({"Starting job server", "redis_tls=true"}, 20s)) << worker.output();
    auto conn = redis_->connect();
    const bool drained = test::eventually(
        [&] {
          const auto processed = conn.command({"GET", asynq::processed_total_key(kQueue)});
          return !processed.is_nil() && processed.str() == std::to_string(kTasks);
        },
        180s, 50ms);
    ASSERT_TRUE(drained) << worker.output().substr(0, 4000);
    QueueView q{conn, kQueue};
    EXPECT_TRUE(q.list("pending").empty());
    EXPECT_EQ(conn.command({"GET", asynq::failed_total_key(kQueue)}).is_nil(), true);

    // /metrics reads the queue sizes over the same TLS settings at every scrape.
    httplib::Client http("127.0.0.1", metrics_port);
    const auto metrics = http.Get("/metrics");
    ASSERT_TRUE(metrics);
    EXPECT_NE(metrics->body.find("queue_size{queue=\"tls\",state=\"pending\"} 0"), std::string::npos)
        << metrics->body.substr(0, 4000);
    EXPECT_NE(metrics->body.find("queue_size_read_errors 0"), std::string::npos)
        << metrics->body.substr(0, 4000);

    const auto [stats_code, stats_out] = run_worker_command({"stats", "--json"}, s);
    ASSERT_EQ(stats_code, 0) << stats_out;
    EXPECT_NE(stats_out.find("\"processed_total\": " + std::to_string(kTasks)), std::string::npos)
        << stats_out;
    EXPECT_EQ(worker.stop(10s), 0) << worker.output().substr(0, 4000);
  }

  // Starts a worker with `s` against a queue holding one task: it must exit at start-up with
  // `setting` in its error, and the task must still be pending, untouched.
  void expect_refused_at_start(const std::map<std::string, std::string>& s, const std::string& setting) {
    const std::string id = enqueue(redis_->settings(), quick_task());
    ChildProcess worker({test::worker_binary(), "--plugins", plugins_.string()}, test::worker_env(s));
    const auto code = worker.wait_exit(30s);
    ASSERT_TRUE(code.has_value()) << "still running:\n" << worker.output();
    EXPECT_EQ(*code, 1) << worker.output();
    const auto line = worker.await_line({"Cannot start", setting}, 1s);
    EXPECT_TRUE(line.has_value()) << worker.output();
    auto conn = redis_->connect();
    QueueView q{conn, kQueue};
    EXPECT_EQ(q.list("pending"), std::vector<std::string>{id});
    EXPECT_TRUE(q.list("active").empty());
    EXPECT_EQ(q.field(id, "state"), "pending");
  }

  static inline std::unique_ptr<test::TestCertificates> certs_;
  TempDir dir_;
  std::filesystem::path plugins_ = dir_ / "plugins";
  std::unique_ptr<test::PrivateRedis> redis_;
};

TEST_F(WorkerOverTls, DrainsTenThousandTasksThroughARedissUrl) {
  start_redis(certs_->server(), /*require_client_cert=*/false);
  drain(settings({{"REDIS_URL", "rediss://localhost:" + std::to_string(redis_->port()) + "/0"},
                  {"REDIS_TLS_CA_FILE", certs_->ca().string()}}));
}

TEST_F(WorkerOverTls, DrainsTenThousandTasksOverMutualTls) {
  start_redis(certs_->server(), /*require_client_cert=*/true);
  drain(settings({{"REDIS_HOST", "127.0.0.1"},
                  {"REDIS_PORT", std::to_string(redis_->port())},
                  {"REDIS_TLS", "true"},
                  {"REDIS_TLS_CA_FILE", certs_->ca().string()},
                  {"REDIS_TLS_CERT_FILE", certs_->client().cert.string()},
                  {"REDIS_TLS_KEY_FILE", certs_->client().key.string()}}));
}

TEST_F(WorkerOverTls, AWrongCaStopsTheStartNamingTheCaFile) {
  start_redis(certs_->server(), false);
  expect_refused_at_start(settings({{"REDIS_URL", "rediss://localhost:" + std::to_string(redis_->port())},
                                    {"REDIS_TLS_CA_FILE", certs_->other_ca().string()}}),
                          "REDIS_TLS_CA_FILE");
}

TEST_F(WorkerOverTls, AnExpiredCertificateStopsTheStart) {
  start_redis(certs_->expired_server(), false);
  expect_refused_at_start(settings({{"REDIS_URL", "rediss://localhost:" + std::to_string(redis_->port())},
                                    {"REDIS_TLS_CA_FILE", certs_->ca().string()}}),
                          "has expired (checked against REDIS_TLS_CA_FILE=");
}

TEST_F(WorkerOverTls, ANameMismatchStopsTheStartNamingTheServerNameSetting) {
  start_redis(certs_->other_name_server(), false);
  expect_refused_at_start(settings({{"REDIS_URL", "rediss://localhost:" + std::to_string(redis_->port())},
                                    {"REDIS_TLS_CA_FILE", certs_->ca().string()}}),
                          "REDIS_TLS_SERVER_NAME");
}

TEST_F(WorkerOverTls, AMissingClientCertificateStopsTheStartNamingTheSetting) {
  start_redis(certs_->server(), /*require_client_cert=*/true);
  expect_refused_at_start(settings({{"REDIS_URL", "rediss://localhost:" + std::to_string(redis_->port())},
                                    {"REDIS_TLS_CA_FILE", certs_->ca().string()}}),
                          "REDIS_TLS_CERT_FILE");
}

}  // namespace
}  // namespace wk::faults
