// The `worker` executable. Everything happens in run_cli (host/app/cli.cpp), except in a plugin
// runner: the worker starts itself as `worker --plugin-runner CHANNEL_FD CRASH_FD WORKER_PID FILE`
// (docs/plugin-isolation.md), which must not parse flags, read settings or touch Redis.
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "app/cli.hpp"
#include "runner/runner.hpp"

int main(int argc, char** argv) {
  if (argc >= 5 && std::strcmp(argv[1], "--plugin-runner") == 0) {
    return wk::runner::run_plugin_runner(std::atoi(argv[2]), std::atoi(argv[3]),
                                         static_cast<pid_t>(std::atol(argv[4])));
  }
  return wk::app::run_cli(argc, argv, environ);
}
