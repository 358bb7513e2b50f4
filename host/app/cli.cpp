#include "app/cli.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "admin/commands.hpp"
#include "app/limits_command.hpp"
#include "app/plugin_commands.hpp"
#include "app/runtime.hpp"
#include "app/signals.hpp"
#include "config/config.hpp"
#include "config/flags.hpp"
#include "db/db.hpp"
#include "plugins/plugins.hpp"
#include "queue/client.hpp"
#include "redis/redis.hpp"

#ifndef WK_VERSION
#define WK_VERSION "0.0.0"
#endif

namespace wk::app {

namespace {

constexpr int kUsageError = 2;  // bad flags, bad configuration, bad input

// Everything `worker enqueue` takes, as text until validated.
struct EnqueueArgs {
  std::string type;
  std::string queue;
  std::string payload = "{}";
  std::string in;
  std::string at;
  std::optional<int> retry;
  std::string timeout;
  std::string deadline;
  std::string unique;
  std::string id;
  std::string retention;
};

struct ExecArgs {
  std::string type;
  std::string payload = "{}";
  std::string queue = "default";
  std::string id;
  std::string timeout;
};

// A usage error from one flag: "--in: invalid duration ...".
[[noreturn]] void bad_flag(const std::string& flag, const std::string& why) {
  throw std::invalid_argument(flag + ": " + why);
}

template <class Duration>
Duration duration_flag(const std::string& flag, const std::string& text, Duration minimum) {
  try {
    const auto d = std::chrono::duration_cast<Duration>(config::parse_duration(text));
    if (d < minimum) bad_flag(flag, "must be at least " + config::format_duration(minimum));
    return d;
  } catch (const std::invalid_argument& e) {
    bad_flag(flag, e.what());
  }
}

task::Clock::time_point time_flag(const std::string& flag, const std::string& text) {
  try {
    return config::parse_rfc3339(text);
  } catch (const std::invalid_argument& e) {
    bad_flag(flag, e.what());
  }
}

// `--payload @file` reads the file; the payload must be JSON (the shipped handlers and asynq
// tools expect it).
std::string payload_flag(const std::string& text) {
  std::string payload = text;
  if (!text.empty() && text.front() == '@') {
    std::ifstream in(text.substr(1), std::ios::binary);
    if (!in) bad_flag("--payload", "cannot read file " + text.substr(1));
    std::ostringstream ss;
    ss << in.rdbuf();
    payload = ss.str();
  }
  if (!nlohmann::json::accept(payload)) bad_flag("--payload", "is not valid JSON");
  return payload;
}

task::EnqueueRequest enqueue_request(const EnqueueArgs& a) {
  using namespace std::chrono;
  task::EnqueueRequest r;
  r.type = a.type;
  if (r.type.empty()) bad_flag("--type", "must not be empty");
  r.queue = a.queue;
  r.payload = payload_flag(a.payload);
  r.task_id = a.id;
  if (!a.in.empty() && !a.at.empty()) bad_flag("--in", "give --in or --at, not both");
  if (!a.in.empty())
    r.process_at = task::Clock::now() + duration_flag<milliseconds>("--in", a.in, milliseconds(0));
  if (!a.at.empty()) r.process_at = time_flag("--at", a.at);
  if (a.retry) {
    if (*a.retry < 0) bad_flag("--retry", "must be 0 or more");
    r.max_retry = *a.retry;
  }
  if (!a.timeout.empty()) r.timeout = duration_flag<seconds>("--timeout", a.timeout, seconds(1));
  if (!a.deadline.empty()) r.deadline = time_flag("--deadline", a.deadline);
  if (!a.unique.empty()) r.unique_ttl = duration_flag<milliseconds>("--unique", a.unique, seconds(1));
  if (!a.retention.empty()) r.retention = duration_flag<seconds>("--retention", a.retention, seconds(1));
  return r;
}

// Long option names of `app` and its subcommands, for the Go-style normalising.
void collect_long_options(const CLI::App& app, config::LongOptions& out) {
  for (const CLI::Option* opt : app.get_options()) {
    for (const auto& name : opt->get_lnames()) out[name] = opt->get_items_expected_min() > 0;
  }
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    collect_long_options(*sub, out);
  }
}

int print_error(const std::string& message) {
  std::cerr << "worker: " << message << "\n";
  return kUsageError;
}

}  // namespace

int run_cli(int argc, char** argv, char** envp) {
  CLI::App app{"autodevs-worker: serves asynq queues with handler plugins (runs `serve` without a command)",
               "worker"};
  app.set_version_flag("--version", std::string("worker ") + WK_VERSION, "Print the version and exit");
  app.require_subcommand(0, 1);

  // Configuration flags: each sets one variable of docs/configuration.md, highest precedence.
  config::Variables flag_settings;
  std::optional<std::filesystem::path> env_file;
  const auto setting = [&](const char* names, const char* variable, const char* help) {
    app.add_option_function<std::string>(
           names, [&flag_settings, variable](const std::string& v) { flag_settings[variable] = v; }, help)
        ->type_name("TEXT");
  };
  setting("--plugins", "WORKER_PLUGINS_DIR", "Directory of handler plugins (.so) [WORKER_PLUGINS_DIR]");
  setting("--worker", "WORKER_NAME", "Worker name in logs and metrics [WORKER_NAME]");
  setting("--concurrency", "WORKER_CONCURRENCY", "Handler slots [WORKER_CONCURRENCY]");
  setting("--queues", "WORKER_QUEUES", "Queue weights, e.g. critical=10,default=2 [WORKER_QUEUES]");
  setting("--limits", "WORKER_LIMITS",
          "Limits per task type, e.g. \"ai:* fleet=3 rate=60/m\" [WORKER_LIMITS]");
  setting("--metrics-addr", "WORKER_METRICS_ADDR", "host:port of /metrics and /healthz, empty disables");
  setting("--shutdown-timeout", "WORKER_SHUTDOWN_TIMEOUT", "Grace for running tasks on stop, e.g. 30s");
  setting("--log-level", "LOG_LEVEL", "trace, debug, info, warn or error [LOG_LEVEL]");
  setting("--log-format", "LOG_FORMAT", "logfmt or json [LOG_FORMAT]");
  app.add_flag_function(
      "--strict-priority",
      [&flag_settings](std::int64_t n) {
        flag_settings["WORKER_STRICT_PRIORITY"] = n > 0 ? "true" : "false";
      },
      "Drain higher-weight queues first [WORKER_STRICT_PRIORITY]");
  app.add_flag_function(
      "-v,--verbose",
      [&flag_settings](std::int64_t n) {
        if (n > 0) flag_settings["LOG_LEVEL"] = "debug";
      },
      "Debug logging (LOG_LEVEL=debug)");
  app.add_option_function<std::string>(
      "--env-file", [&env_file](const std::string& v) { env_file = v; },
      "Settings file to read instead of ./.env");

  auto* version_cmd = app.add_subcommand("version", "Print the version and exit");

  ExecArgs exec_args;
  auto* exec_cmd = app.add_subcommand("exec", "Run one task through a plugin handler locally, without Redis");
  exec_cmd->add_option("--type", exec_args.type, "Task type")->required();
  exec_cmd->add_option("--payload", exec_args.payload, "JSON payload, or @file")->capture_default_str();
  exec_cmd->add_option("--queue", exec_args.queue, "Queue the task pretends to come from")
      ->capture_default_str();
  exec_cmd->add_option("--id", exec_args.id, "Task id (default: random UUID)");
  exec_cmd->add_option("--timeout", exec_args.timeout, "Deadline from now, e.g. 30s (default: none)");

  std::vector<std::string> files_to_check;
  std::string plugins_addr;
  bool plugins_json = false;
  bool check_init = false;
  auto* plugins_cmd =
      app.add_subcommand("plugins", "A running worker's plugins (version, state, runner, crashes, tasks)");
  plugins_cmd->require_subcommand(0, 1);
  plugins_cmd->add_option("--addr", plugins_addr,
                          "The worker's HTTP endpoint (default: WORKER_METRICS_ADDR)");
  plugins_cmd->add_flag("--json", plugins_json, "Print the worker's JSON");
  auto* check_cmd = plugins_cmd->add_subcommand("check", "Check that plugin files would load");
  check_cmd->add_option("files", files_to_check, "Plugin files (.so)")->required();
  check_cmd->add_flag("--init", check_init, "Also run init() in a throw-away runner process");

  EnqueueArgs enq;
  auto* enqueue_cmd = app.add_subcommand("enqueue", "Enqueue a task in asynq's layout and print its id");
  enqueue_cmd->add_option("--type", enq.type, "Task type")->required();
  enqueue_cmd->add_option("--queue", enq.queue, "Queue (default: default)");
  enqueue_cmd->add_option("--payload", enq.payload, "JSON payload, or @file")->capture_default_str();
  enqueue_cmd->add_option("--in", enq.in, "Process after this delay, e.g. 5m");
  enqueue_cmd->add_option("--at", enq.at, "Process at this RFC 3339 time");
  enqueue_cmd->add_option("--retry", enq.retry, "Max retries (default 25)");
  enqueue_cmd->add_option("--timeout", enq.timeout, "Per-attempt timeout, e.g. 10m");
  enqueue_cmd->add_option("--deadline", enq.deadline, "Absolute deadline, RFC 3339");
  enqueue_cmd->add_option("--unique", enq.unique, "Uniqueness lock TTL, e.g. 1h");
  enqueue_cmd->add_option("--id", enq.id, "Custom task id (idempotent enqueue)");
  enqueue_cmd->add_option("--retention", enq.retention, "Keep the completed task this long, e.g. 24h");

  bool limits_json = false;
  auto* limits_cmd = app.add_subcommand(
      "limits", "Flow-control limits (WORKER_LIMITS) and their live state across the fleet, from Redis");
  limits_cmd->add_flag("--json", limits_json, "Print JSON");

  for (auto* sub : {version_cmd, exec_cmd, plugins_cmd, check_cmd, enqueue_cmd, limits_cmd})
    sub->fallthrough();
  // stats, queues, tasks, servers: asynq Inspector operations on Redis.
  admin::Commands admin_commands(app);

  // Go-style flags: normalise, then let CLI11 parse (it wants argv form).
  config::LongOptions long_options;
  collect_long_options(app, long_options);
  const auto args = config::normalize_go_flags(std::vector<std::string>(argv + 1, argv + argc), long_options);
  std::vector<char*> argv2;
  argv2.push_back(argv[0]);
  std::vector<std::string> storage(args);
  for (auto& a : storage) argv2.push_back(a.data());
  try {
    app.parse(static_cast<int>(argv2.size()), argv2.data());
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every usage error exits with our one usage code.
    return app.exit(e) == 0 ? 0 : kUsageError;
  }

  if (version_cmd->parsed()) {
    std::cout << "worker " << WK_VERSION << "\n";
    return 0;
  }

  config::Sources sources;
  sources.flags = flag_settings;
  sources.environment = config::environment_from(envp);
  sources.other_environment = config::other_environment_from(envp);
  sources.env_file = env_file;
  config::Config cfg;
  try {
    cfg = config::load(sources);
  } catch (const config::ConfigError& e) {
    // Nothing else has started: no Redis, no plugins. The message names the variable.
    return print_error(std::string("configuration error: ") + e.what());
  }
  const auto logger = log::Logger::to_stderr(cfg.log_level, cfg.log_format);
  try {
    if (admin_commands.selected()) return admin_commands.run(redis_settings(cfg), std::cout, std::cerr);
    if (check_cmd->parsed()) {
      std::vector<std::filesystem::path> files(files_to_check.begin(), files_to_check.end());
      return check_plugins(files, check_init, cfg, logger, std::cout);
    }
    if (plugins_cmd->parsed()) {
      return show_plugins(plugins_addr.empty() ? cfg.metrics_addr : plugins_addr, plugins_json, std::cout,
                          std::cerr);
    }
    if (exec_cmd->parsed()) {
      plugins::LocalRun run;
      run.plugins_dir = cfg.plugins_dir;
      run.type = exec_args.type;
      run.payload = payload_flag(exec_args.payload);
      run.queue = exec_args.queue;
      run.task_id = exec_args.id;
      if (!exec_args.timeout.empty()) {
        run.timeout = duration_flag<std::chrono::milliseconds>("--timeout", exec_args.timeout,
                                                               std::chrono::milliseconds(1));
      }
      const auto pool = db::make_pool(db_settings(cfg), logger);
      return plugins::exec_local(run, std::cout, logger, cfg.settings, pool.get());
    }
    if (limits_cmd->parsed()) return show_limits(cfg.limits, redis_settings(cfg), limits_json, std::cout);
    if (enqueue_cmd->parsed()) {
      const auto request = enqueue_request(enq);
      redis::Pool pool(redis_settings(cfg), 1);
      queue::Client client(pool);
      std::cout << client.enqueue(request) << "\n";
      return 0;
    }
  } catch (const std::invalid_argument& e) {
    return print_error(e.what());
  } catch (const std::exception& e) {
    std::cerr << "worker: " << e.what() << "\n";
    return 1;
  }

  // serve
  block_stop_signals();
  // Every line of a serving worker names it, so that the logs of a fleet can be told apart.
  const auto worker_logger = logger.with({{"worker_name", cfg.worker_name}});
  Runtime runtime(std::move(cfg), worker_logger);
  return runtime.serve();
}

}  // namespace wk::app
