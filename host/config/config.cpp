#include "config/config.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>

#include "task/task.hpp"

namespace wk::config {

namespace {

// Variables with a built-in default. Computed defaults (WORKER_NAME, DB_POOL_SIZE) are filled in
// by load(); variables without a default (secrets, AI_*) are absent unless set.
const Variables& defaults() {
  static const Variables table = {
      {"REDIS_HOST", "localhost"},
      {"REDIS_PORT", "6379"},
      {"REDIS_DB", "0"},
      {"REDIS_TLS", "false"},
      {"REDIS_TLS_INSECURE", "false"},
      {"DB_HOST", "localhost"},
      {"DB_PORT", "5432"},
      {"DB_USERNAME", "postgres"},
      {"DB_NAME", "autodevs"},
      {"DB_SSLMODE", "disable"},
      {"WORKER_PLUGINS_DIR", "./plugins"},
      {"WORKER_CONCURRENCY", "4"},
      {"WORKER_QUEUES", "critical=10,planning=6,default=2"},
      {"WORKER_STRICT_PRIORITY", "false"},
      {"WORKER_SHUTDOWN_TIMEOUT", "30s"},
      {"WORKER_METRICS_ADDR", "127.0.0.1:9090"},
      {"WORKER_ISOLATION", "process"},
      {"WORKER_PLUGIN_LIVENESS_TIMEOUT", "20s"},
      {"WORKER_CRASH_LIMIT", "2"},
      {"WORKER_UNHANDLED_TIMEOUT", "10m"},
      {"LOG_LEVEL", "info"},
      {"LOG_FORMAT", "logfmt"},
      {"WORKTREE_BASE_DIR", "/tmp/worktrees"},
      {"WORKTREE_MAX_PATH_LENGTH", "4096"},
      {"WORKTREE_MIN_DISK_SPACE", "104857600"},
      {"WORKTREE_CLEANUP_INTERVAL", "24h"},
      {"WORKTREE_ENABLE_LOGGING", "true"},
      {"WORKTREE_SHARED", "false"},
      {"WORKER_HOST_QUEUE_TIMEOUT", "10m"},
  };
  return table;
}

// Every variable the host or the shipped plugins read (the unknown-variable check uses it).
const std::set<std::string>& known_variables() {
  static const std::set<std::string> names = [] {
    std::set<std::string> n;
    for (const auto& [k, v] : defaults()) n.insert(k);
    for (const char* extra :
         {"REDIS_URL", "REDIS_CLUSTER_NODES", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER",
          "REDIS_SENTINEL_PASSWORD", "REDIS_USERNAME", "REDIS_PASSWORD", "REDIS_TLS_CA_FILE",
          "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE", "REDIS_TLS_SERVER_NAME", "DB_PASSWORD", "DB_POOL_SIZE",
          "WORKER_NAME", "AI_PROVIDER", "AI_COMMAND", "AI_BASE_URL", "AI_API_KEY", "AI_MODEL", "AI_TIMEOUT",
          // Advanced engine timings: no default here (unset = the engine's).
          "WORKER_LEASE", "WORKER_HEARTBEAT_INTERVAL", "WORKER_RECOVERER_INTERVAL", "WORKER_RECOVERER_CUTOFF",
          "WORKER_FORWARDER_INTERVAL", "WORKER_RETRY_DELAY",
          // Flow control (docs/queue-engine.md): unset = no limits, parking bound = concurrency.
          "WORKER_LIMITS", "WORKER_PARKED_MAX",
          // Processor loops (docs/queue-engine.md, "Several loops"): unset = one per 8 slots.
          "WORKER_LOOPS",
          // Host affinity (docs/operations.md, "Several machines"): default from the host name.
          "WORKER_HOST_ID",
          // Plugin runners (docs/plugin-isolation.md): unset = no limit, no override.
          "WORKER_IN_PROCESS_PLUGINS", "WORKER_PLUGIN_MEMORY_MAX", "WORKER_PLUGIN_OPEN_FILES_MAX"}) {
      n.insert(extra);
    }
    return n;
  }();
  return names;
}

// "a, b,c" -> {"a", "b", "c"}; empty items dropped.
std::vector<std::string> split_list(std::string_view text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    std::string_view item = text.substr(pos, comma - pos);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!item.empty()) out.emplace_back(item);
    pos = comma + 1;
  }
  return out;
}

// Prefixes whose variables belong to us; the first four are the host's own (typo check).
constexpr std::string_view kHostPrefixes[] = {"REDIS_", "DB_", "WORKER_", "LOG_"};
constexpr std::string_view kPluginPrefixes[] = {"WORKTREE_", "AI_"};

bool starts_with_any(std::string_view key, const auto& prefixes) {
  return std::any_of(std::begin(prefixes), std::end(prefixes),
                     [&](std::string_view p) { return key.starts_with(p); });
}

bool ends_with_ci(std::string_view s, std::string_view suffix) {
  if (s.size() < suffix.size()) return false;
  return std::equal(
      suffix.begin(), suffix.end(), s.end() - static_cast<std::ptrdiff_t>(suffix.size()), [](char a, char b) {
        return std::toupper(static_cast<unsigned char>(a)) == std::toupper(static_cast<unsigned char>(b));
      });
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("--env-file", "--env-file " + path.string() + ": cannot be read");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The machine's host name, or `fallback` when it has none.
std::string host_name_or(const char* fallback) {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') return fallback;
  return host;
}

std::string default_worker_name() { return host_name_or("worker") + "-" + std::to_string(getpid()); }

bool host_id_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '_' || c == '-';
}

// The host name as a host id: characters outside [A-Za-z0-9._-] become '-', at most 64.
std::string default_host_id() {
  std::string id = host_name_or("localhost").substr(0, 64);
  std::replace_if(
      id.begin(), id.end(), [](char c) { return !host_id_char(c); }, '-');
  return id;
}

bool valid_host_id(std::string_view id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), host_id_char);
}

// Resolves the effective settings and remembers where each came from, for error messages.
class Resolver {
 public:
  Resolver(Variables settings, std::map<std::string, std::string> origins)
      : settings_(std::move(settings)), origins_(std::move(origins)) {}

  // The value, or nullopt when unset. Empty text counts as unset except where `empty_is_value`.
  std::optional<std::string> raw(const std::string& key, bool empty_is_value = false) const {
    const auto it = settings_.find(key);
    if (it == settings_.end()) return std::nullopt;
    if (it->second.empty() && !empty_is_value) {
      const auto d = defaults().find(key);
      if (d != defaults().end()) return d->second;
      return std::nullopt;
    }
    return it->second;
  }

  std::string text(const std::string& key) const { return raw(key).value_or(""); }

  [[noreturn]] void fail(const std::string& key, const std::string& expected) const {
    const auto value = settings_.count(key) != 0 ? settings_.at(key) : std::string();
    const auto origin = origins_.count(key) != 0 ? origins_.at(key) : std::string("default");
    throw ConfigError(key, "invalid " + key + "=\"" + redact(key, value) + "\" (from " + origin +
                               "): expected " + expected);
  }

  int integer(const std::string& key, long long min, long long max) const {
    const auto v = text(key);
    long long n = 0;
    const auto* end = v.data() + v.size();
    const auto [ptr, ec] = std::from_chars(v.data(), end, n);
    if (v.empty() || ec != std::errc() || ptr != end || n < min || n > max) {
      fail(key, "an integer from " + std::to_string(min) + " to " + std::to_string(max));
    }
    return static_cast<int>(n);
  }

  long long big_integer(const std::string& key, long long min) const {
    const auto v = text(key);
    long long n = 0;
    const auto* end = v.data() + v.size();
    const auto [ptr, ec] = std::from_chars(v.data(), end, n);
    if (v.empty() || ec != std::errc() || ptr != end || n < min) {
      fail(key, "an integer of at least " + std::to_string(min));
    }
    return n;
  }

  bool boolean(const std::string& key) const {
    try {
      return parse_bool(text(key));
    } catch (const std::invalid_argument&) {
      fail(key, "true or false");
    }
  }

  std::chrono::milliseconds duration(const std::string& key, bool allow_zero) const {
    try {
      const auto d = std::chrono::duration_cast<std::chrono::milliseconds>(parse_duration(text(key)));
      if (!allow_zero && d.count() == 0) fail(key, "a positive duration such as 30s, 5m, 1h30m");
      return d;
    } catch (const std::invalid_argument&) {
      fail(key, "a duration such as 30s, 5m, 1h30m, 500ms");
    }
  }

  std::string one_of(const std::string& key, std::initializer_list<std::string_view> choices) const {
    auto v = text(key);
    std::string list;
    for (const auto c : choices) {
      if (v == c) return v;
      if (!list.empty()) list += ", ";
      list += c;
    }
    fail(key, "one of " + list);
  }

 private:
  Variables settings_;
  std::map<std::string, std::string> origins_;
};

bool valid_host_port(std::string_view addr) {
  const auto colon = addr.rfind(':');
  if (colon == std::string_view::npos) return false;
  const auto port = addr.substr(colon + 1);
  int n = 0;
  const auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
  return !port.empty() && ec == std::errc() && ptr == port.data() + port.size() && n >= 0 && n <= 65535;
}

}  // namespace

bool is_secret(std::string_view key) {
  return ends_with_ci(key, "_PASSWORD") || ends_with_ci(key, "_API_KEY") || ends_with_ci(key, "_TOKEN") ||
         ends_with_ci(key, "_SECRET");
}

namespace {

// "scheme://user:password@host..." -> "scheme://user:<redacted>@host...".
std::string redact_url_password(std::string_view url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::string(url);
  const size_t authority = scheme_end + 3;
  const size_t authority_end = std::min(url.find('/', authority), url.size());
  const size_t at = url.substr(0, authority_end).rfind('@');
  if (at == std::string_view::npos || at < authority) return std::string(url);
  const size_t colon = url.substr(authority, at - authority).find(':');
  if (colon == std::string_view::npos) {
    // "redis://secret@host" is a password alone in redis-cli and go-redis.
    return std::string(url.substr(0, authority)) + "<redacted>" + std::string(url.substr(at));
  }
  return std::string(url.substr(0, authority + colon + 1)) + "<redacted>" + std::string(url.substr(at));
}

std::string percent_decode(std::string_view text, const char* part) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    int byte = 0;
    if (i + 2 >= text.size()) throw std::invalid_argument(std::string("bad %-escape in the ") + part);
    const auto [ptr, ec] = std::from_chars(text.data() + i + 1, text.data() + i + 3, byte, 16);
    if (ec != std::errc() || ptr != text.data() + i + 3) {
      throw std::invalid_argument(std::string("bad %-escape in the ") + part);
    }
    out.push_back(static_cast<char>(byte));
    i += 2;
  }
  return out;
}

}  // namespace

RedisUrl parse_redis_url(std::string_view url) {
  RedisUrl out;
  std::string_view rest = url;
  if (rest.starts_with("rediss://")) {
    out.tls = true;
    rest.remove_prefix(9);
  } else if (rest.starts_with("redis://")) {
    rest.remove_prefix(8);
  } else {
    throw std::invalid_argument("a URL starting with redis:// or rediss://");
  }
  const size_t slash = std::min(rest.find('/'), rest.size());
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash < rest.size() ? rest.substr(slash + 1) : std::string_view();
  if (const size_t query = path.find('?'); query != std::string_view::npos) {
    throw std::invalid_argument("no ?options: TLS and the rest have variables of their own");
  }
  if (const size_t at = authority.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = authority.substr(0, at);
    authority.remove_prefix(at + 1);
    const size_t colon = userinfo.find(':');
    if (colon == std::string_view::npos) {
      out.password = percent_decode(userinfo, "password");
    } else {
      out.username = percent_decode(userinfo.substr(0, colon), "user name");
      out.password = percent_decode(userinfo.substr(colon + 1), "password");
    }
  }
  std::string_view port;
  if (authority.starts_with('[')) {  // [::1]:6379
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) throw std::invalid_argument("an IPv6 address in [brackets]");
    out.host = std::string(authority.substr(1, close - 1));
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty() && !after.starts_with(':')) throw std::invalid_argument("host[:port] after the @");
    port = after.empty() ? after : after.substr(1);
  } else {
    const size_t colon = authority.find(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (out.host.empty()) throw std::invalid_argument("a host name after the scheme");
  if (!port.empty()) {
    const auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), out.port);
    if (ec != std::errc() || ptr != port.data() + port.size() || out.port < 1 || out.port > 65535) {
      throw std::invalid_argument("a port from 1 to 65535");
    }
  }
  if (!path.empty()) {
    const auto [ptr, ec] = std::from_chars(path.data(), path.data() + path.size(), out.db);
    if (ec != std::errc() || ptr != path.data() + path.size() || out.db < 0) {
      throw std::invalid_argument("a database number after the last /");
    }
  }
  return out;
}

std::string redact(std::string_view key, std::string_view value) {
  if (ends_with_ci(key, "_URL")) return redact_url_password(value);
  if (!is_secret(key)) return std::string(value);
  return value.empty() ? std::string() : std::string("<redacted>");
}

bool parse_bool(std::string_view text) {
  std::string t(text);
  std::transform(t.begin(), t.end(), t.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (t == "1" || t == "t" || t == "true" || t == "yes" || t == "y" || t == "on") return true;
  if (t == "0" || t == "f" || t == "false" || t == "no" || t == "n" || t == "off") return false;
  throw std::invalid_argument("expected true or false");
}

std::vector<QueueWeight> parse_queues(std::string_view text) {
  std::vector<QueueWeight> out;
  const auto trim = [](std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())) != 0) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())) != 0) s.remove_suffix(1);
    return s;
  };
  while (true) {
    const auto comma = text.find(',');
    const auto item = trim(text.substr(0, comma));
    const auto eq = item.find('=');
    if (eq == std::string_view::npos) {
      throw std::invalid_argument("queue entry \"" + std::string(item) + "\" is not name=weight");
    }
    const auto name = trim(item.substr(0, eq));
    const auto weight_text = trim(item.substr(eq + 1));
    if (name.empty()) throw std::invalid_argument("empty queue name");
    if (name.find_first_of(" \t{}:") != std::string_view::npos) {
      throw std::invalid_argument("queue name \"" + std::string(name) +
                                  "\" contains a space, brace or colon");
    }
    int weight = 0;
    const auto [ptr, ec] =
        std::from_chars(weight_text.data(), weight_text.data() + weight_text.size(), weight);
    if (weight_text.empty() || ec != std::errc() || ptr != weight_text.data() + weight_text.size() ||
        weight < 1 || weight > 1000000) {
      throw std::invalid_argument("weight of queue \"" + std::string(name) +
                                  "\" is not an integer from 1 to 1000000");
    }
    if (std::any_of(out.begin(), out.end(), [&](const QueueWeight& q) { return q.name == name; })) {
      throw std::invalid_argument("queue \"" + std::string(name) + "\" is listed twice");
    }
    out.push_back({std::string(name), weight});
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

// The variables of `envp` that are ours (`want_ours`) or the others.
static Variables environment_part(char** envp, bool want_ours) {
  Variables out;
  if (envp == nullptr) return out;
  for (char** e = envp; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const auto eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    std::string key(entry.substr(0, eq));
    const bool ours = known_variables().count(key) != 0 || starts_with_any(key, kHostPrefixes) ||
                      starts_with_any(key, kPluginPrefixes);
    if (ours == want_ours) out[std::move(key)] = std::string(entry.substr(eq + 1));
  }
  return out;
}

Variables environment_from(char** envp) { return environment_part(envp, true); }

Variables other_environment_from(char** envp) { return environment_part(envp, false); }

Config load(const Sources& sources) {
  Variables merged = defaults();
  std::map<std::string, std::string> origins;
  Config cfg;

  // .env: explicit file must exist; the implicit one is optional.
  std::optional<std::filesystem::path> env_file = sources.env_file;
  if (!env_file) {
    const auto implicit = sources.working_dir / ".env";
    std::error_code ec;
    if (std::filesystem::is_regular_file(implicit, ec)) env_file = implicit;
  } else {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(*env_file, ec)) {
      throw ConfigError("--env-file",
                        "--env-file " + env_file->string() + ": does not exist or is not a file");
    }
  }
  if (env_file) {
    for (auto& [k, v] : parse_dotenv(read_file(*env_file), env_file->string())) {
      merged[k] = v;
      origins[k] = env_file->string();
    }
    cfg.env_file_used = env_file;
  }
  for (const auto& [k, v] : sources.environment) {
    merged[k] = v;
    origins[k] = "environment";
  }
  for (const auto& [k, v] : sources.other_environment) {
    merged[k] = v;  // beats a .env value of the same name, as the environment always does
    cfg.other_keys.insert(k);
  }
  for (const auto& [k, v] : sources.flags) {
    merged[k] = v;
    origins[k] = "command line";
  }

  const Resolver r(merged, origins);

  // Set by the operator (not a default, not empty).
  const auto set_explicitly = [&](const std::string& key) {
    return origins.count(key) != 0 && !merged.at(key).empty();
  };
  // `key` says where Redis is; any of `replaced` set as well is refused rather than ignored.
  const auto refuse_alongside = [&](const char* key, std::initializer_list<const char*> replaced) {
    for (const char* other : replaced) {
      if (set_explicitly(other)) {
        throw ConfigError(other, std::string(other) + " is set (from " + origins.at(other) + ") and so is " +
                                     key + ": set one of them");
      }
    }
  };
  const auto address_list = [&](const char* key, const std::string& text) {
    std::vector<std::string> list = split_list(text);
    for (const auto& address : list) {
      if (!valid_host_port(address) || address.front() == ':') {
        r.fail(key, "host:port,host:port,... (\"" + address + "\" is not host:port)");
      }
    }
    if (list.empty()) r.fail(key, "host:port,host:port,...");
    return list;
  };
  bool url_tls = false;
  if (const auto url = r.raw("REDIS_URL")) {
    // The URL stands for these five; one of them set as well would be ignored by one reader of
    // the configuration and obeyed by another, so it is refused.
    refuse_alongside("REDIS_URL",
                     {"REDIS_HOST", "REDIS_PORT", "REDIS_USERNAME", "REDIS_PASSWORD", "REDIS_DB"});
    try {
      const RedisUrl parsed = parse_redis_url(*url);
      url_tls = parsed.tls;
      cfg.redis_host = parsed.host;
      cfg.redis_port = parsed.port;
      cfg.redis_username = parsed.username;
      cfg.redis_password = parsed.password;
      cfg.redis_db = parsed.db;
    } catch (const std::invalid_argument& e) {
      r.fail("REDIS_URL",
             std::string("redis://[user:password@]host[:port][/db] or rediss://...: ") + e.what());
    }
  } else {
    cfg.redis_host = r.text("REDIS_HOST");
    if (cfg.redis_host.empty()) r.fail("REDIS_HOST", "a host name or address");
    cfg.redis_port = r.integer("REDIS_PORT", 1, 65535);
    cfg.redis_username = r.raw("REDIS_USERNAME", true).value_or("");
    cfg.redis_password = r.raw("REDIS_PASSWORD", true).value_or("");
    cfg.redis_db = r.integer("REDIS_DB", 0, 1000000);
  }
  cfg.redis_tls = r.boolean("REDIS_TLS");
  if (url_tls && set_explicitly("REDIS_TLS") && !cfg.redis_tls) {
    r.fail("REDIS_TLS", "true, or unset: REDIS_URL is rediss://, which means TLS");
  }
  cfg.redis_tls = cfg.redis_tls || url_tls;
  cfg.redis_tls_ca_file = r.text("REDIS_TLS_CA_FILE");
  cfg.redis_tls_cert_file = r.text("REDIS_TLS_CERT_FILE");
  cfg.redis_tls_key_file = r.text("REDIS_TLS_KEY_FILE");
  cfg.redis_tls_server_name = r.text("REDIS_TLS_SERVER_NAME");
  cfg.redis_tls_insecure = r.boolean("REDIS_TLS_INSECURE");
  for (const char* tls_only : {"REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE",
                               "REDIS_TLS_SERVER_NAME", "REDIS_TLS_INSECURE"}) {
    if (!cfg.redis_tls && set_explicitly(tls_only)) {
      throw ConfigError(
          tls_only,
          std::string(tls_only) + " is set but TLS is off: set REDIS_TLS=true or use a rediss:// REDIS_URL");
    }
  }
  if (const auto sentinels = r.raw("REDIS_SENTINELS")) {
    // The sentinels say where the master is: a host and port of our own would be ignored.
    refuse_alongside("REDIS_SENTINELS", {"REDIS_URL", "REDIS_HOST", "REDIS_PORT"});
    cfg.redis_sentinels = address_list("REDIS_SENTINELS", *sentinels);
    cfg.redis_sentinel_master = r.text("REDIS_SENTINEL_MASTER");
    if (cfg.redis_sentinel_master.empty()) {
      throw ConfigError("REDIS_SENTINEL_MASTER",
                        "REDIS_SENTINEL_MASTER is needed with REDIS_SENTINELS: the name the sentinels "
                        "monitor the master under (sentinel monitor <name> ...)");
    }
    cfg.redis_sentinel_password = r.raw("REDIS_SENTINEL_PASSWORD", true).value_or("");
  } else {
    for (const char* sentinel_only : {"REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD"}) {
      if (set_explicitly(sentinel_only)) {
        throw ConfigError(sentinel_only, std::string(sentinel_only) + " is set but REDIS_SENTINELS is not");
      }
    }
  }
  if (const auto nodes = r.raw("REDIS_CLUSTER_NODES")) {
    // The slot map says where each queue lives: one host of our own, or sentinels, would not.
    refuse_alongside("REDIS_CLUSTER_NODES", {"REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_SENTINELS"});
    cfg.redis_cluster_nodes = address_list("REDIS_CLUSTER_NODES", *nodes);
    if (cfg.redis_db != 0) r.fail("REDIS_DB", "0: Redis Cluster has database 0 only");
  }
  if (!cfg.redis_tls_key_file.empty() && cfg.redis_tls_cert_file.empty()) {
    r.fail("REDIS_TLS_KEY_FILE", "to come with REDIS_TLS_CERT_FILE (the certificate it is the key of)");
  }

  cfg.concurrency = r.integer("WORKER_CONCURRENCY", 1, 10000);
  merged["WORKER_CONCURRENCY"] = std::to_string(cfg.concurrency);

  cfg.db_host = r.text("DB_HOST");
  if (cfg.db_host.empty()) r.fail("DB_HOST", "a host name, address or socket directory");
  cfg.db_port = r.integer("DB_PORT", 1, 65535);
  cfg.db_username = r.text("DB_USERNAME");
  cfg.db_password = r.raw("DB_PASSWORD", true).value_or("");
  cfg.db_name = r.text("DB_NAME");
  if (cfg.db_name.empty()) r.fail("DB_NAME", "a database name");
  cfg.db_sslmode =
      r.one_of("DB_SSLMODE", {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"});
  if (r.raw("DB_POOL_SIZE")) {
    cfg.db_pool_size = r.integer("DB_POOL_SIZE", 1, 10000);
  } else {
    cfg.db_pool_size = cfg.concurrency;
  }
  merged["DB_POOL_SIZE"] = std::to_string(cfg.db_pool_size);

  cfg.worker_name = r.raw("WORKER_NAME").value_or(default_worker_name());
  merged["WORKER_NAME"] = cfg.worker_name;
  cfg.host_id = r.raw("WORKER_HOST_ID").value_or(default_host_id());
  if (!valid_host_id(cfg.host_id)) {
    r.fail("WORKER_HOST_ID",
           "1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-', the same for every worker "
           "of one machine");
  }
  merged["WORKER_HOST_ID"] = cfg.host_id;
  cfg.host_queue_timeout = r.duration("WORKER_HOST_QUEUE_TIMEOUT", false);
  cfg.plugins_dir = r.text("WORKER_PLUGINS_DIR");
  try {
    cfg.queues = parse_queues(r.text("WORKER_QUEUES"));
  } catch (const std::invalid_argument& e) {
    r.fail("WORKER_QUEUES",
           std::string("name=weight pairs such as critical=10,default=2 (") + e.what() + ")");
  }
  for (const auto& q : cfg.queues) {
    if (!task::host_of_queue(q.name).empty()) {
      r.fail("WORKER_QUEUES",
             "queue names without the host: prefix (every worker serves its own host:<WORKER_HOST_ID> "
             "queue already)");
    }
  }
  cfg.strict_priority = r.boolean("WORKER_STRICT_PRIORITY");
  if (const auto limits = r.raw("WORKER_LIMITS")) {
    try {
      cfg.limits = task::parse_type_limits(*limits);
    } catch (const std::invalid_argument& e) {
      r.fail("WORKER_LIMITS",
             std::string("limits such as \"ai:* fleet=3 rate=60/m; git:clone concurrency=2\" (") + e.what() +
                 ")");
    }
  }
  if (r.raw("WORKER_PARKED_MAX")) {
    cfg.parked_max = r.integer("WORKER_PARKED_MAX", 0, 100000);
  } else {
    cfg.parked_max = cfg.concurrency;
  }
  merged["WORKER_PARKED_MAX"] = std::to_string(cfg.parked_max);
  if (r.raw("WORKER_LOOPS")) {
    cfg.loops = r.integer("WORKER_LOOPS", 1, 64);
    if (cfg.loops > cfg.concurrency) r.fail("WORKER_LOOPS", "at most WORKER_CONCURRENCY loops");
    merged["WORKER_LOOPS"] = std::to_string(cfg.loops);
  }
  cfg.shutdown_timeout = r.duration("WORKER_SHUTDOWN_TIMEOUT", true);
  cfg.metrics_addr = r.raw("WORKER_METRICS_ADDR", true).value_or("");
  if (!cfg.metrics_addr.empty() && !valid_host_port(cfg.metrics_addr)) {
    r.fail("WORKER_METRICS_ADDR", "host:port (such as 127.0.0.1:9090), or empty to disable");
  }

  // Advanced engine timings (hidden). Lease scores, the recoverer's cutoff and retry times are
  // whole unix seconds on the wire, so those three must be whole seconds.
  auto optional_duration = [&](const char* key, bool allow_zero, bool whole_seconds) {
    std::optional<std::chrono::milliseconds> d;
    if (!r.raw(key)) return d;
    d = r.duration(key, allow_zero);
    if (whole_seconds && d->count() % 1000 != 0) r.fail(key, "a whole number of seconds such as 2s");
    return d;
  };
  cfg.lease = optional_duration("WORKER_LEASE", false, true);
  cfg.heartbeat_interval = optional_duration("WORKER_HEARTBEAT_INTERVAL", false, false);
  cfg.recoverer_interval = optional_duration("WORKER_RECOVERER_INTERVAL", false, false);
  cfg.recoverer_cutoff = optional_duration("WORKER_RECOVERER_CUTOFF", true, true);
  cfg.forwarder_interval = optional_duration("WORKER_FORWARDER_INTERVAL", false, false);
  cfg.retry_delay = optional_duration("WORKER_RETRY_DELAY", true, true);
  {
    const auto lease = cfg.lease.value_or(std::chrono::seconds(30));
    const auto beat = cfg.heartbeat_interval.value_or(std::chrono::seconds(5));
    if (beat >= lease) {
      r.fail(cfg.heartbeat_interval ? "WORKER_HEARTBEAT_INTERVAL" : "WORKER_LEASE",
             "a heartbeat interval (default 5s) shorter than the lease (default 30s)");
    }
  }

  cfg.isolation = r.one_of("WORKER_ISOLATION", {"process", "none"});
  if (auto ids = r.raw("WORKER_IN_PROCESS_PLUGINS")) {
    for (const auto& id : split_list(*ids)) cfg.in_process_plugins.push_back(id);
  }
  if (auto limits = r.raw("WORKER_PLUGIN_MEMORY_MAX")) {
    // "512MiB" for every runner, "dev.acme.resize=2GiB" for one plugin; comma-separated.
    for (const auto& item : split_list(*limits)) {
      const auto eq = item.find('=');
      try {
        if (eq == std::string::npos) {
          cfg.plugin_memory_max = parse_size(item);
        } else {
          cfg.plugin_memory_max_by_plugin[item.substr(0, eq)] = parse_size(item.substr(eq + 1));
        }
      } catch (const std::invalid_argument&) {
        r.fail("WORKER_PLUGIN_MEMORY_MAX",
               "sizes such as 512MiB for every plugin runner, or plugin.id=1GiB, comma-separated");
      }
    }
  }
  if (r.raw("WORKER_PLUGIN_OPEN_FILES_MAX"))
    cfg.plugin_open_files_max = r.integer("WORKER_PLUGIN_OPEN_FILES_MAX", 16, 1 << 20);
  cfg.plugin_liveness_timeout = r.duration("WORKER_PLUGIN_LIVENESS_TIMEOUT", false);
  cfg.crash_limit = r.integer("WORKER_CRASH_LIMIT", 1, 1000);
  cfg.unhandled_timeout = r.duration("WORKER_UNHANDLED_TIMEOUT", true);

  try {
    cfg.log_level = log::parse_level(r.text("LOG_LEVEL"));
  } catch (const std::invalid_argument&) {
    r.fail("LOG_LEVEL", "one of trace, debug, info, warn, error");
  }
  try {
    cfg.log_format = log::parse_format(r.text("LOG_FORMAT"));
  } catch (const std::invalid_argument&) {
    r.fail("LOG_FORMAT", "logfmt or json");
  }

  // Plugin settings: checked here too, so a typo stops the process before it takes tasks.
  r.integer("WORKTREE_MAX_PATH_LENGTH", 1, 1 << 20);
  r.big_integer("WORKTREE_MIN_DISK_SPACE", 0);
  r.duration("WORKTREE_CLEANUP_INTERVAL", false);
  r.boolean("WORKTREE_ENABLE_LOGGING");
  r.boolean("WORKTREE_SHARED");
  if (r.raw("AI_PROVIDER")) r.one_of("AI_PROVIDER", {"none", "command", "openai"});
  if (r.raw("AI_TIMEOUT")) r.duration("AI_TIMEOUT", false);

  for (const auto& [k, v] : merged) {
    if (starts_with_any(k, kHostPrefixes) && known_variables().count(k) == 0)
      cfg.unknown_variables.push_back(k);
  }
  cfg.settings = std::move(merged);
  return cfg;
}

uint64_t parse_size(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0 || digits > 15) throw std::invalid_argument("not a size");
  const uint64_t number = std::stoull(std::string(text.substr(0, digits)));
  const std::string_view unit = text.substr(digits);
  static const std::pair<std::string_view, uint64_t> units[] = {{"", 1},
                                                                {"B", 1},
                                                                {"K", 1ULL << 10},
                                                                {"KiB", 1ULL << 10},
                                                                {"KB", 1000},
                                                                {"M", 1ULL << 20},
                                                                {"MiB", 1ULL << 20},
                                                                {"MB", 1000000},
                                                                {"G", 1ULL << 30},
                                                                {"GiB", 1ULL << 30},
                                                                {"GB", 1000000000}};
  for (const auto& [name, factor] : units) {
    if (unit == name) return number * factor;
  }
  throw std::invalid_argument("unknown size unit");
}

std::string Config::redis_addr() const {
  if (!redis_cluster_nodes.empty()) {
    std::string out = "cluster ";
    for (size_t i = 0; i < redis_cluster_nodes.size(); ++i)
      out += (i == 0 ? "" : ",") + redis_cluster_nodes[i];
    return out;
  }
  if (redis_sentinels.empty()) return redis_host + ":" + std::to_string(redis_port);
  std::string out = "master " + redis_sentinel_master + " via sentinels ";
  for (size_t i = 0; i < redis_sentinels.size(); ++i) out += (i == 0 ? "" : ",") + redis_sentinels[i];
  return out;
}

std::optional<std::string> Config::get(const std::string& key) const {
  const auto it = settings.find(key);
  if (it == settings.end()) return std::nullopt;
  return it->second;
}

Variables Config::redacted() const {
  Variables out;
  for (const auto& [k, v] : settings) out[k] = redact(k, v);
  return out;
}

}  // namespace wk::config
