#pragma once
// The worker's configuration (docs/configuration.md): every setting, validated once at start-up.
//
// Precedence, highest first: command-line flag > environment > `.env` file (in the working
// directory, or the one named by --env-file) > built-in default. All sources are plain
// `VARIABLE -> text` maps, so the flag parser (host/app) only has to translate flag names into
// variable names; this library knows nothing about CLI11.
//
// Besides the typed fields the host uses, Config keeps a snapshot of every raw setting (host
// variables, plugin variables such as WORKTREE_* and AI_*, and any other variable with one of
// the known prefixes): plugins read it through the ABI's config_get. Secrets (*_PASSWORD,
// *_API_KEY, *_TOKEN, *_SECRET) are kept in the snapshot but redacted in every dump.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "asynq/keys.hpp"
#include "log/log.hpp"
#include "task/limits.hpp"

namespace wk::config {

// Variable name -> value: one source of settings (flags, environment, a .env file), or all of them
// merged.
using Variables = std::map<std::string, std::string>;

// A start-up error that names the variable and says what was expected. what() is the full,
// operator-facing message; it never contains a secret value.
class ConfigError : public std::runtime_error {
 public:
  ConfigError(std::string variable, const std::string& message)
      : std::runtime_error(message), variable_(std::move(variable)) {}
  const std::string& variable() const noexcept { return variable_; }

 private:
  std::string variable_;
};

using asynq::QueueWeight;

// Where the raw settings come from. `flags` and `environment` are keyed by variable name.
struct Sources {
  Variables flags;
  Variables environment;
  // The rest of the process environment: readable by plugins through config_get (a plugin's
  // own variables, such as the hello example's HELLO_GREETING), never validated, never logged.
  Variables other_environment;
  // An explicit --env-file (must exist); without one, `<working_dir>/.env` is read if present.
  std::optional<std::filesystem::path> env_file;
  std::filesystem::path working_dir = ".";
};

struct Config {
  // Redis (asynq's broker).
  std::string redis_host = "localhost";
  int redis_port = 6379;
  std::string redis_username;
  std::string redis_password;  // secret
  int redis_db = 0;
  // TLS (REDIS_TLS or a rediss:// REDIS_URL): verified unless redis_tls_insecure.
  bool redis_tls = false;
  std::string redis_tls_ca_file;      // empty: the system's trust store
  std::string redis_tls_cert_file;    // client certificate (mutual TLS)
  std::string redis_tls_key_file;     // its key (empty: in the certificate file)
  std::string redis_tls_server_name;  // empty: REDIS_HOST
  bool redis_tls_insecure = false;
  // Sentinel (REDIS_SENTINELS): "host:port" of each sentinel; the master is asked of them.
  std::vector<std::string> redis_sentinels;
  std::string redis_sentinel_master;
  std::string redis_sentinel_password;  // secret
  // Redis Cluster (REDIS_CLUSTER_NODES): "host:port" of some nodes; the slot map is asked of them.
  std::vector<std::string> redis_cluster_nodes;

  // PostgreSQL pool.
  std::string db_host = "localhost";
  int db_port = 5432;
  std::string db_username = "postgres";
  std::string db_password;  // secret
  std::string db_name = "autodevs";
  std::string db_sslmode = "disable";
  int db_pool_size = 4;  // defaults to worker_concurrency

  // The worker itself.
  std::string worker_name;  // default: host name + "-" + pid
  // This machine's identity (WORKER_HOST_ID, default: the host name): the worker also serves the
  // queue task::host_queue(host_id), first, for the steps that must run where their files are.
  std::string host_id;
  // How long a host queue may go with no live worker serving it before others take its tasks
  // (their handlers then end them; docs/operations.md, "Several machines").
  std::chrono::milliseconds host_queue_timeout{std::chrono::minutes(10)};
  std::string plugins_dir = "./plugins";
  int concurrency = 4;
  std::vector<QueueWeight> queues;  // in the order given
  bool strict_priority = false;
  std::chrono::milliseconds shutdown_timeout{std::chrono::seconds(30)};
  std::string metrics_addr = "127.0.0.1:9090";  // empty = disabled
  // Flow control per task type (WORKER_LIMITS) and how many tasks at their limit this worker
  // holds aside before it hands further ones back to their queue (WORKER_PARKED_MAX).
  std::vector<task::TypeLimit> limits;
  int parked_max = 4;  // defaults to concurrency
  // Processor loops the concurrency is split over (WORKER_LOOPS, docs/queue-engine.md); 0: one
  // per eight slots.
  int loops = 0;

  // Advanced queue-engine timings (hidden: for tests and unusual deployments; see
  // docs/configuration.md). Unset = asynq's defaults (protocol §7.1).
  std::optional<std::chrono::milliseconds> lease;               // WORKER_LEASE (whole seconds, >= 1s)
  std::optional<std::chrono::milliseconds> heartbeat_interval;  // WORKER_HEARTBEAT_INTERVAL (< lease)
  std::optional<std::chrono::milliseconds> recoverer_interval;  // WORKER_RECOVERER_INTERVAL
  std::optional<std::chrono::milliseconds>
      recoverer_cutoff;  // WORKER_RECOVERER_CUTOFF (whole seconds, may be 0)
  std::optional<std::chrono::milliseconds> forwarder_interval;  // WORKER_FORWARDER_INTERVAL
  std::optional<std::chrono::milliseconds>
      retry_delay;  // WORKER_RETRY_DELAY (fixed, whole seconds, may be 0)

  // Plugin runners (docs/plugin-isolation.md).
  std::string isolation = "process";            // WORKER_ISOLATION: process | none
  std::vector<std::string> in_process_plugins;  // WORKER_IN_PROCESS_PLUGINS: ids run in process
  uint64_t plugin_memory_max = 0;               // WORKER_PLUGIN_MEMORY_MAX (bytes, 0 = none)
  std::map<std::string, uint64_t> plugin_memory_max_by_plugin;
  uint64_t plugin_open_files_max = 0;  // WORKER_PLUGIN_OPEN_FILES_MAX (0 = inherit)
  std::chrono::milliseconds plugin_liveness_timeout{std::chrono::seconds(20)};
  int crash_limit = 2;  // WORKER_CRASH_LIMIT: crashes a poison task may cause before it is archived
  // WORKER_UNHANDLED_TIMEOUT: how long a task may go without any worker serving its type before
  // it is retried as "handler not found" (asynq's rule).
  std::chrono::milliseconds unhandled_timeout{std::chrono::minutes(10)};

  log::Level log_level = log::Level::info;
  log::Format log_format = log::Format::logfmt;

  // The .env file that was read, if any (for the start-up log).
  std::optional<std::filesystem::path> env_file_used;
  // Variables with a host prefix (REDIS_, DB_, WORKER_, LOG_) that no one knows: likely typos.
  // Not fatal (other programs share these prefixes), but worth a warning line.
  std::vector<std::string> unknown_variables;

  // Every effective raw setting (defaults included), for config_get. Contains secrets.
  Variables settings;
  // Keys of `settings` that came from Sources::other_environment: not ours, so not dumped.
  std::set<std::string> other_keys;

  // "host:port" of Redis (or the master's name and the sentinels), as logged at start-up.
  std::string redis_addr() const;
  // The raw value of `key`, or nullopt when unset.
  std::optional<std::string> get(const std::string& key) const;
  // `settings` with every secret value replaced: safe to log or print.
  Variables redacted() const;
};

// Reads all sources, applies precedence and defaults, validates. Throws ConfigError.
Config load(const Sources& sources);

// The process environment, limited to what concerns the worker: known variables and any
// variable with a known prefix (REDIS_, DB_, WORKER_, LOG_, WORKTREE_, AI_).
Variables environment_from(char** envp);
// The rest of it (what environment_from leaves out).
Variables other_environment_from(char** envp);

// Whether `key` names a secret (*_PASSWORD, *_API_KEY, *_TOKEN, *_SECRET, case-insensitive).
bool is_secret(std::string_view key);

// The parts of a redis:// or rediss:// URL (docs/configuration.md, REDIS_URL). Throws
// std::invalid_argument with a text that never contains the password.
struct RedisUrl {
  bool tls = false;  // rediss://
  std::string host;
  int port = 6379;
  std::string username;
  std::string password;
  int db = 0;
};
RedisUrl parse_redis_url(std::string_view url);
// The text shown instead of a secret value; a URL (*_URL) is shown with its password replaced.
std::string redact(std::string_view key, std::string_view value);

// `.env` text: KEY=VALUE lines, `export ` prefix, `#` comments (whole line, or after an unquoted
// value following whitespace), single quotes (literal) and double quotes (\n \t \" \\ escapes).
// Throws ConfigError naming `origin` and the line number on a malformed line.
Variables parse_dotenv(std::string_view text, const std::string& origin = ".env");

// Go's time.ParseDuration syntax: "300ms", "1.5h", "2h45m", "0". Units ns, us, µs, ms, s, m, h.
// Throws std::invalid_argument on malformed or negative text.
std::chrono::nanoseconds parse_duration(std::string_view text);
// Formats like Go's Duration.String() for whole units we use ("1h30m0s" style is avoided):
// "30s", "5m", "1h30m", "500ms".
std::string format_duration(std::chrono::milliseconds d);

// RFC 3339 timestamps ("2024-01-01T12:00:00Z", "2024-01-01T14:00:00.5+02:00"; 't', 'z' and a
// space for 'T' accepted). Throws std::invalid_argument.
std::chrono::system_clock::time_point parse_rfc3339(std::string_view text);

// "critical=10,planning=6,default=2". Throws std::invalid_argument.
std::vector<QueueWeight> parse_queues(std::string_view text);
// "512MiB", "2G", "1048576": bytes with an optional unit (K/KiB/M/MiB/G/GiB powers of two,
// KB/MB/GB powers of ten). Throws std::invalid_argument.
uint64_t parse_size(std::string_view text);
// Go's strconv.ParseBool plus yes/no/on/off. Throws std::invalid_argument.
bool parse_bool(std::string_view text);

}  // namespace wk::config
