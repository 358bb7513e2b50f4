#include "autodevs/paths.hpp"

#include <system_error>

namespace autodevs {

namespace fs = std::filesystem;

bool is_within(const fs::path& base, const fs::path& path) {
  const fs::path relative = path.lexically_relative(base);
  if (relative.empty()) return false;
  const auto first = *relative.begin();
  return first != ".." && !relative.is_absolute();
}

std::optional<std::string> find_escaping_symlink(const fs::path& root,
                                                 const std::vector<std::string>& relative_paths) {
  std::error_code ec;
  const fs::path canonical_root = fs::canonical(root, ec);
  if (ec) return root.string().append(" -> (unresolvable: ").append(ec.message()).append(")");
  for (const std::string& relative : relative_paths) {
    const fs::path link = canonical_root / relative;
    if (!fs::is_symlink(fs::symlink_status(link, ec))) continue;
    const fs::path target = fs::read_symlink(link, ec);
    const std::string shown = target.empty() ? std::string("?") : target.string();
    // weakly_canonical follows the whole chain (links to links, links in parent directories);
    // a loop is an error, and is refused like an escape.
    const fs::path resolved = fs::weakly_canonical(link, ec);
    if (ec || !is_within(canonical_root, resolved)) return std::string(relative).append(" -> ").append(shown);
  }
  return std::nullopt;
}

}  // namespace autodevs
