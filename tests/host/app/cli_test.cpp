// The `worker` binary and scripts/run-worker.sh as an operator meets them.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

#include "support/child_process.hpp"
#include "support/test_env.hpp"

namespace wk::test {
namespace {

using namespace std::chrono_literals;

std::string worker_bin() { return worker_binary(); }

// worker_env() of "KEY=VALUE" settings: this process's environment without the worker's own.
std::vector<std::string> clean_env(const std::vector<std::string>& extra) {
  std::map<std::string, std::string> settings;
  for (const auto& entry : extra)
    settings[entry.substr(0, entry.find('='))] = entry.substr(entry.find('=') + 1);
  return worker_env(settings);
}

// The child's exit code, or -1 when it did not exit within `timeout`.
int wait(ChildProcess& p, std::chrono::milliseconds timeout) { return p.wait_exit(timeout).value_or(-1); }

// A private directory with an empty plugins dir and an empty settings file, so neither the
// developer's ./.env nor leftovers influence the worker.
class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("wk-cli-test-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_ / "plugins");
    std::filesystem::permissions(dir_ / "plugins", std::filesystem::perms(0755));
    std::ofstream(dir_ / "empty.env") << "# nothing\n";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string env_file() const { return (dir_ / "empty.env").string(); }
  std::string plugins_dir() const { return (dir_ / "plugins").string(); }

  // Settings pointing at the test services, metrics off (no port clashes between tests).
  static std::vector<std::string> service_env() {
    const auto r = redis_addr();
    const auto pg = pg_addr();
    return clean_env({"REDIS_HOST=" + r.host, "REDIS_PORT=" + std::to_string(r.port), "DB_HOST=" + pg.host,
                      "DB_PORT=" + std::to_string(pg.port), "DB_USERNAME=" + pg.user, "DB_NAME=" + pg.db,
                      "WORKER_METRICS_ADDR=", "WORKER_SHUTDOWN_TIMEOUT=5s"});
  }

  std::filesystem::path dir_;
};

TEST_F(CliTest, VersionFlagAndCommandPrintTheVersion) {
  const std::regex version_line(R"(worker \d+\.\d+\.\d+\n)");
  for (const char* arg : {"--version", "version"}) {
    ChildProcess p({worker_bin(), arg}, clean_env({}));
    EXPECT_EQ(wait(p, 10s), 0) << arg << ": " << p.err();
    EXPECT_TRUE(std::regex_match(p.out(), version_line)) << arg << ": " << p.out();
  }
}

// A listening socket that records whether anyone connected: "before touching Redis" made
// observable.
class Listener {
 public:
  Listener() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    auto* sa = reinterpret_cast<sockaddr*>(&addr);
    if (fd_ < 0 || bind(fd_, sa, len) != 0 || listen(fd_, 8) != 0 || getsockname(fd_, sa, &len) != 0) {
      throw std::runtime_error("listener");
    }
    port_ = ntohs(addr.sin_port);
  }
  ~Listener() { close(fd_); }
  int port() const { return port_; }
  bool someone_connected() const {
    const int c = accept(fd_, nullptr, nullptr);
    if (c >= 0) close(c);
    return c >= 0;
  }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST_F(CliTest, BadConfigValueExitsNonZeroNamingTheVariableBeforeTouchingRedis) {
  Listener fake_redis;
  const auto env = clean_env({"REDIS_HOST=127.0.0.1", "REDIS_PORT=" + std::to_string(fake_redis.port()),
                              "WORKER_METRICS_ADDR=", "WORKER_CONCURRENCY=lots"});
  {
    ChildProcess p({worker_bin(), "--env-file", env_file(), "--plugins", plugins_dir()}, env);
    EXPECT_NE(wait(p, 10s), 0);
    EXPECT_NE(p.err().find("WORKER_CONCURRENCY"), std::string::npos) << p.err();
    EXPECT_NE(p.err().find("expected an integer"), std::string::npos) << p.err();
    EXPECT_EQ(p.err().find("Starting job server"), std::string::npos) << p.err();
  }
  {
    // The same through a Go-style flag.
    ChildProcess p({worker_bin(), "--env-file", env_file(), "-queues=critical"},
                   clean_env({"REDIS_PORT=" + std::to_string(fake_redis.port())}));
    EXPECT_NE(wait(p, 10s), 0);
    EXPECT_NE(p.err().find("WORKER_QUEUES"), std::string::npos) << p.err();
    EXPECT_NE(p.err().find("command line"), std::string::npos) << p.err();
  }
  EXPECT_FALSE(fake_redis.someone_connected());
}

// A settings-file line the worker cannot parse is refused naming file and line, and no part of the
// value (here a password, written without its "=") reaches any output.
TEST_F(CliTest, AMalformedSettingsLineNeverShowsItsValue) {
  const auto bad_env = dir_ / "bad.env";
  for (const char* line : {"DB_PASSWORD s3cr3t==", "DB_PASSWORD=\"s3cr3t==", "export DB PASSWORD=s3cr3t=="}) {
    std::ofstream(bad_env) << "# settings\n" << line << "\n";
    ChildProcess p({worker_bin(), "--env-file", bad_env.string(), "--plugins", plugins_dir()}, service_env());
    EXPECT_NE(wait(p, 10s), 0) << line;
    EXPECT_NE(p.err().find("bad.env:2"), std::string::npos) << line << ": " << p.err();
    EXPECT_EQ(p.output().find("s3cr3t"), std::string::npos) << line << ": " << p.output();
  }
}

TEST_F(CliTest, ServesWithEmptyPluginsDirLogsStartInLogfmtAndExitsZeroOnSigterm) {
  ChildProcess p({worker_bin(), "-worker=cli-test-1", "-plugins", plugins_dir(), "--env-file", env_file()},
                 service_env());
  ASSERT_TRUE(p.await("msg=\"Starting job worker\"", 20s, ChildProcess::Stream::err)) << p.err();
  ASSERT_TRUE(p.await("\n", 5s, ChildProcess::Stream::err)) << p.err();
  const auto first_line = p.err().substr(0, p.err().find('\n'));
  const std::regex logfmt(
      R"(time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=INFO msg="Starting job worker" worker_name=cli-test-1)");
  EXPECT_TRUE(std::regex_match(first_line, logfmt)) << first_line;
  p.signal(SIGTERM);
  EXPECT_EQ(wait(p, 30s), 0) << p.err();
  EXPECT_NE(p.err().find("msg=\"Worker stopped\""), std::string::npos) << p.err();
}

// `--metrics-addr=` (an empty value) disables the endpoint, and does not take the next word as
// its value: the address in the environment is in use, which would be a start-up error.
TEST_F(CliTest, AnEmptyFlagValueDisablesTheMetricsEndpoint) {
  Listener busy;
  auto env = service_env();
  std::erase_if(env, [](const std::string& e) { return e.rfind("WORKER_METRICS_ADDR=", 0) == 0; });
  env.push_back("WORKER_METRICS_ADDR=127.0.0.1:" + std::to_string(busy.port()));
  for (const char* flag : {"--metrics-addr=", "-metrics-addr="}) {
    ChildProcess p({worker_bin(), flag, "--plugins", plugins_dir(), "--env-file", env_file()}, env);
    ASSERT_TRUE(p.await_line({"Starting queue engine"}, 20s)) << flag << ": " << p.output();
    EXPECT_EQ(p.output().find("metrics"), std::string::npos) << flag << ": " << p.output();
    p.signal(SIGTERM);
    EXPECT_EQ(wait(p, 30s), 0) << p.output();
  }
}

TEST_F(CliTest, GnuFlagsAndSigintAlsoWork) {
  const auto redis = redis_addr();
  ChildProcess p(
      {worker_bin(), "--worker", "cli-test-2", "-v", "--plugins", plugins_dir(), "--env-file", env_file()},
      service_env());
  ASSERT_TRUE(
      p.await("msg=\"Starting job server\" redis_addr=" + redis.host + ":" + std::to_string(redis.port), 20s,
              ChildProcess::Stream::err))
      << p.err();
  EXPECT_NE(p.err().find("worker_name=cli-test-2"), std::string::npos) << p.err();
  EXPECT_NE(p.err().find("level=DEBUG"), std::string::npos) << "-v gives debug lines: " << p.err();
  p.signal(SIGINT);
  EXPECT_EQ(wait(p, 30s), 0) << p.err();
}

TEST_F(CliTest, EnqueuePrintsTheIdAndRejectsBadInput) {
  const std::string id = "cli-test-" + std::to_string(getpid());
  const std::vector<std::string> base = {worker_bin(), "enqueue",  "--env-file", env_file(),
                                         "--type",     "cli:test", "--queue",    "cli_test"};
  {
    auto argv = base;
    argv.insert(argv.end(), {"--payload", R"({"n":1})", "--id", id, "--in", "1h", "--retry", "3"});
    ChildProcess p(argv, service_env());
    EXPECT_EQ(wait(p, 20s), 0) << p.err();
    EXPECT_EQ(p.out(), id + "\n");
  }
  {
    auto argv = base;
    argv.insert(argv.end(), {"--id", id});
    ChildProcess p(argv, service_env());
    EXPECT_NE(wait(p, 20s), 0);
    EXPECT_NE(p.err().find("conflicts"), std::string::npos) << p.err();
  }
  const std::vector<std::pair<std::vector<std::string>, std::string>> bad = {
      {{"--payload", "{not json"}, "--payload"},
      {{"--in", "5x"}, "--in"},
      {{"--at", "tomorrow"}, "--at"},
      {{"--in", "5m", "--at", "2030-01-01T00:00:00Z"}, "not both"},
      {{"--retry", "-1"}, "--retry"},
      {{"--unique", "10ms"}, "--unique"},
  };
  for (const auto& [extra, expected] : bad) {
    auto argv = base;
    argv.insert(argv.end(), extra.begin(), extra.end());
    ChildProcess p(argv, service_env());
    EXPECT_EQ(wait(p, 20s), 2) << expected << ": " << p.err();
    EXPECT_NE(p.err().find(expected), std::string::npos) << p.err();
    EXPECT_EQ(p.out(), "");
  }
}

TEST_F(CliTest, RunWorkerScriptPrintsUsage) {
  ChildProcess p({"/bin/bash", std::string(WK_SOURCE_DIR) + "/scripts/run-worker.sh", "-h"}, clean_env({}));
  EXPECT_EQ(wait(p, 20s), 0) << p.err();
  EXPECT_NE(p.out().find("Usage: scripts/run-worker.sh"), std::string::npos) << p.out();
  EXPECT_NE(p.out().find("-n NAME"), std::string::npos) << p.out();
  EXPECT_NE(p.out().find("REDIS_HOST"), std::string::npos) << p.out();
}

}  // namespace
}  // namespace wk::test
