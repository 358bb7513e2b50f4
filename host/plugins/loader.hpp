#pragma once
// Internal: turning a plugin file into validated, copied descriptors, without running init().
// Order (docs/plugin-loading.md): permissions -> read + sha256 -> private staged copy ->
// preflight (entry symbol present, no plugin code runs) -> dlopen (RTLD_NOW | RTLD_LOCAL) ->
// unlink the copy -> entry getter -> validation -> copy of every string and pointer.
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "plugins/plugins.hpp"
#include "wk_abi.h"

namespace wk::plugins::detail {

// Thrown with the one-sentence reason a file is refused.
class Refused : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// nullopt when acceptable; otherwise why not (writable by group/others, foreign owner, ...).
std::optional<std::string> unsafe_permissions(const std::filesystem::path& path, bool is_directory);

// The SHA-256 of a plugin file's bytes as load_plugin_file reads them. Throws Refused.
std::string file_sha256(const std::filesystem::path& file);

// The *.so files of a plugin directory, sorted by name. Throws std::runtime_error when the
// directory itself is unusable (missing, not a directory, writable by group/others).
std::vector<std::filesystem::path> plugin_files(const std::filesystem::path& dir);

// A private 0700 directory created with mkdtemp under `base` (empty: $XDG_RUNTIME_DIR, else
// /tmp); removed with its content on destruction.
class StagingDir {
 public:
  StagingDir(const std::filesystem::path& base, bool remove_at_exit);
  ~StagingDir();
  StagingDir(const StagingDir&) = delete;
  StagingDir& operator=(const StagingDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  bool remove_;
};

struct LoadedHandler {
  HandlerInfo info;
  decltype(wk_handler_desc::run) run = nullptr;
  decltype(wk_handler_desc::on_cancel) on_cancel = nullptr;
};

struct LoadedLibrary {
  PluginInfo info;
  decltype(wk_plugin_entry::init) init = nullptr;
  decltype(wk_plugin_entry::shutdown) shutdown = nullptr;
  std::vector<LoadedHandler> handlers;
};

// Loads and validates `file`; the library stays mapped until process exit whatever happens
// after dlopen (retired, never dlclose'd). Throws Refused.
LoadedLibrary load_plugin_file(const std::filesystem::path& file, const StagingDir& staging);

// True when `type` matches [A-Za-z0-9:._-]{1,128}.
bool valid_task_type(std::string_view type);

}  // namespace wk::plugins::detail
