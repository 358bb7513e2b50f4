#include "queue/queue_order.hpp"

#include <algorithm>
#include <numeric>
#include <set>
#include <stdexcept>

namespace wk::queue {

QueueOrder::QueueOrder(std::vector<QueueWeight> queues, bool strict, std::string first)
    : queues_(std::move(queues)), first_(std::move(first)), strict_(strict) {
  if (queues_.empty()) throw std::invalid_argument("queue list is empty");
  std::set<std::string> seen;
  if (!first_.empty()) {
    seen.insert(first_);
    names_.push_back(first_);
    strict_order_.push_back(first_);
  }
  int divisor = 0;
  for (const auto& q : queues_) {
    if (q.name.empty() || q.name.find_first_not_of(" \t") == std::string::npos) {
      throw std::invalid_argument("queue name is blank");
    }
    if (q.priority <= 0) throw std::invalid_argument("queue \"" + q.name + "\": priority must be > 0");
    if (!seen.insert(q.name).second) throw std::invalid_argument("queue \"" + q.name + "\" listed twice");
    divisor = std::gcd(divisor, q.priority);
    names_.push_back(q.name);
  }
  std::vector<std::size_t> by_priority(queues_.size());
  std::iota(by_priority.begin(), by_priority.end(), 0);
  std::stable_sort(by_priority.begin(), by_priority.end(),
                   [&](std::size_t a, std::size_t b) { return queues_[a].priority > queues_[b].priority; });
  for (auto i : by_priority) strict_order_.push_back(queues_[i].name);
  for (std::size_t i = 0; i < queues_.size(); ++i) {
    for (int k = 0; k < queues_[i].priority / divisor; ++k) expanded_.push_back(i);
  }
}

void QueueOrder::next(std::mt19937_64& rng, std::vector<std::string>& out) const {
  if (queues_.size() == 1 || strict_) {
    out = strict_order_;  // copy-assignment reuses the elements' buffers
    return;
  }
  out = next(rng);
}

std::vector<std::string> QueueOrder::next(std::mt19937_64& rng) const {
  if (queues_.size() == 1 || strict_) return strict_order_;  // `first` leads it already
  // Fisher-Yates over a copy of the expanded list; only as far as needed to have seen every
  // queue once, which keeps the distribution of the full shuffle (a prefix of a uniform shuffle
  // is a uniform partial shuffle).
  std::vector<std::size_t> pool = expanded_;
  std::vector<bool> taken(queues_.size(), false);
  std::vector<std::string> order;
  order.reserve(queues_.size() + 1);
  if (!first_.empty()) order.push_back(first_);
  const std::size_t want = queues_.size() + (first_.empty() ? 0 : 1);
  for (std::size_t i = 0; i < pool.size() && order.size() < want; ++i) {
    std::uniform_int_distribution<std::size_t> pick(i, pool.size() - 1);
    std::swap(pool[i], pool[pick(rng)]);
    if (!taken[pool[i]]) {
      taken[pool[i]] = true;
      order.push_back(queues_[pool[i]].name);
    }
  }
  return order;
}

}  // namespace wk::queue
