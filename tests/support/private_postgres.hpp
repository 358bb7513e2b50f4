#pragma once
// A throw-away PostgreSQL cluster on a free loopback port, run as the postgres user (argv only,
// no shell), for tests that stop and restart the database: the port and the data stay across
// stop() and start(). Has a password-protected role `role()` owning database `database()`; only
// that role needs a password over TCP (scram-sha-256), the superuser `postgres` is trusted.
#include <filesystem>
#include <string>

namespace wk::test {

class PrivatePostgres {
 public:
  PrivatePostgres();  // initdb + start + role
  ~PrivatePostgres();
  PrivatePostgres(const PrivatePostgres&) = delete;
  PrivatePostgres& operator=(const PrivatePostgres&) = delete;

  void start();
  void stop();  // fast shutdown: sessions are terminated
  int port() const { return port_; }
  std::string role() const { return "wk_app"; }
  std::string database() const { return "wk_app"; }
  const std::string& password() const { return password_; }

 private:
  std::filesystem::path bin_;
  std::filesystem::path dir_;
  std::filesystem::path data_;
  int port_ = 0;
  bool running_ = false;
  std::string password_;
};

}  // namespace wk::test
