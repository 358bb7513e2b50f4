#pragma once
// The `worker` command line: serve (default), exec, plugins check, enqueue, version.
// Go-style single-dash long flags (`-worker=x -verbose`) are normalised before CLI11 parses.
namespace wk::app {

// Runs the command; returns the process exit code. `envp` is the process environment.
int run_cli(int argc, char** argv, char** envp);

}  // namespace wk::app
