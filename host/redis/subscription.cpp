#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "redis/redis.hpp"
#include "redis/transport.hpp"

namespace wk::redis {

namespace {
// A silent subscription is pinged after this long; no answer by the next turn means the peer is
// gone. A closed connection is seen at once; the ping finds one that died without a word (within
// two of these). go-redis pings every 3 s; each ping is a command an idle worker sends, so ours
// are rarer.
constexpr auto kPingAfterSilence = std::chrono::seconds(15);
}  // namespace

Subscription::Subscription(Settings settings, std::string channel)
    : settings_(std::move(settings)),
      channel_(std::move(channel)),
      wake_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (!wake_.valid()) throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
}

Subscription::~Subscription() = default;

void Subscription::fail(const char* during) {
  ping_outstanding_ = false;
  conn_->fail_io(during);  // marks it broken: the next call connects and subscribes again
}

void Subscription::interrupt() noexcept {
  const uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_.get(), &one, sizeof one);
}

std::optional<std::string> Subscription::next(std::chrono::milliseconds timeout) {
  using SteadyClock = std::chrono::steady_clock;
  if (!conn_ || conn_->broken()) {
    try {
      // Connect, AUTH: the same path as every other connection. In a cluster, any node: messages
      // published on one reach the subscribers of every node.
      conn_.emplace(settings_.cluster ? settings_.cluster->node_settings(settings_.cluster->masters().front())
                                      : settings_);
      conn_->command({"SUBSCRIBE", channel_});
    } catch (...) {
      conn_.reset();
      throw;
    }
    last_traffic_ = SteadyClock::now();
    ping_outstanding_ = false;
  }
  const auto until = SteadyClock::now() + timeout;
  while (true) {
    if (std::optional<Reply> reply = conn_->parsed_reply()) {
      last_traffic_ = SteadyClock::now();
      // ["message", channel, payload]; anything else (["pong", ""]) answers our PING.
      if (reply->is_array() && reply->size() == 3 && (*reply)[0].is_string() &&
          (*reply)[0].str() == "message") {
        return std::string((*reply)[2].str());
      }
      ping_outstanding_ = false;
      continue;
    }
    // TLS may hold decrypted bytes that poll(2) cannot see.
    if (conn_->transport_->has_buffered()) {
      read_more();
      continue;
    }
    const auto now = SteadyClock::now();
    if (now - last_traffic_ >= kPingAfterSilence) {
      if (ping_outstanding_) fail("no answer to PING");
      try {
        conn_->append({"PING"});
        conn_->flush();
      } catch (const Error&) {
        ping_outstanding_ = false;
        throw;
      }
      ping_outstanding_ = true;
      last_traffic_ = now;
    }
    if (now >= until) return std::nullopt;
    const auto wait = std::min(std::chrono::duration_cast<std::chrono::milliseconds>(until - now),
                               std::chrono::milliseconds(kPingAfterSilence));
    pollfd fds[2] = {{conn_->transport_->fd(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    const int rc = ::poll(fds, 2, static_cast<int>(wait.count()) + 1);
    if (rc < 0 && errno != EINTR) fail("poll");
    if (rc > 0 && (fds[1].revents & POLLIN) != 0) {
      uint64_t drained = 0;
      [[maybe_unused]] auto n = ::read(wake_.get(), &drained, sizeof drained);
      return std::nullopt;
    }
    if (rc > 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) read_more();
  }
}

void Subscription::read_more() {
  try {
    conn_->read_more();
  } catch (const Error&) {
    ping_outstanding_ = false;
    throw;
  }
}

}  // namespace wk::redis
