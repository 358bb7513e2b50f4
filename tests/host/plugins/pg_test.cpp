// The pg_* host functions against a real PostgreSQL, through the pg_user fixture plugin.
#include <gtest/gtest.h>

#include <filesystem>

#include "db/db.hpp"
#include "log/log.hpp"
#include "plugins/plugins.hpp"
#include "support/host_modes.hpp"
#include "support/pg_host_support.hpp"
#include "support/test_env.hpp"

namespace wk::plugins {
namespace {

constexpr const char* kDatabase = "wk_plugins_test";

using test::RecordingServices;

class PgHostTest : public ::testing::TestWithParam<test::Isolation> {
 protected:
  static void SetUpTestSuite() { test::ensure_database(kDatabase); }

  log::Logger logger = log::Logger::in_memory(log::Level::debug, log::Format::logfmt);
  std::unique_ptr<db::Pool> pool = db::make_pool(test::pg_settings(kDatabase), logger);

  std::unique_ptr<Host> make_host(db::Pool* with_pool) {
    return test::make_plugin_host(GetParam(), logger, {}, with_pool, nullptr);
  }
  task::Outcome run(Host& host, const std::string& type, task::Task& t, RecordingServices& services) {
    t.type = type;
    return test::dispatch_task(host, t, services);
  }
};

INSTANTIATE_TEST_SUITE_P(Isolation, PgHostTest,
                         ::testing::Values(test::Isolation::none, test::Isolation::process),
                         [](const auto& param_info) { return test::isolation_name(param_info.param); });

TEST_P(PgHostTest, QueriesWithParamsAndReleasesLeakedRowsAndTransactions) {
  auto host = make_host(pool.get());
  ASSERT_FALSE(host->load_file(std::filesystem::path(WK_ABI_FIXTURE_DIR) / "pg_user.so").has_value());
  task::Task t;
  RecordingServices services;
  const task::Outcome outcome = run(*host, "pg:roundtrip", t, services);
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

TEST_P(PgHostTest, SqlErrorsCarryTheSqlstateAndNoPoolIsUnsupported) {
  {
    auto host = make_host(pool.get());
    ASSERT_FALSE(host->load_file(std::filesystem::path(WK_ABI_FIXTURE_DIR) / "pg_user.so").has_value());
    task::Task t;
    RecordingServices services;
    const task::Outcome outcome = run(*host, "pg:error", t, services);
    EXPECT_EQ(outcome.disposition, task::Disposition::fail_no_retry);
    EXPECT_EQ(outcome.error, "status=-7 code=42P01");  // WK_E_DB, undefined_table
  }
  auto host = make_host(nullptr);
  ASSERT_FALSE(host->load_file(std::filesystem::path(WK_ABI_FIXTURE_DIR) / "pg_user.so").has_value());
  task::Task t;
  RecordingServices services;
  EXPECT_EQ(run(*host, "pg:error", t, services).error, "status=-9 code=pg.none");  // WK_E_UNSUPPORTED
}

}  // namespace
}  // namespace wk::plugins
