#include "task/task.hpp"

#include <algorithm>
#include <random>

namespace wk::task {

bool Cancellation::cancel(CancelReason reason) {
  if (reason == CancelReason::none) return false;
  std::vector<std::pair<Token, Callback>> to_run;
  {
    std::lock_guard lock(mu_);
    int32_t expected = 0;
    if (!reason_.compare_exchange_strong(expected, static_cast<int32_t>(reason), std::memory_order_acq_rel)) {
      return false;
    }
    to_run.swap(callbacks_);
  }
  cv_.notify_all();
  for (auto& [token, cb] : to_run) cb(reason);
  return true;
}

CancelReason Cancellation::wait_for(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return reason_.load(std::memory_order_acquire) != 0; });
  return reason();
}

Cancellation::Token Cancellation::on_cancel(Callback cb) {
  {
    std::lock_guard lock(mu_);
    if (reason_.load(std::memory_order_acquire) == 0) {
      const Token t = next_token_++;
      callbacks_.emplace_back(t, std::move(cb));
      return t;
    }
  }
  cb(reason());
  return 0;
}

void Cancellation::remove(Token token) {
  std::lock_guard lock(mu_);
  callbacks_.erase(
      std::remove_if(callbacks_.begin(), callbacks_.end(), [&](const auto& p) { return p.first == token; }),
      callbacks_.end());
}

Outcome unhandled_type(std::string_view type) {
  return {Disposition::requeue,
          "no plugin on this worker serves task type \"" + std::string(type) + "\"",
          {},
          {}};
}

std::string new_uuid() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  uint64_t hi = rng();
  uint64_t lo = rng();
  hi = (hi & 0xFFFFFFFFFFFF0FFFULL) | 0x0000000000004000ULL;  // version 4
  lo = (lo & 0x3FFFFFFFFFFFFFFFULL) | 0x8000000000000000ULL;  // variant 10
  char buf[37];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(hi >> 32),
                static_cast<unsigned>((hi >> 16) & 0xFFFF), static_cast<unsigned>(hi & 0xFFFF),
                static_cast<unsigned>(lo >> 48), static_cast<unsigned long long>(lo & 0xFFFFFFFFFFFFULL));
  return buf;
}

std::string host_queue(std::string_view host_id) {
  return std::string(kHostQueuePrefix) + std::string(host_id);
}

std::string_view host_of_queue(std::string_view queue) {
  if (queue.size() <= kHostQueuePrefix.size() || queue.substr(0, kHostQueuePrefix.size()) != kHostQueuePrefix)
    return {};
  return queue.substr(kHostQueuePrefix.size());
}

}  // namespace wk::task
