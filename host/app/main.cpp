// The `worker` executable. Everything happens in run_cli (host/app/cli.cpp), except in a plugin
// runner: the worker starts itself as `worker --plugin-runner CHANNEL_FD CRASH_FD WORKER_PID FILE`
// (docs/plugin-isolation.md), which must not parse flags, read settings or touch Redis.
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "app/cli.hpp"
#include "runner/runner.hpp"

namespace {

// GnuTLS (loaded for libpq through libldap; the worker never uses it) initialises itself from a
// library constructor, before main, unless GNUTLS_NO_IMPLICIT_INIT is set: 0.6 MB of RSS in the
// worker and again in every plugin runner (docs/queue-engine.md, "Memory"). So the worker sets it
// and starts itself again, once: same pid, same arguments, same open files. Code that does use
// GnuTLS (OpenLDAP, a libcurl built on GnuTLS) calls gnutls_global_init() itself. The variable is
// removed again after the restart, so the programs the worker and its plugins start (git, an
// agent CLI) get the environment they would have had.
void skip_gnutls_implicit_init(char** argv) {
  constexpr const char* kMarker = "WK_GNUTLS_IMPLICIT_INIT_SKIPPED";
  if (std::getenv(kMarker) != nullptr) {  // the restarted worker: clean up after ourselves
    ::unsetenv(kMarker);
    ::unsetenv("GNUTLS_NO_IMPLICIT_INIT");
    return;
  }
  if (std::getenv("GNUTLS_NO_IMPLICIT_INIT") != nullptr) return;  // the operator's own choice
  if (::setenv("GNUTLS_NO_IMPLICIT_INIT", "1", 1) != 0 || ::setenv(kMarker, "1", 1) != 0) return;
  ::execv("/proc/self/exe", argv);  // returns only on failure: carry on as we are
  ::unsetenv(kMarker);
  ::unsetenv("GNUTLS_NO_IMPLICIT_INIT");
}

}  // namespace

int main(int argc, char** argv) {
  skip_gnutls_implicit_init(argv);
  if (argc >= 5 && std::strcmp(argv[1], "--plugin-runner") == 0) {
    return wk::runner::run_plugin_runner(std::atoi(argv[2]), std::atoi(argv[3]),
                                         static_cast<pid_t>(std::atol(argv[4])));
  }
  return wk::app::run_cli(argc, argv, environ);
}
