#include "queue/deadline.hpp"

#include <algorithm>

namespace wk::queue {

std::chrono::system_clock::time_point effective_deadline(int64_t timeout_s, int64_t deadline_unix_s,
                                                         std::chrono::system_clock::time_point now) {
  using std::chrono::seconds;
  using TimePoint = std::chrono::system_clock::time_point;
  if (timeout_s <= 0 && deadline_unix_s <= 0) return now + std::chrono::minutes(30);
  if (deadline_unix_s <= 0) return now + seconds(timeout_s);
  const TimePoint deadline{seconds(deadline_unix_s)};
  if (timeout_s <= 0) return deadline;
  const TimePoint now_s = std::chrono::floor<seconds>(now);
  return std::min(now_s + seconds(timeout_s), deadline);
}

}  // namespace wk::queue
