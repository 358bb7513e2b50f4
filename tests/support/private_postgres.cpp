#include "support/private_postgres.hpp"

#include <libpq-fe.h>
#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <stdexcept>
#include <vector>

#include "support/child_process.hpp"

namespace wk::test {
namespace {

// Runs argv to its end; its stdout and stderr are appended to `log` when one is given. Returns
// the exit code (-1 when killed).
int run_logged(std::vector<std::string> argv, const std::filesystem::path& log = {}) {
  const auto r = run(std::move(argv), inherited_env({}), std::chrono::seconds(120));
  if (!log.empty()) std::ofstream(log, std::ios::app) << r.out << r.err;
  return r.exit_code && !r.signaled ? *r.exit_code : -1;
}

std::filesystem::path pg_bin_dir() {
  const char* from_env = std::getenv("WK_TEST_PG_BIN");
  if (from_env != nullptr && *from_env != '\0') return from_env;
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

// Runs each statement as the trusted superuser; throws on any failure.
void superuser_exec(int port, const std::vector<std::string>& statements) {
  const std::string conninfo =
      "host=127.0.0.1 port=" + std::to_string(port) + " user=postgres dbname=postgres";
  const std::unique_ptr<PGconn, decltype(&PQfinish)> conn(PQconnectdb(conninfo.c_str()), &PQfinish);
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    throw std::runtime_error(std::string("superuser connection failed: ") + PQerrorMessage(conn.get()));
  }
  for (const auto& sql : statements) {
    const std::unique_ptr<PGresult, decltype(&PQclear)> result(PQexec(conn.get(), sql.c_str()), &PQclear);
    if (PQresultStatus(result.get()) != PGRES_COMMAND_OK) {
      throw std::runtime_error("query failed: " + sql + ": " + PQresultErrorMessage(result.get()));
    }
  }
}

}  // namespace

PrivatePostgres::PrivatePostgres() : bin_(pg_bin_dir()), password_("Pw-" + random_hex(24)) {
  const passwd* postgres = ::getpwnam("postgres");
  if (postgres == nullptr) throw std::runtime_error("no postgres user to run a private server as");
  char pattern[] = "/tmp/wk_db_pg_XXXXXX";
  if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = pattern;
  data_ = dir_ / "data";
  if (::chown(dir_.c_str(), postgres->pw_uid, postgres->pw_gid) != 0)
    throw std::runtime_error("chown failed");
  port_ = free_port();
  const auto log = dir_ / "setup.log";
  if (run_logged({"runuser", "-u", "postgres", "--", (bin_ / "initdb").string(), "-D", data_.string(), "-U",
                  "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"},
                 log) != 0) {
    throw std::runtime_error("initdb failed, see " + log.string());
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
  superuser_exec(port_, {"CREATE ROLE " + role() + " LOGIN PASSWORD '" + password_ + "'",
                         "CREATE DATABASE " + database() + " OWNER " + role()});
}

PrivatePostgres::~PrivatePostgres() {
  try {
    stop();
  } catch (const std::exception&) {
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

void PrivatePostgres::start() {
  if (running_) return;
  if (run_logged({"runuser", "-u", "postgres", "--", (bin_ / "pg_ctl").string(), "-D", data_.string(), "-l",
                  (dir_ / "server.log").string(), "-w", "-t", "30", "start"}) != 0) {
    throw std::runtime_error("pg_ctl start failed, see " + (dir_ / "server.log").string());
  }
  running_ = true;
}

void PrivatePostgres::stop() {
  if (!running_) return;
  if (run_logged({"runuser", "-u", "postgres", "--", (bin_ / "pg_ctl").string(), "-D", data_.string(), "-m",
                  "fast", "-w", "-t", "30", "stop"}) != 0) {
    throw std::runtime_error("pg_ctl stop failed");
  }
  running_ = false;
}

}  // namespace wk::test
