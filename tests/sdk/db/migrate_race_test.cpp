// "Eight hosts starting at once apply a plugin's migration exactly once", with real
// processes: eight `worker exec` started together against a fresh database load the ledger plugin,
// whose init applies its two migrations, and each runs one ledger:write (payload: the JSON string
// "commit", which `worker exec` requires to be JSON; the plugin commits one row for it). Every host succeeds,
// wk_plugin_migrations records each version once and the tables exist once.
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "db/db.hpp"
#include "log/log.hpp"
#include "support/child_process.hpp"
#include "support/pg_host_support.hpp"
#include "support/test_env.hpp"

namespace wk::test {
namespace {

using namespace std::chrono_literals;

constexpr int kHosts = 8;
constexpr const char* kPluginId = "dev.autodevs.test.ledger";

db::Settings settings(const std::string& dbname) { return pg_settings(dbname, 1); }

std::string random_suffix() {
  std::random_device device;
  std::string out;
  for (int i = 0; i < 12; ++i) out.push_back("0123456789abcdef"[device() % 16]);
  return out;
}

// A database of its own, created now and dropped (with its connections) on destruction.
class FreshDatabase {
 public:
  FreshDatabase() : name_("wk_mig8_" + random_suffix()) { admin_->query("CREATE DATABASE " + name_, {}, {}); }
  ~FreshDatabase() {
    try {
      admin_->query("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)", {}, {});
    } catch (const std::exception&) {
      // A stray database at worst; the result stands.
    }
  }
  FreshDatabase(const FreshDatabase&) = delete;
  FreshDatabase& operator=(const FreshDatabase&) = delete;
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::unique_ptr<db::Pool> admin_ =
      db::make_pool(settings(pg_addr().db), log::Logger::in_memory(log::Level::warn, log::Format::logfmt));
};

long long count(db::Pool& pool, const std::string& sql) {
  return std::stoll(std::string(pool.query(sql, {}, {})->value(0, 0)));
}

TEST(SdkDbMigrations, EightHostsStartingAtOnceApplyAPluginsMigrationsOnce) {
  const FreshDatabase database;
  const TempDir dir("wk-mig8");
  std::ofstream(dir / "empty.env") << "# settings come from the environment\n";
  const PgAddr pg = pg_addr();
  const auto env = worker_env({{"DB_HOST", pg.host},
                               {"DB_PORT", std::to_string(pg.port)},
                               {"DB_USERNAME", pg.user},
                               {"DB_NAME", database.name()},
                               {"WORKER_METRICS_ADDR", ""}});

  std::vector<std::unique_ptr<ChildProcess>> hosts;
  for (int i = 0; i < kHosts; ++i) {
    hosts.push_back(std::make_unique<ChildProcess>(
        std::vector<std::string>{worker_binary(), "--env-file", (dir / "empty.env").string(), "--plugins",
                                 WK_LEDGER_PLUGIN_DIR, "exec", "--type", "ledger:write", "--payload",
                                 R"("commit")"},
        env));
  }
  for (int i = 0; i < kHosts; ++i) {
    EXPECT_EQ(hosts[i]->wait_exit(120s), 0) << "host " << i << ":\n" << hosts[i]->output();
    EXPECT_NE(hosts[i]->out().find("disposition: succeeded"), std::string::npos) << "host " << i << ":\n"
                                                                                 << hosts[i]->output();
  }

  auto pool =
      db::make_pool(settings(database.name()), log::Logger::in_memory(log::Level::warn, log::Format::logfmt));
  EXPECT_EQ(count(*pool, std::string("SELECT count(*) FROM wk_plugin_migrations WHERE plugin_id = '") +
                             kPluginId + "'"),
            2);
  EXPECT_EQ(count(*pool, std::string("SELECT count(DISTINCT version) FROM wk_plugin_migrations WHERE "
                                     "plugin_id = '") +
                             kPluginId + "' AND version IN (1, 2)"),
            2);
  EXPECT_EQ(
      count(*pool,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename IN ('sdk_ledger', "
            "'sdk_ledger_effects')"),
      2);
  EXPECT_EQ(count(*pool, "SELECT count(*) FROM sdk_ledger"), kHosts);  // every host's task committed
}

}  // namespace
}  // namespace wk::test
