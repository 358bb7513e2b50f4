// The pg_* host functions against a real PostgreSQL, through the pg_user fixture plugin.
#include <gtest/gtest.h>

#include <filesystem>

#include "abi/pg_host_support.hpp"
#include "db/db.hpp"
#include "log/log.hpp"
#include "plugins/plugins.hpp"
#include "support/test_env.hpp"

namespace wk::plugins {
namespace {

constexpr const char* kDatabase = "wk_plugins_test";

using test::RecordingServices;

class PgHostTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { test::ensure_database(kDatabase); }

  log::Logger logger = log::Logger::in_memory(log::Level::debug, log::Format::logfmt);
  std::unique_ptr<db::Pool> pool = db::make_pool(test::pg_settings(kDatabase), logger);

  task::Outcome run(PluginHost& host, const std::string& type, task::Task& t, RecordingServices& services) {
    t.type = type;
    return test::dispatch_task(host, t, services);
  }
};

TEST_F(PgHostTest, QueriesWithParamsAndReleasesLeakedRowsAndTransactions) {
  PluginHost host(logger, {}, pool.get(), nullptr);
  ASSERT_FALSE(host.load_file(std::filesystem::path(WK_ABI_FIXTURE_DIR) / "pg_user.so").has_value());
  task::Task t;
  RecordingServices services;
  const task::Outcome outcome = run(host, "pg:roundtrip", t, services);
  ASSERT_EQ(outcome.disposition, task::Disposition::succeeded) << outcome.error;
  EXPECT_EQ(services.result, "n=7");

  const auto lines = logger.lines();
  const auto leak = std::find_if(lines.begin(), lines.end(), [](const std::string& l) {
    return l.find("plugin leaked database handles") != std::string::npos;
  });
  ASSERT_NE(leak, lines.end());
  EXPECT_NE(leak->find("rows=1"), std::string::npos) << *leak;
  EXPECT_NE(leak->find("transactions_rolled_back=1"), std::string::npos) << *leak;

  // The insert inside the leaked transaction was rolled back; the autocommit one stayed.
  auto rows = pool->query("SELECT id FROM pg_fixture_items WHERE id = $1 OR id = 'leaked-' || $1",
                          {db::Param{false, false, 0, t.id}}, {});
  ASSERT_EQ(rows->rows(), 1u);
  EXPECT_EQ(rows->value(0, 0), t.id);

  // And no connection stayed with the leaked handles: both of the pool's are free again (a
  // second transaction would otherwise wait out its deadline).
  ASSERT_EQ(test::pg_settings(kDatabase).pool_size, 2);
  db::CallOptions soon;
  soon.deadline = task::Clock::now() + std::chrono::seconds(5);
  auto first = pool->begin(soon);
  auto second = pool->begin(soon);
  EXPECT_EQ(second->query("SELECT 1", {}, soon)->value(0, 0), "1");
}

TEST_F(PgHostTest, SqlErrorsCarryTheSqlstateAndNoPoolIsUnsupported) {
  {
    PluginHost host(logger, {}, pool.get(), nullptr);
    ASSERT_FALSE(host.load_file(std::filesystem::path(WK_ABI_FIXTURE_DIR) / "pg_user.so").has_value());
    task::Task t;
    RecordingServices services;
    const task::Outcome outcome = run(host, "pg:error", t, services);
    EXPECT_EQ(outcome.disposition, task::Disposition::fail_no_retry);
    EXPECT_EQ(outcome.error, "status=-7 code=42P01");  // WK_E_DB, undefined_table
  }
  PluginHost host(logger, {}, nullptr, nullptr);
  ASSERT_FALSE(host.load_file(std::filesystem::path(WK_ABI_FIXTURE_DIR) / "pg_user.so").has_value());
  task::Task t;
  RecordingServices services;
  EXPECT_EQ(run(host, "pg:error", t, services).error, "status=-9 code=pg.none");  // WK_E_UNSUPPORTED
}

}  // namespace
}  // namespace wk::plugins
