#include "app/limits_command.hpp"

#include <cstdio>
#include <iomanip>

#include <nlohmann/json.hpp>

#include "queue/broker_redis.hpp"

namespace wk::app {

namespace {

std::string seconds_text(std::chrono::milliseconds d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(d.count()) / 1000.0);
  return buf;
}

}  // namespace

int show_limits(const std::vector<task::TypeLimit>& limits, const redis::Settings& redis, bool json,
                std::ostream& out) {
  redis::Connection conn(redis);
  std::vector<queue::FleetLimitState> states;
  states.reserve(limits.size());
  for (const auto& limit : limits) states.push_back(queue::read_fleet_limit_state(conn, limit));
  const auto paused = queue::read_paused_types(conn);

  if (json) {
    nlohmann::json doc = {{"limits", nlohmann::json::array()}, {"paused", nlohmann::json::array()}};
    for (size_t i = 0; i < limits.size(); ++i) {
      const auto& l = limits[i];
      nlohmann::json item = {{"pattern", l.pattern}, {"config", l.text()}};
      if (l.concurrency > 0) item["concurrency"] = l.concurrency;
      if (l.fleet > 0) {
        item["fleet"] = l.fleet;
        item["fleet_in_use"] = states[i].permits_held;
      }
      if (l.rate > 0) {
        item["rate_per_second"] = l.rate;
        item["burst"] = l.effective_burst();
        item["tokens"] =
            states[i].tokens ? nlohmann::json(*states[i].tokens) : nlohmann::json(l.effective_burst());
      }
      doc["limits"].push_back(item);
    }
    for (const auto& [type, left] : paused)
      doc["paused"].push_back({{"task_type", type}, {"ms_left", left.count()}});
    out << doc.dump(2) << "\n";
    return 0;
  }

  if (limits.empty()) {
    out << "No limits configured (WORKER_LIMITS is empty).\n";
  } else {
    out << std::left << std::setw(24) << "LIMIT" << std::setw(14) << "PER WORKER" << std::setw(16)
        << "FLEET IN USE"
        << "RATE\n";
    for (size_t i = 0; i < limits.size(); ++i) {
      const auto& l = limits[i];
      const std::string local = l.concurrency > 0 ? std::to_string(l.concurrency) : "-";
      const std::string fleet =
          l.fleet > 0 ? std::to_string(states[i].permits_held) + " of " + std::to_string(l.fleet) : "-";
      std::string rate = "-";
      if (l.rate > 0) {
        char tokens[32];
        std::snprintf(tokens, sizeof tokens, "%.1f", states[i].tokens.value_or(l.effective_burst()));
        rate = l.rate_text + " (burst " + std::to_string(l.effective_burst()) + ", " + tokens + " ready)";
      }
      out << std::left << std::setw(24) << l.pattern << std::setw(14) << local << std::setw(16) << fleet
          << rate << "\n";
    }
  }
  if (paused.empty()) {
    out << "No task type is paused.\n";
  } else {
    out << "\n"
        << std::left << std::setw(24) << "PAUSED TYPE"
        << "FOR\n";
    for (const auto& [type, left] : paused)
      out << std::left << std::setw(24) << type << seconds_text(left) << "\n";
  }
  return 0;
}

}  // namespace wk::app
