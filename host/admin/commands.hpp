#pragma once
// The `worker` admin commands: stats, queues pause|resume, tasks list|show|retry|archive|delete|
// retry-all|delete-all, servers. Human-readable tables by default, --json for scripts.
//
// Exit codes: 0 done; 1 the operation failed (not found, wrong state, Redis unreachable);
// 2 bad input. Messages go to `err` as "worker: <message>".
//
// Wiring in host/app/cli.cpp (the commands parse with everything else, run after the config):
//   admin::Commands admin_commands(app);          // before collect_long_options()
//   ... app.parse(...), config::load(...) ...
//   if (admin_commands.selected()) return admin_commands.run(redis_settings(cfg), std::cout, std::cerr);
#include <iosfwd>
#include <memory>
#include <string>

#include "redis/redis.hpp"

namespace CLI {
class App;
}

namespace wk::admin {

struct StatsOptions {
  std::string queue;  // empty: every queue in asynq:queues
  bool json = false;
};
struct ListOptions {
  std::string queue;
  std::string state;
  int limit = 20;
  bool json = false;
};
struct TaskOptions {
  std::string queue;
  std::string id;
  bool json = false;
  bool raw = false;  // show: the stored message's bytes in hex
};
struct BulkOptions {
  std::string queue;
  std::string state;
  bool json = false;
};

int run_stats(const redis::Settings& redis, const StatsOptions& options, std::ostream& out,
              std::ostream& err);
int run_pause(const redis::Settings& redis, const std::string& queue, std::ostream& out, std::ostream& err);
int run_resume(const redis::Settings& redis, const std::string& queue, std::ostream& out, std::ostream& err);
int run_list(const redis::Settings& redis, const ListOptions& options, std::ostream& out, std::ostream& err);
int run_show(const redis::Settings& redis, const TaskOptions& options, std::ostream& out, std::ostream& err);
int run_retry(const redis::Settings& redis, const TaskOptions& options, std::ostream& out, std::ostream& err);
int run_archive(const redis::Settings& redis, const TaskOptions& options, std::ostream& out,
                std::ostream& err);
int run_delete(const redis::Settings& redis, const TaskOptions& options, std::ostream& out,
               std::ostream& err);
int run_retry_all(const redis::Settings& redis, const BulkOptions& options, std::ostream& out,
                  std::ostream& err);
int run_delete_all(const redis::Settings& redis, const BulkOptions& options, std::ostream& out,
                   std::ostream& err);
int run_servers(const redis::Settings& redis, bool json, std::ostream& out, std::ostream& err);

// Registers the subcommands on `app` and remembers which one the command line chose.
class Commands {
 public:
  explicit Commands(CLI::App& app);
  ~Commands();
  Commands(const Commands&) = delete;
  Commands& operator=(const Commands&) = delete;

  // True when the parsed command line chose one of the admin commands.
  bool selected() const;
  // Runs the chosen command; returns the exit code.
  int run(const redis::Settings& redis, std::ostream& out, std::ostream& err) const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace wk::admin
