#pragma once
// git for tests: run a command in a repository (argv, no prompts) and make a one-commit repository.
#include <filesystem>
#include <string>
#include <vector>

namespace wk::test {

// `git -C dir args...`; fails the test when git fails. Returns stdout as git wrote it.
std::string git(const std::filesystem::path& dir, const std::vector<std::string>& args);

// A repository at `path` on branch main with one commit holding README.md.
void make_repo(const std::filesystem::path& path, const std::string& name);

}  // namespace wk::test
