#pragma once
// A child process for CLI tests: argv only (no shell), its own environment, stdout and stderr on
// pipes read as they arrive so a test can await a line and then signal the child.
#include <chrono>
#include <string>
#include <vector>

namespace wk::test {

class Subprocess {
 public:
  Subprocess(const std::vector<std::string>& argv, const std::vector<std::string>& env);
  ~Subprocess();  // kills (SIGKILL) and reaps the child if still running
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  // Reads what is available on both pipes, waiting up to `timeout` for something to arrive.
  void pump(std::chrono::milliseconds timeout);
  // Pumps until stderr contains `needle` or `timeout` passes.
  bool await_stderr(const std::string& needle, std::chrono::milliseconds timeout);
  void signal(int signo);
  // Pumps until the child exits (or `timeout`: then returns -1); returns the exit status, or
  // 128 + signal when killed.
  int wait(std::chrono::milliseconds timeout);

  const std::string& out() const { return out_; }
  const std::string& err() const { return err_; }

 private:
  int pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  int status_ = -1;
  std::string out_;
  std::string err_;
};

// The environment of this process plus `extra` ("KEY=VALUE"), minus anything starting with one
// of the worker's prefixes so the developer's settings do not leak into a test.
std::vector<std::string> clean_env(const std::vector<std::string>& extra);

}  // namespace wk::test
