#include "support/private_redis.hpp"

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "support/test_env.hpp"

namespace wk::test {

PrivateRedis::PrivateRedis(Options options)
    : options_(std::move(options)), dir_("wk-redis"), port_(free_port()) {
  if (options_.start) start();
}

PrivateRedis::~PrivateRedis() { stop(); }

redis::Settings PrivateRedis::settings() const {
  redis::Settings s;
  s.host = "127.0.0.1";
  s.port = port_;
  s.connect_timeout = std::chrono::milliseconds(500);
  s.tls = options_.client_tls;
  return s;
}

void PrivateRedis::start() {
  if (server_) return;
  std::vector<std::string> argv{"redis-server",
                                "--port",
                                std::to_string(options_.tls ? 0 : port_),
                                "--bind",
                                "127.0.0.1",
                                "--save",
                                "",
                                "--dir",
                                dir_.path().string(),
                                "--daemonize",
                                "no",
                                "--loglevel",
                                "warning"};
  if (options_.tls) {
    argv.insert(argv.end(), {"--tls-port", std::to_string(port_), "--tls-cert-file",
                             options_.tls->cert.string(), "--tls-key-file", options_.tls->key.string(),
                             "--tls-ca-cert-file", options_.tls->ca.string(), "--tls-auth-clients",
                             options_.tls->require_client_cert ? "yes" : "no"});
  }
  argv.insert(argv.end(), options_.extra_args.begin(), options_.extra_args.end());
  if (options_.persistent) {
    argv.insert(argv.end(), {"--appendonly", "yes", "--appendfsync", "always"});
  } else {
    argv.insert(argv.end(), {"--appendonly", "no"});
  }
  try {
    server_ = std::make_unique<ChildProcess>(std::move(argv), inherited_env({}));
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(std::string("cannot start redis-server (is it installed?): ") + e.what());
  }
  const bool up = eventually(
      [&] {
        try {
          return connect().command({"PING"}).str() == "PONG";
        } catch (const redis::Error&) {
          return false;
        }
      },
      std::chrono::seconds(10));
  if (!up) {
    const std::string output = server_->output();
    server_.reset();
    throw std::runtime_error("redis-server did not answer on port " + std::to_string(port_) + ": " + output);
  }
}

void PrivateRedis::signal(int signo) {
  if (server_) server_->signal(signo);
}

void PrivateRedis::stop() {
  if (!server_) return;
  server_->stop(std::chrono::seconds(30));
  server_.reset();
}

}  // namespace wk::test
