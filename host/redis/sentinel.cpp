#include <charconv>

#include "redis/redis.hpp"

namespace wk::redis {

namespace {
// A watcher that lost its sentinel tries the next one after this long (all of them down: one
// attempt per sentinel per period, not a busy loop).
constexpr auto kWatchRetry = std::chrono::seconds(1);
}  // namespace

Sentinel::Sentinel(Options options) : options_(std::move(options)) {
  if (options_.sentinels.empty()) throw Error(Error::Kind::setting, "REDIS_SENTINELS: no sentinel given");
}

Settings Sentinel::sentinel_settings(size_t i) const {
  const Address& a = options_.sentinels.at(i % options_.sentinels.size());
  Settings s = options_.connection;
  s.host = a.host;
  s.port = a.port;
  return s;
}

Address Sentinel::master() {
  size_t first = 0;
  {
    std::lock_guard lock(mu_);
    first = preferred_;
  }
  std::string problems;
  const size_t n = options_.sentinels.size();
  for (size_t k = 0; k < n; ++k) {
    const size_t i = (first + k) % n;
    const Settings s = sentinel_settings(i);
    try {
      Connection conn(s);
      Reply reply = conn.command({"SENTINEL", "get-master-addr-by-name", options_.master_name});
      if (reply.is_nil() || reply.size() != 2) {
        problems += "; " + s.address() + " does not know a master named " + options_.master_name;
        continue;
      }
      Address master{std::string(reply[0].str()), 0};
      const std::string_view port = reply[1].str();
      const auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), master.port);
      if (ec != std::errc() || ptr != port.data() + port.size()) {
        problems += "; " + s.address() + " answered a bad port";
        continue;
      }
      std::lock_guard lock(mu_);
      preferred_ = i;
      return master;
    } catch (const Error& e) {
      problems += std::string("; ") + e.what();
    }
  }
  throw Error(Error::Kind::connection,
              "no sentinel gave the address of master " + options_.master_name + problems);
}

SentinelWatch::SentinelWatch(std::shared_ptr<Sentinel> sentinel,
                             std::function<void(const std::string&)> on_switch)
    : sentinel_(std::move(sentinel)), on_switch_(std::move(on_switch)), thread_([this] { run(); }) {}

SentinelWatch::~SentinelWatch() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    if (current_ != nullptr) current_->interrupt();
  }
  cv_.notify_all();
  thread_.join();
}

void SentinelWatch::run() {
  const std::string prefix = sentinel_->options().master_name + " ";
  for (size_t i = 0; !stop_; ++i) {
    Subscription subscription(sentinel_->sentinel_settings(i), "+switch-master");
    {
      std::lock_guard lock(mu_);
      if (stop_) return;
      current_ = &subscription;
    }
    try {
      while (!stop_) {
        // Long waits: interrupt() ends them at shutdown; the subscription pings a silent sentinel.
        const auto message = subscription.next(std::chrono::seconds(60));
        if (message && message->starts_with(prefix)) {
          sentinel_->master_switched();
          on_switch_(*message);
        }
      }
    } catch (const Error&) {
      // This sentinel is gone: the next one, after a pause.
    }
    std::unique_lock lock(mu_);
    current_ = nullptr;
    cv_.wait_for(lock, kWatchRetry, [this] { return stop_.load(); });
  }
}

}  // namespace wk::redis
