#include "app/plugin_commands.hpp"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "app/runtime.hpp"
#include "http/server.hpp"
#include "plugins/plugins.hpp"
#include "runner/runner.hpp"

namespace wk::app {

namespace {

std::string mib(uint64_t bytes) {
  if (bytes == 0) return "-";
  char text[32];
  std::snprintf(text, sizeof text, "%.1fMiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return text;
}

}  // namespace

int show_plugins(const std::string& address, bool json, std::ostream& out, std::ostream& err) {
  if (address.empty()) {
    err << "worker: the worker's HTTP endpoint is off (WORKER_METRICS_ADDR is empty); give --addr\n";
    return 2;
  }
  http::Endpoint endpoint;
  try {
    endpoint = http::parse_address(address);
  } catch (const std::invalid_argument& e) {
    err << "worker: " << e.what() << "\n";
    return 2;
  }
  if (endpoint.host.empty() || endpoint.host == "0.0.0.0") endpoint.host = "127.0.0.1";
  if (endpoint.host == "::") endpoint.host = "::1";
  http::Response res;
  try {
    res = http::get(endpoint, "/plugins", std::chrono::seconds(5));
  } catch (const std::runtime_error& e) {
    err << "worker: no running worker answered at " << address << " (" << e.what() << ")\n";
    return 1;
  }
  if (res.status != 200) {
    err << "worker: no running worker answered at " << address << " (HTTP " << res.status << ")\n";
    return 1;
  }
  if (json) {
    out << res.body << "\n";
    return 0;
  }
  const auto list = nlohmann::json::parse(res.body);
  char line[512];
  std::snprintf(line, sizeof line, "%-28s %-10s %-14s %-8s %-8s %-10s %-10s %s\n", "PLUGIN", "VERSION",
                "STATE", "PID", "CRASHES", "IN FLIGHT", "RSS", "FILE");
  out << line;
  for (const auto& p : list) {
    const std::string id = p.value("plugin", "");
    const std::string pid = p.value("in_process", false) ? "(worker)" : std::to_string(p.value("pid", 0));
    std::snprintf(line, sizeof line, "%-28s %-10s %-14s %-8s %-8lld %-10lld %-10s %s\n",
                  id.empty() ? "-" : id.c_str(), p.value("version", "").c_str(), p.value("state", "").c_str(),
                  pid.c_str(), static_cast<long long>(p.value("crashes", 0)),
                  static_cast<long long>(p.value("in_flight", 0)),
                  mib(p.value("resident_bytes", uint64_t{0})).c_str(), p.value("file", "").c_str());
    out << line;
    if (const std::string reason = p.value("reason", ""); !reason.empty()) out << "  " << reason << "\n";
  }
  return 0;
}

int check_plugins(const std::vector<std::filesystem::path>& files, bool init, const config::Config& cfg,
                  const log::Logger& logger, std::ostream& out) {
  int code = plugins::print_file_checks(files, out, logger);
  if (!init) return code;
  const auto pool = db::make_pool(db_settings(cfg), logger);
  for (const auto& file : files) {
    runner::RunnerOptions options;
    runner::RunnerHost host(logger, cfg.settings, pool.get(), nullptr, options);
    if (auto refused = host.load_file(file)) {
      out << file.string() << ": init FAILED: " << refused->reason << "\n";
      code = 1;
    } else {
      out << file.string() << ": init OK\n";
    }
  }
  return code;
}

}  // namespace wk::app
