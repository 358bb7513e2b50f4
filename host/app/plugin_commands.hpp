#pragma once
// `worker plugins` (what a running worker serves, read from its HTTP endpoint) and
// `worker plugins check [--init] FILE...` (would these files load, and start?).
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "log/log.hpp"

namespace wk::app {

// GETs /plugins from the worker at `address` (host:port; a wildcard host means this machine)
// and prints a table, or the JSON as it came with `json`. Returns the exit code.
int show_plugins(const std::string& address, bool json, std::ostream& out, std::ostream& err);

// The load checks of every file, and with `init`, init() in a throw-away runner process (with
// the configured database, for plugins that migrate at init). Returns 0 when all would serve.
int check_plugins(const std::vector<std::filesystem::path>& files, bool init, const config::Config& cfg,
                  const log::Logger& logger, std::ostream& out);

}  // namespace wk::app
