#pragma once
// A private redis-server for tests that must stop and restart Redis: started with argv (no
// shell) on a free loopback port, no persistence, stopped with SIGTERM and reaped.
#include <sys/types.h>

#include <string>

namespace wk::test {

class RedisProcess {
 public:
  RedisProcess();   // picks a free port; does not start
  ~RedisProcess();  // stop()
  RedisProcess(const RedisProcess&) = delete;
  RedisProcess& operator=(const RedisProcess&) = delete;

  // Starts redis-server on port() and waits until it answers PING. Throws on failure.
  void start();
  // SIGTERM, then waits for the process to exit. Idempotent.
  void stop();
  int port() const noexcept { return port_; }

 private:
  int port_ = 0;
  pid_t pid_ = -1;
  std::string dir_;
};

// A loopback TCP port nobody listens on right now.
int free_port();

}  // namespace wk::test
