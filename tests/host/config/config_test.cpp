#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <tuple>

#include "config/config.hpp"

namespace wk::config {
namespace {

using namespace std::chrono_literals;

// A private working directory per test, removed afterwards.
class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("wk-config-test-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    sources_.working_dir = dir_;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write_env(const std::string& name, const std::string& text) { std::ofstream(dir_ / name) << text; }

  // Expects load() to fail naming `variable`; returns the message.
  std::string expect_error(const std::string& variable) {
    try {
      load(sources_);
    } catch (const ConfigError& e) {
      EXPECT_EQ(e.variable(), variable) << e.what();
      EXPECT_NE(std::string(e.what()).find(variable), std::string::npos) << e.what();
      return e.what();
    }
    ADD_FAILURE() << "no error for " << variable;
    return {};
  }

  std::filesystem::path dir_;
  Sources sources_;
};

TEST_F(ConfigTest, DefaultsMatchTheDesign) {
  const auto c = load(sources_);
  EXPECT_EQ(c.redis_host, "localhost");
  EXPECT_EQ(c.redis_port, 6379);
  EXPECT_EQ(c.redis_db, 0);
  EXPECT_EQ(c.redis_username, "");
  EXPECT_EQ(c.redis_password, "");
  EXPECT_EQ(c.db_host, "localhost");
  EXPECT_EQ(c.db_port, 5432);
  EXPECT_EQ(c.db_username, "postgres");
  EXPECT_EQ(c.db_name, "autodevs");
  EXPECT_EQ(c.db_sslmode, "disable");
  EXPECT_EQ(c.concurrency, 4);
  EXPECT_EQ(c.db_pool_size, 4);
  EXPECT_EQ(c.plugins_dir, "./plugins");
  EXPECT_EQ(c.queues, (std::vector<QueueWeight>{{"critical", 10}, {"planning", 6}, {"default", 2}}));
  EXPECT_FALSE(c.strict_priority);
  EXPECT_EQ(c.shutdown_timeout, 30s);
  EXPECT_EQ(c.metrics_addr, "127.0.0.1:9090");
  EXPECT_EQ(c.log_level, log::Level::info);
  EXPECT_EQ(c.log_format, log::Format::logfmt);
  EXPECT_TRUE(c.worker_name.ends_with("-" + std::to_string(getpid()))) << c.worker_name;
  EXPECT_EQ(c.get("WORKTREE_BASE_DIR"), "/tmp/worktrees");
  EXPECT_EQ(c.get("WORKTREE_MAX_PATH_LENGTH"), "4096");
  EXPECT_EQ(c.get("WORKTREE_MIN_DISK_SPACE"), "104857600");
  EXPECT_EQ(c.get("WORKTREE_CLEANUP_INTERVAL"), "24h");
  EXPECT_EQ(c.get("WORKTREE_ENABLE_LOGGING"), "true");
  EXPECT_EQ(c.get("WORKER_NAME"), c.worker_name);
  EXPECT_EQ(c.get("AI_API_KEY"), std::nullopt);
  EXPECT_FALSE(c.env_file_used.has_value());
}

TEST_F(ConfigTest, FlagBeatsEnvironmentBeatsDotenvBeatsDefault) {
  write_env(".env", "WORKER_NAME=from-file\nREDIS_HOST=file-host\nREDIS_PORT=1111\nDB_NAME=filedb\n");
  sources_.environment = {{"WORKER_NAME", "from-env"}, {"REDIS_HOST", "env-host"}};
  sources_.flags = {{"WORKER_NAME", "from-flag"}};
  const auto c = load(sources_);
  EXPECT_EQ(c.worker_name, "from-flag");
  EXPECT_EQ(c.redis_host, "env-host");
  EXPECT_EQ(c.redis_port, 1111);
  EXPECT_EQ(c.db_name, "filedb");
  EXPECT_EQ(c.db_port, 5432);
  EXPECT_EQ(c.redis_addr(), "env-host:1111");
  ASSERT_TRUE(c.env_file_used.has_value());
  EXPECT_EQ(*c.env_file_used, dir_ / ".env");
}

TEST_F(ConfigTest, ExplicitEnvFileReplacesTheImplicitOneAndMustExist) {
  write_env(".env", "WORKER_NAME=implicit\n");
  write_env("other.env", "WORKER_NAME=explicit\n");
  sources_.env_file = dir_ / "other.env";
  EXPECT_EQ(load(sources_).worker_name, "explicit");
  sources_.env_file = dir_ / "missing.env";
  EXPECT_NE(expect_error("--env-file").find("missing.env"), std::string::npos);
}

TEST_F(ConfigTest, PoolSizeDefaultsToConcurrency) {
  sources_.environment = {{"WORKER_CONCURRENCY", "12"}};
  EXPECT_EQ(load(sources_).db_pool_size, 12);
  sources_.environment["DB_POOL_SIZE"] = "3";
  const auto c = load(sources_);
  EXPECT_EQ(c.db_pool_size, 3);
  EXPECT_EQ(c.get("DB_POOL_SIZE"), "3");
}

TEST_F(ConfigTest, LimitsAreParsedAndTheParkingBoundDefaultsToConcurrency) {
  sources_.environment = {{"WORKER_CONCURRENCY", "6"},
                          {"WORKER_LIMITS", "ai:* fleet=3 rate=60/m; git:clone concurrency=2"}};
  auto c = load(sources_);
  ASSERT_EQ(c.limits.size(), 2u);
  EXPECT_EQ(c.limits[0].text(), "ai:* fleet=3 rate=60/m");
  EXPECT_EQ(c.limits[1].concurrency, 2u);
  EXPECT_EQ(c.parked_max, 6);
  EXPECT_TRUE(c.unknown_variables.empty());
  sources_.flags = {{"WORKER_PARKED_MAX", "0"}};
  EXPECT_EQ(load(sources_).parked_max, 0);
  sources_.environment["WORKER_LIMITS"] = "ai:* fleet=three";
  EXPECT_NE(expect_error("WORKER_LIMITS").find("whole number"), std::string::npos);
}

TEST_F(ConfigTest, TheHostIdDefaultsToTheHostNameAndIsChecked) {
  auto c = load(sources_);
  EXPECT_FALSE(c.host_id.empty());
  EXPECT_EQ(c.get("WORKER_HOST_ID"), c.host_id) << "plugins read it through config_get";
  EXPECT_EQ(c.host_queue_timeout, std::chrono::minutes(10));
  sources_.environment = {{"WORKER_HOST_ID", "rack-2.node_7"}, {"WORKER_HOST_QUEUE_TIMEOUT", "30s"}};
  c = load(sources_);
  EXPECT_EQ(c.host_id, "rack-2.node_7");
  EXPECT_EQ(c.host_queue_timeout, std::chrono::seconds(30));
  sources_.environment = {{"WORKER_HOST_ID", "a/b"}};
  expect_error("WORKER_HOST_ID");
  sources_.environment = {{"WORKER_QUEUES", "default=1,host:other=2"}};
  EXPECT_NE(expect_error("WORKER_QUEUES").find("host:"), std::string::npos);
}

TEST_F(ConfigTest, TypedValuesAreParsed) {
  sources_.environment = {{"WORKER_QUEUES", " a = 3 , b=1"},
                          {"WORKER_STRICT_PRIORITY", "true"},
                          {"WORKER_SHUTDOWN_TIMEOUT", "1m30s"},
                          {"WORKER_METRICS_ADDR", ""},
                          {"LOG_LEVEL", "DEBUG"},
                          {"LOG_FORMAT", "json"},
                          {"REDIS_USERNAME", "acl-user"},
                          {"REDIS_DB", "3"},
                          {"DB_SSLMODE", "verify-full"}};
  const auto c = load(sources_);
  EXPECT_EQ(c.queues, (std::vector<QueueWeight>{{"a", 3}, {"b", 1}}));
  EXPECT_TRUE(c.strict_priority);
  EXPECT_EQ(c.shutdown_timeout, 90s);
  EXPECT_EQ(c.metrics_addr, "");
  EXPECT_EQ(c.log_level, log::Level::debug);
  EXPECT_EQ(c.log_format, log::Format::json);
  EXPECT_EQ(c.redis_username, "acl-user");
  EXPECT_EQ(c.redis_db, 3);
  EXPECT_EQ(c.db_sslmode, "verify-full");
}

TEST_F(ConfigTest, EmptyValueMeansDefaultForNumbers) {
  sources_.environment = {{"REDIS_PORT", ""}};
  EXPECT_EQ(load(sources_).redis_port, 6379);
}

TEST_F(ConfigTest, MalformedValuesNameTheVariableAndTheExpectation) {
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {"WORKER_CONCURRENCY", "abc", "integer"},
      {"WORKER_CONCURRENCY", "0", "integer from 1"},
      {"REDIS_PORT", "70000", "integer from 1 to 65535"},
      {"REDIS_DB", "-1", "integer"},
      {"DB_PORT", "5432x", "integer"},
      {"DB_POOL_SIZE", "0", "integer"},
      {"DB_SSLMODE", "maybe", "one of disable"},
      {"WORKER_QUEUES", "critical", "name=weight"},
      {"WORKER_QUEUES", "a=0", "weight"},
      {"WORKER_QUEUES", "a=1,a=2", "twice"},
      {"WORKER_STRICT_PRIORITY", "perhaps", "true or false"},
      {"WORKER_SHUTDOWN_TIMEOUT", "30", "duration"},
      {"WORKER_METRICS_ADDR", "localhost", "host:port"},
      {"LOG_LEVEL", "loud", "one of trace"},
      {"LOG_FORMAT", "xml", "logfmt or json"},
      {"WORKTREE_MAX_PATH_LENGTH", "big", "integer"},
      {"WORKTREE_MIN_DISK_SPACE", "-5", "integer"},
      {"WORKTREE_CLEANUP_INTERVAL", "daily", "duration"},
      {"WORKTREE_ENABLE_LOGGING", "sure", "true or false"},
      {"AI_PROVIDER", "skynet", "one of"},
      {"AI_TIMEOUT", "5", "duration"},
  };
  for (const auto& [variable, value, expected] : cases) {
    sources_.environment = {{variable, value}};
    const auto message = expect_error(variable);
    EXPECT_NE(message.find(expected), std::string::npos) << message;
    EXPECT_NE(message.find(value), std::string::npos) << message;
    EXPECT_NE(message.find("environment"), std::string::npos) << message;
  }
}

TEST_F(ConfigTest, AdvancedEngineTimingsAreHiddenUntilSet) {
  auto c = load(sources_);
  EXPECT_FALSE(c.lease);
  EXPECT_FALSE(c.heartbeat_interval);
  EXPECT_FALSE(c.recoverer_interval);
  EXPECT_FALSE(c.recoverer_cutoff);
  EXPECT_FALSE(c.forwarder_interval);
  EXPECT_FALSE(c.retry_delay);
  EXPECT_FALSE(c.get("WORKER_LEASE"));  // not in the snapshot (nor in debug dumps) unless set

  sources_.environment = {{"WORKER_LEASE", "2s"},
                          {"WORKER_HEARTBEAT_INTERVAL", "300ms"},
                          {"WORKER_RECOVERER_INTERVAL", "250ms"},
                          {"WORKER_RECOVERER_CUTOFF", "0s"},
                          {"WORKER_FORWARDER_INTERVAL", "100ms"},
                          {"WORKER_RETRY_DELAY", "0"}};
  c = load(sources_);
  EXPECT_EQ(c.lease, 2s);
  EXPECT_EQ(c.heartbeat_interval, 300ms);
  EXPECT_EQ(c.recoverer_interval, 250ms);
  EXPECT_EQ(c.recoverer_cutoff, 0s);
  EXPECT_EQ(c.forwarder_interval, 100ms);
  EXPECT_EQ(c.retry_delay, 0s);
  EXPECT_TRUE(c.unknown_variables.empty());

  const std::vector<std::tuple<std::string, std::string, std::string>> bad = {
      {"WORKER_LEASE", "1500ms", "whole number of seconds"},
      {"WORKER_LEASE", "0s", "positive duration"},
      {"WORKER_HEARTBEAT_INTERVAL", "soon", "duration"},
      {"WORKER_RECOVERER_INTERVAL", "0", "positive duration"},
      {"WORKER_FORWARDER_INTERVAL", "-1s", "duration"},
      {"WORKER_RETRY_DELAY", "0.5s", "whole number of seconds"},
      {"WORKER_LEASE", "5s", "shorter than the lease"},  // default heartbeat 5s
  };
  for (const auto& [variable, value, expected] : bad) {
    sources_.environment = {{variable, value}};
    const auto message = expect_error(variable);
    EXPECT_NE(message.find(expected), std::string::npos) << message;
  }
  sources_.environment = {{"WORKER_LEASE", "3s"}, {"WORKER_HEARTBEAT_INTERVAL", "3s"}};
  EXPECT_NE(expect_error("WORKER_HEARTBEAT_INTERVAL").find("shorter than the lease"), std::string::npos);
}

TEST_F(ConfigTest, ErrorsFromFlagsSayCommandLine) {
  sources_.flags = {{"WORKER_CONCURRENCY", "x"}};
  EXPECT_NE(expect_error("WORKER_CONCURRENCY").find("command line"), std::string::npos);
}

TEST_F(ConfigTest, SnapshotKeepsPluginVariablesAndRedactsSecrets) {
  write_env(".env", "AI_API_KEY=sk-file-secret\nMY_PLUGIN_SETTING=1\n");
  sources_.environment = {{"DB_PASSWORD", "hunter2"},
                          {"REDIS_PASSWORD", "redispw"},
                          {"AI_MODEL", "gpt-x"},
                          {"AI_EXTRA_TOKEN", "tok"},
                          {"WORKTREE_CUSTOM", "c"}};
  const auto c = load(sources_);
  EXPECT_EQ(c.get("AI_API_KEY"), "sk-file-secret");
  EXPECT_EQ(c.get("DB_PASSWORD"), "hunter2");
  EXPECT_EQ(c.get("AI_MODEL"), "gpt-x");
  EXPECT_EQ(c.get("WORKTREE_CUSTOM"), "c");
  EXPECT_EQ(c.get("MY_PLUGIN_SETTING"), "1");
  EXPECT_EQ(c.db_password, "hunter2");
  EXPECT_EQ(c.redis_password, "redispw");
  const auto dump = c.redacted();
  EXPECT_EQ(dump.at("AI_API_KEY"), "<redacted>");
  EXPECT_EQ(dump.at("DB_PASSWORD"), "<redacted>");
  EXPECT_EQ(dump.at("REDIS_PASSWORD"), "<redacted>");
  EXPECT_EQ(dump.at("AI_EXTRA_TOKEN"), "<redacted>");
  EXPECT_EQ(dump.at("AI_MODEL"), "gpt-x");
  for (const auto& [k, v] : dump) {
    EXPECT_EQ(v.find("hunter2"), std::string::npos) << k;
    EXPECT_EQ(v.find("sk-file-secret"), std::string::npos) << k;
  }
}

TEST_F(ConfigTest, SecretsNeverAppearInErrors) {
  write_env(".env", "DB_PASSWORD=\"unterminated-secret\n");
  try {
    load(sources_);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()).find("unterminated-secret"), std::string::npos) << e.what();
    EXPECT_EQ(e.variable(), "DB_PASSWORD");
  }
}

TEST_F(ConfigTest, UnknownHostVariablesAreReportedNotFatal) {
  sources_.environment = {{"WORKER_CONCURENCY", "8"}, {"AI_WHATEVER", "x"}};
  const auto c = load(sources_);
  EXPECT_EQ(c.unknown_variables, std::vector<std::string>{"WORKER_CONCURENCY"});
}

TEST_F(ConfigTest, RedisUrlSetsTheConnectionAndRedactsItsPassword) {
  sources_.environment = {{"REDIS_URL", "rediss://ops:p%40ss:w0rd@redis.example.com:6380/3"}};
  const auto c = load(sources_);
  EXPECT_EQ(c.redis_host, "redis.example.com");
  EXPECT_EQ(c.redis_port, 6380);
  EXPECT_EQ(c.redis_username, "ops");
  EXPECT_EQ(c.redis_password, "p@ss:w0rd");
  EXPECT_EQ(c.redis_db, 3);
  EXPECT_TRUE(c.redis_tls);
  EXPECT_EQ(c.redacted().at("REDIS_URL"), "rediss://ops:<redacted>@redis.example.com:6380/3");

  sources_.environment = {{"REDIS_URL", "redis://[::1]"}};
  const auto v6 = load(sources_);
  EXPECT_EQ(v6.redis_host, "::1");
  EXPECT_EQ(v6.redis_port, 6379);
  EXPECT_FALSE(v6.redis_tls);
  EXPECT_EQ(v6.redis_password, "");

  sources_.environment = {{"REDIS_URL", "redis://onlysecret@h"}};
  const auto password_only = load(sources_);
  EXPECT_EQ(password_only.redis_password, "onlysecret");
  EXPECT_EQ(password_only.redis_username, "");
  EXPECT_EQ(password_only.redacted().at("REDIS_URL"), "redis://<redacted>@h");
}

TEST_F(ConfigTest, BadRedisUrlsNameTheVariableAndNeverShowThePassword) {
  for (const std::string url :
       {"http://u:hunter2@h", "redis://u:hunter2@h:99999", "redis://u:hunter2@h/x", "redis://u:hunter2@",
        "redis://u:hunter2@h/0?tls=1", "redis://u:hunter2%zz@h"}) {
    sources_.environment = {{"REDIS_URL", url}};
    const auto message = expect_error("REDIS_URL");
    EXPECT_EQ(message.find("hunter2"), std::string::npos) << message;
    EXPECT_NE(message.find("redis://"), std::string::npos) << message;
  }
}

TEST_F(ConfigTest, RedisUrlAndTheVariablesItReplacesAreNotSetTogether) {
  sources_.environment = {{"REDIS_URL", "redis://h:1"}, {"REDIS_PORT", "2"}};
  const auto message = expect_error("REDIS_PORT");
  EXPECT_NE(message.find("REDIS_URL"), std::string::npos) << message;
}

TEST_F(ConfigTest, TlsSettingsNeedTlsOnAndAKeyNeedsItsCertificate) {
  sources_.environment = {{"REDIS_TLS_CA_FILE", "/etc/ca.pem"}};
  EXPECT_NE(expect_error("REDIS_TLS_CA_FILE").find("REDIS_TLS=true"), std::string::npos);

  sources_.environment = {{"REDIS_TLS", "true"}, {"REDIS_TLS_KEY_FILE", "/k.pem"}};
  expect_error("REDIS_TLS_KEY_FILE");

  sources_.environment = {{"REDIS_URL", "rediss://h"}, {"REDIS_TLS", "false"}};
  expect_error("REDIS_TLS");

  sources_.environment = {{"REDIS_TLS", "yes"},
                          {"REDIS_TLS_CA_FILE", "/ca.pem"},
                          {"REDIS_TLS_CERT_FILE", "/c.pem"},
                          {"REDIS_TLS_KEY_FILE", "/k.pem"},
                          {"REDIS_TLS_SERVER_NAME", "redis.internal"},
                          {"REDIS_TLS_INSECURE", "true"}};
  const auto c = load(sources_);
  EXPECT_TRUE(c.redis_tls);
  EXPECT_EQ(c.redis_tls_ca_file, "/ca.pem");
  EXPECT_EQ(c.redis_tls_cert_file, "/c.pem");
  EXPECT_EQ(c.redis_tls_key_file, "/k.pem");
  EXPECT_EQ(c.redis_tls_server_name, "redis.internal");
  EXPECT_TRUE(c.redis_tls_insecure);
  EXPECT_TRUE(c.unknown_variables.empty());
}

TEST_F(ConfigTest, SentinelsReplaceTheHostAndNeedTheMasterName) {
  sources_.environment = {{"REDIS_SENTINELS", "10.0.0.1:26379, sentinel-2:26380"},
                          {"REDIS_SENTINEL_MASTER", "mymaster"},
                          {"REDIS_SENTINEL_PASSWORD", "s3cret"},
                          {"REDIS_PASSWORD", "masterpw"}};
  const auto c = load(sources_);
  EXPECT_EQ(c.redis_sentinels, (std::vector<std::string>{"10.0.0.1:26379", "sentinel-2:26380"}));
  EXPECT_EQ(c.redis_sentinel_master, "mymaster");
  EXPECT_EQ(c.redis_sentinel_password, "s3cret");
  EXPECT_EQ(c.redis_password, "masterpw");
  EXPECT_EQ(c.redacted().at("REDIS_SENTINEL_PASSWORD"), "<redacted>");
  EXPECT_EQ(c.redis_addr(), "master mymaster via sentinels 10.0.0.1:26379,sentinel-2:26380");
  EXPECT_TRUE(c.unknown_variables.empty());

  sources_.environment = {{"REDIS_SENTINELS", "10.0.0.1:26379"}};
  expect_error("REDIS_SENTINEL_MASTER");
  sources_.environment = {{"REDIS_SENTINELS", "10.0.0.1"}, {"REDIS_SENTINEL_MASTER", "m"}};
  expect_error("REDIS_SENTINELS");
  sources_.environment = {{"REDIS_SENTINELS", "h:1"}, {"REDIS_SENTINEL_MASTER", "m"}, {"REDIS_HOST", "x"}};
  expect_error("REDIS_HOST");
  sources_.environment = {{"REDIS_SENTINEL_MASTER", "m"}};
  expect_error("REDIS_SENTINEL_MASTER");
}

TEST_F(ConfigTest, ClusterNodesReplaceTheHostAndKeepDatabaseZero) {
  sources_.environment = {{"REDIS_CLUSTER_NODES", "10.0.0.1:7000,10.0.0.2:7000"}, {"REDIS_PASSWORD", "pw"}};
  const auto c = load(sources_);
  EXPECT_EQ(c.redis_cluster_nodes, (std::vector<std::string>{"10.0.0.1:7000", "10.0.0.2:7000"}));
  EXPECT_EQ(c.redis_addr(), "cluster 10.0.0.1:7000,10.0.0.2:7000");
  EXPECT_TRUE(c.unknown_variables.empty());

  sources_.environment = {{"REDIS_CLUSTER_NODES", "10.0.0.1:7000"}, {"REDIS_DB", "2"}};
  expect_error("REDIS_DB");
  sources_.environment = {{"REDIS_CLUSTER_NODES", "10.0.0.1"}};
  expect_error("REDIS_CLUSTER_NODES");
  sources_.environment = {
      {"REDIS_CLUSTER_NODES", "h:1"}, {"REDIS_SENTINELS", "s:2"}, {"REDIS_SENTINEL_MASTER", "m"}};
  expect_error("REDIS_SENTINELS");
}

TEST(ConfigEnvironment, KeepsOnlyOurVariables) {
  std::string a = "REDIS_HOST=r";
  std::string b = "PATH=/usr/bin";
  std::string d = "AI_API_KEY=k";
  std::string e = "HOME=/root";
  std::string f = "WORKTREE_BASE_DIR=/w=x";
  char* envp[] = {a.data(), b.data(), d.data(), e.data(), f.data(), nullptr};
  const auto env = environment_from(envp);
  EXPECT_EQ(env, (Variables{{"REDIS_HOST", "r"}, {"AI_API_KEY", "k"}, {"WORKTREE_BASE_DIR", "/w=x"}}));
}

// A plugin's own variables (no host prefix) reach config_get from the environment, beating the
// .env file as the environment always does, and are marked as not the host's.
TEST(ConfigEnvironment, OtherVariablesAreThePluginsAndOutrankTheDotenvFile) {
  std::string a = "REDIS_HOST=r";
  std::string b = "HELLO_GREETING=hi";
  char* envp[] = {a.data(), b.data(), nullptr};
  EXPECT_EQ(other_environment_from(envp), (Variables{{"HELLO_GREETING", "hi"}}));
  Sources sources;
  sources.working_dir = "/nonexistent-dir-for-this-test";
  sources.environment = environment_from(envp);
  sources.other_environment = other_environment_from(envp);
  const Config c = load(sources);
  EXPECT_EQ(c.get("HELLO_GREETING"), "hi");
  EXPECT_EQ(c.other_keys, (std::set<std::string>{"HELLO_GREETING"}));
  EXPECT_TRUE(c.unknown_variables.empty());
}

TEST(ConfigSecrets, RecognisesSecretNames) {
  EXPECT_TRUE(is_secret("DB_PASSWORD"));
  EXPECT_TRUE(is_secret("AI_API_KEY"));
  EXPECT_TRUE(is_secret("GITHUB_TOKEN"));
  EXPECT_TRUE(is_secret("x_secret"));
  EXPECT_FALSE(is_secret("DB_USERNAME"));
  EXPECT_FALSE(is_secret("PASSWORD_POLICY"));
  EXPECT_EQ(redact("DB_PASSWORD", ""), "");
  EXPECT_EQ(redact("DB_NAME", "x"), "x");
}

}  // namespace
}  // namespace wk::config
