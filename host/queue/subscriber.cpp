#include "queue/subscriber.hpp"

#include <hiredis/hiredis.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace wk::queue {

namespace {
constexpr const char* kChannel = "asynq:cancel";
constexpr auto kPingAfterSilence = std::chrono::seconds(3);  // go-redis pings its pub/sub every 3 s

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using OwnedReply = std::unique_ptr<redisReply, ReplyDeleter>;
}  // namespace

RedisCancelSource::RedisCancelSource(redis::Settings settings) : settings_(std::move(settings)) {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
}

RedisCancelSource::~RedisCancelSource() {
  disconnect();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void RedisCancelSource::disconnect() {
  if (ctx_ != nullptr) redisFree(ctx_);
  ctx_ = nullptr;
  ping_outstanding_ = false;
}

void RedisCancelSource::fail(const std::string& what) {
  const std::string text = ctx_ != nullptr && ctx_->err != 0 ? what + ": " + ctx_->errstr : what;
  disconnect();
  throw redis::Error(redis::Error::Kind::connection, "cancel subscription: " + text);
}

void RedisCancelSource::connect() {
  const auto ms = settings_.connect_timeout.count();
  timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
  ctx_ = redisConnectWithTimeout(settings_.host.c_str(), settings_.port, tv);
  if (ctx_ == nullptr)
    throw redis::Error(redis::Error::Kind::connection, "cancel subscription: out of memory");
  if (ctx_->err != 0) fail("connect to " + settings_.address());
  redisSetTimeout(ctx_, tv);
  auto run = [&](std::vector<std::string> argv) {
    std::vector<const char*> args;
    std::vector<size_t> lens;
    for (const auto& a : argv) {
      args.push_back(a.data());
      lens.push_back(a.size());
    }
    OwnedReply reply(static_cast<redisReply*>(
        redisCommandArgv(ctx_, static_cast<int>(args.size()), args.data(), lens.data())));
    if (!reply) fail(argv[0]);
    if (reply->type == REDIS_REPLY_ERROR) {
      // AUTH errors must not echo the password; Redis' own text does not contain it.
      const std::string text(reply->str, reply->len);
      disconnect();
      throw redis::Error(redis::Error::Kind::reply, "cancel subscription: " + argv[0] + ": " + text);
    }
  };
  if (!settings_.password.empty()) {
    if (settings_.username.empty()) {
      run({"AUTH", settings_.password});
    } else {
      run({"AUTH", settings_.username, settings_.password});
    }
  }
  run({"SUBSCRIBE", kChannel});
  last_traffic_ = SteadyClock::now();
}

void RedisCancelSource::interrupt() {
  const uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

std::optional<std::string> RedisCancelSource::next(std::chrono::milliseconds timeout) {
  if (ctx_ == nullptr) connect();
  const auto until = SteadyClock::now() + timeout;
  while (true) {
    void* raw = nullptr;
    if (redisGetReplyFromReader(ctx_, &raw) != REDIS_OK) fail("read");
    if (raw != nullptr) {
      OwnedReply reply(static_cast<redisReply*>(raw));
      last_traffic_ = SteadyClock::now();
      // ["message", channel, payload]; ["pong", ""] answers our PING.
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
      if (redisAppendCommandArgv(ctx_, 1, &ping, &len) != REDIS_OK) fail("PING");
      int done = 0;
      while (done == 0) {
        if (redisBufferWrite(ctx_, &done) != REDIS_OK) fail("PING");
      }
      ping_outstanding_ = true;
      last_traffic_ = now;
    }
    if (now >= until) return std::nullopt;
    const auto wait = std::min(std::chrono::duration_cast<std::chrono::milliseconds>(until - now),
                               std::chrono::milliseconds(kPingAfterSilence));
    pollfd fds[2] = {{ctx_->fd, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    const int rc = ::poll(fds, 2, static_cast<int>(wait.count()) + 1);
    if (rc < 0 && errno != EINTR) fail(std::string("poll: ") + std::strerror(errno));
    if (rc > 0 && (fds[1].revents & POLLIN) != 0) {
      uint64_t drained = 0;
      [[maybe_unused]] auto n = ::read(wake_fd_, &drained, sizeof drained);
      return std::nullopt;
    }
    if (rc > 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      if (redisBufferRead(ctx_) != REDIS_OK) fail("read");
    }
  }
}

Subscriber::Subscriber(EngineContext& ctx, std::unique_ptr<CancelSource> source)
    : ctx_(ctx), source_(std::move(source)) {}

Subscriber::~Subscriber() { stop(); }

void Subscriber::start() {
  if (!source_) return;
  last_tick_ = SteadyClock::now().time_since_epoch().count();
  thread_ = std::thread([this] { run(); });
}

void Subscriber::stop() {
  stopping_ = true;
  cv_.notify_all();
  if (source_) source_->interrupt();
  if (thread_.joinable()) thread_.join();
}

bool Subscriber::healthy() const {
  if (!thread_.joinable()) return true;
  const auto last = SteadyClock::time_point(SteadyClock::duration(last_tick_.load()));
  return SteadyClock::now() - last <= 3 * ctx_.settings.resubscribe_delay + std::chrono::seconds(10);
}

void Subscriber::run() {
  const auto max_backoff = std::max(std::chrono::milliseconds(1), ctx_.settings.resubscribe_delay);
  std::chrono::milliseconds backoff{0};
  bool broken = false;
  while (!stopping_) {
    last_tick_ = SteadyClock::now().time_since_epoch().count();
    try {
      auto id = source_->next(std::chrono::seconds(1));
      if (broken) {
        ctx_.log.info("Cancellation channel subscribed again");
        broken = false;
      }
      backoff = std::chrono::milliseconds(0);
      if (!id) continue;
      if (auto t = ctx_.inflight.find(*id)) {
        ctx_.task_log(t->task).info("Cancel requested");
        t->cancellation.cancel(task::CancelReason::requested);
      }
    } catch (const std::exception& e) {
      if (!broken) ctx_.log.warn("Cancellation channel lost; resubscribing", {{"error", e.what()}});
      broken = true;
      backoff = std::min(max_backoff, std::max(max_backoff / 32, backoff * 2));
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, backoff, [&] { return stopping_.load(); });
    }
  }
}

}  // namespace wk::queue
