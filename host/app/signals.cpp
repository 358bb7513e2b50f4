#include "app/signals.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace wk::app {

namespace {

sigset_t stop_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  return set;
}

[[noreturn]] void fail(const char* what) {
  throw std::runtime_error(std::string(what) + ": " + std::strerror(errno));
}

}  // namespace

void block_stop_signals() {
  sigset_t set = stop_set();
  sigaddset(&set, SIGPIPE);
  if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) fail("pthread_sigmask");
}

StopSignals::StopSignals(Handler on_signal) : on_signal_(std::move(on_signal)) {
  const sigset_t set = stop_set();
  signal_fd_ = signalfd(-1, &set, SFD_CLOEXEC);
  if (signal_fd_ < 0) fail("signalfd");
  wake_fd_ = eventfd(0, EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    close(signal_fd_);
    fail("eventfd");
  }
  watcher_ = std::thread([this] { watch(); });
}

StopSignals::~StopSignals() {
  const uint64_t one = 1;
  // A failed write would only mean the watcher is already gone.
  [[maybe_unused]] const auto n = write(wake_fd_, &one, sizeof one);
  if (watcher_.joinable()) watcher_.join();
  close(wake_fd_);
  close(signal_fd_);
}

void StopSignals::watch() {
  int count = 0;
  pollfd fds[2] = {{signal_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  while (true) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if ((fds[1].revents & POLLIN) != 0) return;
    if ((fds[0].revents & POLLIN) != 0) {
      signalfd_siginfo info{};
      if (read(signal_fd_, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
        const int signo = static_cast<int>(info.ssi_signo);
        on_signal_(signo, signo == SIGHUP ? 0 : ++count);
      }
    }
  }
}

}  // namespace wk::app
