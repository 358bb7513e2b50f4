// The database services through the SDK's C++ layer: a plugin's handler runs parameterised queries
// with NULL and bytea, reads typed results, commits one transaction and has one rolled back by a
// handler error; the effectively-once helper makes a task delivered twice change the database
// once; and none of it leaves a server connection behind beyond the pool size.
#include <gtest/gtest.h>

#include "db/db.hpp"
#include "log/log.hpp"
#include "plugins/plugins.hpp"
#include "support/pg_host_support.hpp"
#include "support/private_postgres.hpp"
#include "support/test_env.hpp"

namespace wk::plugins {
namespace {

constexpr const char* kDatabase = "wk_sdk_db_test";
constexpr int kPoolSize = 2;

db::Settings settings(const std::string& dbname) { return test::pg_settings(dbname, kPoolSize); }

db::Settings named(db::Settings s, const std::string& application_name) {
  s.application_name = application_name;
  return s;
}

using Services = test::RecordingServices;

class SdkDbTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { test::ensure_database(kDatabase); }

  void SetUp() override {
    host = std::make_unique<PluginHost>(logger, ConfigSnapshot{}, pool.get(), nullptr, HostOptions{});
    const auto report = host->load_directory(WK_LEDGER_PLUGIN_DIR);
    ASSERT_EQ(report.loaded.size(), 1u) << joined_log();
  }
  void TearDown() override { host->shutdown(); }

  task::Outcome run(const std::string& id, const std::string& mode, Services& services) {
    task::Task t;
    t.id = id;
    t.type = "ledger:write";
    t.payload = mode;
    return test::dispatch_task(*host, t, services);
  }

  long long count(const std::string& sql) {
    return std::stoll(std::string(checker->query(sql, {}, {})->value(0, 0)));
  }

  std::string joined_log() const {
    std::string all;
    for (const auto& l : logger.lines()) all += l + "\n";
    return all;
  }

  log::Logger logger = log::Logger::in_memory(log::Level::debug, log::Format::logfmt);
  // Named per test process, so the connection count below sees only this pool's connections.
  const std::string app_name = "wk-sdk-db-" + task::new_uuid().substr(0, 8);
  std::unique_ptr<db::Pool> pool = db::make_pool(named(settings(kDatabase), app_name), logger);
  std::unique_ptr<db::Pool> checker = db::make_pool(settings(kDatabase), logger);
  std::unique_ptr<PluginHost> host;
};

TEST_F(SdkDbTest, CommitsTypedRowsAndRollsBackOnHandlerError) {
  // Ids are unique per run: the database outlives runs, and ctest runs test cases in parallel.
  const std::string good = "commit-" + task::new_uuid(), bad = "fail-" + task::new_uuid();
  Services committed;
  const auto ok = run(good, "commit", committed);
  ASSERT_EQ(ok.disposition, task::Disposition::succeeded) << ok.error << "\n" << joined_log();
  EXPECT_EQ(committed.result.value_or(""),
            "note_null=1 blob_ok=1 amount=-9000000000 ratio=0.250000 ok=1 columns=amount");

  Services failed;
  const auto err = run(bad, "fail", failed);
  EXPECT_EQ(err.disposition, task::Disposition::retry);
  EXPECT_NE(err.error.find("ledger refused the entry"), std::string::npos) << err.error;

  EXPECT_EQ(count("SELECT count(*) FROM sdk_ledger WHERE id = '" + good + "'"), 1);
  EXPECT_EQ(count("SELECT count(*) FROM sdk_ledger WHERE id = '" + bad + "'"), 0);  // rolled back
  EXPECT_EQ(count("SELECT count(*) FROM sdk_ledger WHERE id = '" + good +
                  "' AND blob = '\\x00ff6101'::bytea AND note IS NULL"),
            1);
}

TEST_F(SdkDbTest, ATaskDeliveredTwiceChangesTheDatabaseOnce) {
  const std::string id = task::new_uuid();
  Services first, second;
  ASSERT_EQ(run(id, "once", first).disposition, task::Disposition::succeeded) << joined_log();
  ASSERT_EQ(run(id, "once", second).disposition, task::Disposition::succeeded) << joined_log();
  EXPECT_EQ(first.result.value_or(""), "done");
  EXPECT_EQ(second.result.value_or(""), "already done");
  EXPECT_EQ(count("SELECT count(*) FROM sdk_ledger_effects WHERE task_id = '" + id + "'"), 1);
}

TEST_F(SdkDbTest, ManyTasksNeverHoldMoreConnectionsThanThePool) {
  const std::string prefix = "bulk-" + task::new_uuid() + "-";
  for (int i = 0; i < 30; ++i) {
    Services s;
    run(prefix + std::to_string(i), i % 3 == 0 ? "fail" : "commit", s);
  }
  const long long held =
      count("SELECT count(*) FROM pg_stat_activity WHERE application_name = '" + app_name + "'");
  EXPECT_GE(held, 1);
  EXPECT_LE(held, kPoolSize);
  EXPECT_EQ(count("SELECT count(*) FROM sdk_ledger WHERE id LIKE '" + prefix + "%'"), 20);
}

// A worker starts during a database outage: the plugin still loads (its migrations are deferred),
// its tasks are retried as "database unavailable" meanwhile, and once PostgreSQL answers the
// migrations are applied before the first task runs, which then succeeds.
TEST(SdkDbOutage, APluginLoadedDuringAnOutageMigratesBeforeItsFirstTask) {
  test::PrivatePostgres pg;
  pg.stop();
  db::Settings s;
  s.host = "127.0.0.1";
  s.port = pg.port();
  s.user = pg.role();
  s.password = pg.password();
  s.dbname = pg.database();
  s.pool_size = 2;
  s.connect_timeout = std::chrono::seconds(2);
  auto logger = log::Logger::in_memory(log::Level::debug, log::Format::logfmt);
  auto pool = db::make_pool(s, logger);
  PluginHost host(logger, ConfigSnapshot{}, pool.get(), nullptr, HostOptions{});
  const auto report = host.load_directory(WK_LEDGER_PLUGIN_DIR);
  std::string log_text;
  for (const auto& l : logger.lines()) log_text += l + "\n";
  ASSERT_EQ(report.loaded.size(), 1u) << log_text;
  EXPECT_NE(log_text.find("migrations deferred"), std::string::npos) << log_text;

  Services services;
  auto run = [&](const std::string& id) {
    task::Task t;
    t.id = id;
    t.type = "ledger:write";
    t.payload = "commit";
    return test::dispatch_task(host, t, services);
  };
  const task::Outcome during = run("outage-1");
  // Not the task's fault: handed back for a couple of seconds without an attempt counted.
  EXPECT_EQ(during.disposition, task::Disposition::requeue);
  EXPECT_GE(during.retry_after, std::chrono::seconds(2));
  EXPECT_NE(during.error.find("database unavailable: migrations of plugin"), std::string::npos)
      << during.error;

  pg.start();
  const task::Outcome after = run("outage-1");
  EXPECT_EQ(after.disposition, task::Disposition::succeeded) << after.error;
  EXPECT_EQ(pool->query("SELECT count(*) FROM wk_plugin_migrations", {}, {})->value(0, 0), "2");
  EXPECT_EQ(pool->query("SELECT count(*) FROM sdk_ledger", {}, {})->value(0, 0), "1");
  host.shutdown();
}

}  // namespace
}  // namespace wk::plugins
