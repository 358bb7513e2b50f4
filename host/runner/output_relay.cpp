#include "runner/output_relay.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace wk::runner {

namespace {
// A line longer than this is cut into pieces of this size: one log line each.
constexpr size_t kMaxLine = 16 * size_t{1024};
// Reads of one pipe per turn of the loop: a runner that writes without pause must not keep the
// relay from the others, whose pipes would fill and block their writes (and so their tasks).
constexpr int kReadsPerTurn = 4;
}  // namespace

struct OutputRelay::Source {
  posix::UniqueFd pipe;
  log::Logger logger;
  log::Level level;
  std::string stream;
  std::string partial;

  void emit(std::string_view line) const {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    logger.log(level, line, {{"stream", stream}});
  }
  // Reads some of what is there; false once the pipe is closed (or broken) and everything was
  // relayed.
  bool pump() {
    char buffer[8192];
    for (int turn = 0; turn < kReadsPerTurn; ++turn) {
      const ssize_t n = ::read(pipe.get(), buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      if (n <= 0) {
        if (!partial.empty()) emit(partial);
        partial.clear();
        return false;
      }
      partial.append(buffer, static_cast<size_t>(n));
      size_t start = 0;
      for (size_t nl; (nl = partial.find('\n', start)) != std::string::npos; start = nl + 1)
        emit(std::string_view(partial).substr(start, nl - start));
      partial.erase(0, start);
      while (partial.size() >= kMaxLine) {
        // Never through a UTF-8 character: if the last one before the cut does not end there,
        // it goes whole to the next piece (both pieces stay valid text for the log).
        size_t cut = kMaxLine;
        size_t lead = cut - 1;
        while (lead > 0 && cut - lead < 4 && (static_cast<unsigned char>(partial[lead]) & 0xC0U) == 0x80U)
          --lead;
        const auto first = static_cast<unsigned char>(partial[lead]);
        const size_t length = first >= 0xF0U ? 4 : first >= 0xE0U ? 3 : first >= 0xC0U ? 2 : 1;
        if (lead + length > cut && lead > 0) cut = lead;
        emit(std::string_view(partial).substr(0, cut));
        partial.erase(0, cut);
      }
    }
    return true;  // maybe more: the next turn reads it
  }
};

OutputRelay::OutputRelay() : wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!wake_.valid()) throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
  thread_ = std::thread([this] { run(); });
}

OutputRelay::~OutputRelay() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  const uint64_t one = 1;
  (void)::write(wake_.get(), &one, sizeof one);
  thread_.join();
}

void OutputRelay::add(posix::UniqueFd pipe, log::Logger logger, log::Level level, std::string stream) {
  ::fcntl(pipe.get(), F_SETFL, ::fcntl(pipe.get(), F_GETFL) | O_NONBLOCK);
  auto source =
      std::make_unique<Source>(Source{std::move(pipe), std::move(logger), level, std::move(stream), {}});
  {
    std::lock_guard lock(mu_);
    added_.push_back(std::move(source));
  }
  const uint64_t one = 1;
  (void)::write(wake_.get(), &one, sizeof one);
}

void OutputRelay::run() {
  std::vector<std::unique_ptr<Source>> sources;
  std::vector<pollfd> polled;
  while (true) {
    bool stopping = false;
    {
      std::lock_guard lock(mu_);
      for (auto& s : added_) sources.push_back(std::move(s));
      added_.clear();
      stopping = stopping_;
    }
    if (stopping) {
      // Runners are gone by now: one more turn each for what they wrote last (bounded, in case
      // something they started keeps writing), then the partial lines.
      for (auto& s : sources) s->pump();
      for (auto& s : sources) {
        if (!s->partial.empty()) s->emit(s->partial);
      }
      return;
    }
    polled.assign(1, {wake_.get(), POLLIN, 0});
    for (const auto& s : sources) polled.push_back({s->pipe.get(), POLLIN, 0});
    if (::poll(polled.data(), polled.size(), -1) < 0 && errno != EINTR) return;
    if (polled[0].revents != 0) {
      uint64_t count = 0;
      (void)::read(wake_.get(), &count, sizeof count);
    }
    for (size_t i = 0; i < sources.size(); ++i) {
      if (polled[i + 1].revents != 0 && !sources[i]->pump()) sources[i].reset();
    }
    std::erase_if(sources, [](const auto& s) { return !s; });
  }
}

}  // namespace wk::runner
