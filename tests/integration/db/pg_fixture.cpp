#include "pg_fixture.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <pwd.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <random>
#include <stdexcept>

#include "support/test_env.hpp"

extern char** environ;

namespace wk::dbtest {
namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return (value != nullptr && *value != '\0') ? value : fallback;
}

// Runs argv[0] with argv, stdout and stderr to `log` (or /dev/null); returns the exit status.
int run(const std::vector<std::string>& argv, const std::string& log = "/dev/null") {
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot start " + argv[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("no free port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::filesystem::path pg_bin_dir() {
  const std::string from_env = env_or("WK_TEST_PG_BIN", "");
  if (!from_env.empty()) return from_env;
  std::filesystem::path best;
  for (const auto& entry : std::filesystem::directory_iterator("/usr/lib/postgresql")) {
    if (std::filesystem::exists(entry.path() / "bin" / "initdb") && entry.path() > best.parent_path()) {
      best = entry.path() / "bin";
    }
  }
  if (best.empty()) throw std::runtime_error("no PostgreSQL server binaries under /usr/lib/postgresql");
  return best;
}

std::string random_hex(size_t chars) {
  std::random_device device;
  std::string out;
  for (size_t i = 0; i < chars; ++i) out.push_back("0123456789abcdef"[device() % 16]);
  return out;
}

// Drops this process's database at exit (gtest environments are torn down after all tests).
class DropTestDatabase : public ::testing::Environment {
 public:
  void TearDown() override {
    if (name_.empty()) return;
    try {
      server_sql().exec("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
    } catch (const std::exception&) {
      // Leaves a stray database behind at worst; the test result stands.
    }
  }
  std::string name_;
};

DropTestDatabase* drop_environment() {
  static DropTestDatabase* environment = [] {
    auto* env = new DropTestDatabase();
    ::testing::AddGlobalTestEnvironment(env);  // gtest owns it
    return env;
  }();
  return environment;
}

}  // namespace

Sql::Sql(const std::string& host, int port, const std::string& user, const std::string& dbname) {
  const std::string port_text = std::to_string(port);
  const char* keys[] = {"host", "port", "user", "dbname", nullptr};
  const char* values[] = {host.c_str(), port_text.c_str(), user.c_str(), dbname.c_str(), nullptr};
  conn_.reset(PQconnectdbParams(keys, values, 0));
  if (PQstatus(conn_.get()) != CONNECTION_OK) {
    throw std::runtime_error(std::string("admin connection failed: ") + PQerrorMessage(conn_.get()));
  }
}

std::vector<std::vector<std::optional<std::string>>> Sql::rows(const std::string& sql) {
  std::unique_ptr<PGresult, void (*)(PGresult*)> result(PQexec(conn_.get(), sql.c_str()), PQclear);
  const auto status = PQresultStatus(result.get());
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    throw std::runtime_error("admin query failed: " + sql + ": " + PQresultErrorMessage(result.get()));
  }
  std::vector<std::vector<std::optional<std::string>>> out;
  for (int row = 0; row < PQntuples(result.get()); ++row) {
    auto& cells = out.emplace_back();
    for (int col = 0; col < PQnfields(result.get()); ++col) {
      if (PQgetisnull(result.get(), row, col) != 0) {
        cells.emplace_back(std::nullopt);
      } else {
        cells.emplace_back(std::string(PQgetvalue(result.get(), row, col),
                                       static_cast<size_t>(PQgetlength(result.get(), row, col))));
      }
    }
  }
  return out;
}

std::string Sql::scalar(const std::string& sql) {
  auto all = rows(sql);
  if (all.empty() || all[0].empty() || !all[0][0]) throw std::runtime_error("no value from: " + sql);
  return *all[0][0];
}

Sql server_sql() {
  const auto addr = test::pg_addr();
  return Sql(addr.host, addr.port, addr.user, addr.db);
}

const std::string& test_database() {
  static const std::string name = [] {
    std::string db = "wk_db_test_" + std::to_string(::getpid()) + "_" + random_hex(6);
    server_sql().exec("CREATE DATABASE " + db);
    drop_environment()->name_ = db;
    return db;
  }();
  return name;
}

Sql admin_sql() {
  const auto addr = test::pg_addr();
  return Sql(addr.host, addr.port, addr.user, test_database());
}

db::Settings test_settings(int pool_size, const std::string& application_name) {
  const auto addr = test::pg_addr();
  db::Settings settings;
  settings.host = addr.host;
  settings.port = addr.port;
  settings.user = addr.user;
  settings.dbname = test_database();
  settings.pool_size = pool_size;
  settings.connect_timeout = std::chrono::seconds(3);
  settings.application_name = application_name;
  return settings;
}

int connections_of(const std::string& application_name) {
  return std::stoi(admin_sql().scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = '" +
                                      test_database() + "' AND application_name = '" + application_name +
                                      "'"));
}

std::string unique_name(const std::string& prefix) {
  static std::atomic<int> counter{0};
  return prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
}

PrivateServer::PrivateServer() : bin_(pg_bin_dir()), password_("Pw-" + random_hex(24)) {
  const passwd* postgres = ::getpwnam("postgres");
  if (postgres == nullptr) throw std::runtime_error("no postgres user to run a private server as");
  char pattern[] = "/tmp/wk_db_pg_XXXXXX";
  if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = pattern;
  data_ = dir_ / "data";
  if (::chown(dir_.c_str(), postgres->pw_uid, postgres->pw_gid) != 0)
    throw std::runtime_error("chown failed");
  port_ = free_port();
  const std::string log = (dir_ / "setup.log").string();
  if (run({"runuser", "-u", "postgres", "--", (bin_ / "initdb").string(), "-D", data_.string(), "-U",
           "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"},
          log) != 0) {
    throw std::runtime_error("initdb failed, see " + log);
  }
  {
    std::ofstream conf(data_ / "postgresql.conf", std::ios::app);
    conf << "\nport = " << port_ << "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '"
         << dir_.string() << "'\nfsync = off\n";
  }
  {
    // Only the application role needs a password; the superuser stays trusted for set-up.
    std::ofstream hba(data_ / "pg_hba.conf", std::ios::trunc);
    hba << "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 "
           "scram-sha-256\n";
  }
  start();
  Sql super("127.0.0.1", port_, "postgres", "postgres");
  super.exec("CREATE ROLE " + role() + " LOGIN PASSWORD '" + password_ + "'");
  super.exec("CREATE DATABASE " + database() + " OWNER " + role());
}

PrivateServer::~PrivateServer() {
  try {
    stop();
  } catch (const std::exception&) {
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

void PrivateServer::start() {
  if (running_) return;
  if (run({"runuser", "-u", "postgres", "--", (bin_ / "pg_ctl").string(), "-D", data_.string(), "-l",
           (dir_ / "server.log").string(), "-w", "-t", "30", "start"}) != 0) {
    throw std::runtime_error("pg_ctl start failed, see " + (dir_ / "server.log").string());
  }
  running_ = true;
}

void PrivateServer::stop() {
  if (!running_) return;
  if (run({"runuser", "-u", "postgres", "--", (bin_ / "pg_ctl").string(), "-D", data_.string(), "-m", "fast",
           "-w", "-t", "30", "stop"}) != 0) {
    throw std::runtime_error("pg_ctl stop failed");
  }
  running_ = false;
}

}  // namespace wk::dbtest
