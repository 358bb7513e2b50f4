#include "autodevs/git.hpp"

#include <sstream>

namespace autodevs {
namespace {

std::string tail(const std::string& text, std::size_t max_chars) {
  if (text.size() <= max_chars) return text;
  return "..." + text.substr(text.size() - max_chars);
}

std::string join_argv(const std::vector<std::string>& argv) {
  std::string joined;
  for (const auto& arg : argv) {
    if (!joined.empty()) joined.push_back(' ');
    joined += arg;
  }
  return joined;
}

}  // namespace

SubprocessResult Git::run(const std::filesystem::path& dir, const std::vector<std::string>& args,
                          const std::string& stdin_data) const {
  return run_command(dir, args, stdin_data, false);
}

SubprocessResult Git::run_command(const std::filesystem::path& dir, const std::vector<std::string>& args,
                                  const std::string& stdin_data, bool probe) const {
  SubprocessOptions process;
  process.argv.reserve(args.size() + 3);
  process.argv.push_back(options_.program);
  process.argv.emplace_back("-C");
  process.argv.push_back(dir.string());
  process.argv.insert(process.argv.end(), args.begin(), args.end());
  process.env_additions = {{"GIT_TERMINAL_PROMPT", "0"}, {"LC_ALL", "C"}, {"GIT_PAGER", "cat"}};
  process.env_additions.insert(process.env_additions.end(), options_.env_additions.begin(),
                               options_.env_additions.end());
  process.stdin_data = stdin_data;
  process.timeout = options_.timeout;
  process.cancel_requested = options_.cancel_requested;
  process.max_output_bytes = 4 << 20;
  SubprocessResult result = run_subprocess(process);
  if (options_.observer) options_.observer(process.argv, result, probe);
  return result;
}

std::string Git::run_checked(const std::filesystem::path& dir, const std::vector<std::string>& args,
                             const std::string& stdin_data) const {
  SubprocessResult result = run(dir, args, stdin_data);
  if (!result.succeeded()) {
    std::vector<std::string> shown{"git", "-C", dir.string()};
    shown.insert(shown.end(), args.begin(), args.end());
    std::string message = join_argv(shown) + ": " + result.describe();
    const std::string err = tail(result.stderr_text, 600);
    if (!err.empty()) message += ": " + err;
    while (!message.empty() && message.back() == '\n') message.pop_back();
    throw GitError(message, std::move(result));
  }
  return std::move(result.stdout_text);
}

bool Git::is_repository(const std::filesystem::path& dir) const {
  return run_command(dir, {"rev-parse", "--git-dir"}, {}, true).succeeded();
}

std::optional<std::string> Git::resolve_commit(const std::filesystem::path& dir,
                                               const std::string& ref) const {
  SubprocessResult result =
      run_command(dir, {"rev-parse", "--verify", "--quiet", "--end-of-options", ref + "^{commit}"}, {}, true);
  if (!result.succeeded()) return std::nullopt;
  std::string sha = result.stdout_text;
  while (!sha.empty() && (sha.back() == '\n' || sha.back() == '\r')) sha.pop_back();
  if (sha.empty()) return std::nullopt;
  return sha;
}

std::vector<WorktreeEntry> parse_worktree_list(const std::string& porcelain) {
  std::vector<WorktreeEntry> entries;
  // With -z every line ends in NUL and paths are raw (a path may hold a newline); without it,
  // lines end in newlines.
  const char separator = porcelain.find('\0') != std::string::npos ? '\0' : '\n';
  std::istringstream lines(porcelain);
  std::string line;
  while (std::getline(lines, line, separator)) {
    if (line.rfind("worktree ", 0) == 0) {
      entries.push_back({});
      entries.back().path = line.substr(9);
    } else if (entries.empty()) {
      continue;
    } else if (line.rfind("HEAD ", 0) == 0) {
      entries.back().head = line.substr(5);
    } else if (line.rfind("branch ", 0) == 0) {
      entries.back().branch = line.substr(7);
    } else if (line == "bare") {
      entries.back().bare = true;
    } else if (line.rfind("prunable", 0) == 0) {
      entries.back().prunable = true;
    }
  }
  return entries;
}

bool is_safe_ref_name(const std::string& ref) noexcept {
  if (ref.empty() || ref.size() > 255 || ref.front() == '-') return false;
  for (char c : ref) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == ' ' || c == ':' || c == '?' || c == '*' || c == '[' || c == '\\') {
      return false;
    }
  }
  return ref.find("..") == std::string::npos && ref.find("@{") == std::string::npos;
}

}  // namespace autodevs
