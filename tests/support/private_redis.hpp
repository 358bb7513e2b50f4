#pragma once
// A private redis-server for tests that stop and restart Redis: argv only (no shell), on a free
// loopback port that stays the same across stop() and start(), in a temp dir of its own. With
// `persistent`, appendonly (fsync always) keeps every key across a stop() and start().
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "redis/redis.hpp"
#include "support/child_process.hpp"

namespace wk::test {

class PrivateRedis {
 public:
  struct Options {
    bool persistent = false;  // appendonly: keys survive stop() + start()
    bool start = true;        // start in the constructor
    // TLS only (port() is the TLS port; no plain one): the server's certificate and key, and the
    // CA it checks client certificates against when `require_client_cert`.
    struct Tls {
      std::filesystem::path cert;
      std::filesystem::path key;
      std::filesystem::path ca;
      bool require_client_cert = false;
    };
    std::optional<Tls> tls;
    // More redis-server arguments ("--replicaof", "127.0.0.1", "6379").
    std::vector<std::string> extra_args;
    // How settings() connects, and with it the PING that awaits the start (TLS servers).
    std::shared_ptr<const redis::TlsClient> client_tls;
  };
  PrivateRedis() : PrivateRedis(Options{}) {}
  explicit PrivateRedis(Options options);
  ~PrivateRedis();  // stop()
  PrivateRedis(const PrivateRedis&) = delete;
  PrivateRedis& operator=(const PrivateRedis&) = delete;

  // Starts redis-server on port() and waits until it answers PING. Throws on failure.
  void start();
  // SIGTERM (the server flushes its AOF) and reap. Idempotent.
  void stop();
  bool running() const noexcept { return server_ != nullptr; }
  // Sends `signo` to the server (SIGSTOP freezes it, SIGCONT thaws it).
  void signal(int signo);
  int port() const noexcept { return port_; }
  redis::Settings settings() const;
  redis::Connection connect() const { return redis::Connection(settings()); }

 private:
  Options options_;
  TempDir dir_;
  int port_ = 0;
  std::unique_ptr<ChildProcess> server_;
};

}  // namespace wk::test
