#pragma once
// SIGTERM / SIGINT (stop) and SIGHUP (rescan the plugins) handling without async-signal-safety traps: the
// signals are blocked in every thread (block_stop_signals() runs first thing in main, before any thread
// exists, so all threads inherit the mask) and one watcher thread reads them from a signalfd.
#include <functional>
#include <thread>

namespace wk::app {

// Blocks SIGTERM, SIGINT, SIGHUP (and SIGPIPE, which we never want: writes to a closed socket return
// EPIPE instead) in the calling thread. Call before any other thread is started.
void block_stop_signals();

class StopSignals {
 public:
  // `on_signal(signo, count)` runs on the watcher thread for every SIGTERM/SIGINT, with count 1
  // for the first one, 2 for the second, and so on; and for every SIGHUP, with count 0.
  using Handler = std::function<void(int signo, int count)>;
  explicit StopSignals(Handler on_signal);
  ~StopSignals();  // stops and joins the watcher
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  void watch();
  Handler on_signal_;
  int signal_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: tells the watcher to end
  std::thread watcher_;
};

}  // namespace wk::app
