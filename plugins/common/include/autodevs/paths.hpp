#pragma once
// Keeping paths under their base directory: the worktree base for worktree:create/remove, and a
// task's worktree for the changes a step commits.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace autodevs {

// `path` is `base` or below it, compared lexically: both must already be canonical (symlinks
// resolved), or a link inside `base` could still lead out of it.
bool is_within(const std::filesystem::path& base, const std::filesystem::path& path);

// The first of `relative_paths` (relative to `root`, as git lists them) that is a symbolic link
// resolving outside `root`, or that cannot be resolved at all (a loop), as "path -> target";
// std::nullopt when every link stays inside. Regular files and missing paths are skipped.
std::optional<std::string> find_escaping_symlink(const std::filesystem::path& root,
                                                 const std::vector<std::string>& relative_paths);

}  // namespace autodevs
