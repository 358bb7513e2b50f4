#pragma once
// The effective deadline of one attempt (protocol §7.3 step 4, §13.4).
#include <chrono>
#include <cstdint>

namespace wk::queue {

// `timeout_s` and `deadline_unix_s` as stored in the TaskMessage (0 = none).
//   neither      -> now + 30 min
//   both         -> min(now truncated to seconds + timeout, deadline), whole seconds
//   timeout only -> now + timeout (full precision)
//   deadline only-> deadline
std::chrono::system_clock::time_point effective_deadline(int64_t timeout_s, int64_t deadline_unix_s,
                                                         std::chrono::system_clock::time_point now);

}  // namespace wk::queue
