#include "support/git_repo.hpp"

#include <gtest/gtest.h>

#include <fstream>

#include "support/child_process.hpp"

namespace wk::test {

std::string git(const std::filesystem::path& dir, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"git", "-C", dir.string()};
  argv.insert(argv.end(), args.begin(), args.end());
  const RunResult r =
      run(std::move(argv), inherited_env({{"GIT_TERMINAL_PROMPT", "0"}}), std::chrono::seconds(60));
  EXPECT_TRUE(r.succeeded()) << "git " << args.front() << ": exit " << r.exit_code.value_or(-1) << ": "
                             << r.err;
  return r.out;
}

void make_repo(const std::filesystem::path& path, const std::string& name) {
  std::filesystem::create_directories(path);
  git(path, {"init", "-q", "-b", "main"});
  std::ofstream(path / "README.md") << "# " << name << "\n";
  git(path, {"add", "README.md"});
  git(path,
      {"-c", "user.name=Test", "-c", "user.email=test@example.invalid", "commit", "-q", "-m", "initial"});
}

}  // namespace wk::test
