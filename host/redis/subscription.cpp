#include <hiredis/hiredis.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "redis/redis.hpp"

namespace wk::redis {

namespace {
// A silent subscription is pinged after this long; no answer by the next turn means the peer is
// gone. A closed connection is seen at once; the ping finds one that died without a word (within
// two of these). go-redis pings every 3 s; each ping is a command an idle worker sends, so ours
// are rarer.
constexpr auto kPingAfterSilence = std::chrono::seconds(15);

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using OwnedReply = std::unique_ptr<redisReply, ReplyDeleter>;
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
      conn_.emplace(settings_);  // connect, AUTH: the same path as every other connection
      conn_->command({"SUBSCRIBE", channel_});
    } catch (...) {
      conn_.reset();
      throw;
    }
    last_traffic_ = SteadyClock::now();
    ping_outstanding_ = false;
  }
  redisContext* ctx = conn_->context_;
  const auto until = SteadyClock::now() + timeout;
  while (true) {
    void* raw = nullptr;
    if (redisGetReplyFromReader(ctx, &raw) != REDIS_OK) fail("read");
    if (raw != nullptr) {
      OwnedReply reply(static_cast<redisReply*>(raw));
      last_traffic_ = SteadyClock::now();
      // ["message", channel, payload]; anything else (["pong", ""]) answers our PING.
      if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
          reply->element[0]->type == REDIS_REPLY_STRING &&
          std::string_view(reply->element[0]->str, reply->element[0]->len) == "message") {
        return std::string(reply->element[2]->str, reply->element[2]->len);
      }
      ping_outstanding_ = false;
      continue;
    }
    const auto now = SteadyClock::now();
    if (now - last_traffic_ >= kPingAfterSilence) {
      if (ping_outstanding_) fail("no answer to PING");
      const char* ping = "PING";
      const size_t len = 4;
      if (redisAppendCommandArgv(ctx, 1, &ping, &len) != REDIS_OK) fail("PING");
      int done = 0;
      while (done == 0) {
        if (redisBufferWrite(ctx, &done) != REDIS_OK) fail("PING");
      }
      ping_outstanding_ = true;
      last_traffic_ = now;
    }
    if (now >= until) return std::nullopt;
    const auto wait = std::min(std::chrono::duration_cast<std::chrono::milliseconds>(until - now),
                               std::chrono::milliseconds(kPingAfterSilence));
    pollfd fds[2] = {{ctx->fd, POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    const int rc = ::poll(fds, 2, static_cast<int>(wait.count()) + 1);
    if (rc < 0 && errno != EINTR) fail("poll");
    if (rc > 0 && (fds[1].revents & POLLIN) != 0) {
      uint64_t drained = 0;
      [[maybe_unused]] auto n = ::read(wake_.get(), &drained, sizeof drained);
      return std::nullopt;
    }
    if (rc > 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      if (redisBufferRead(ctx) != REDIS_OK) fail("read");
    }
  }
}

}  // namespace wk::redis
