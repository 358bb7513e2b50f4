#pragma once
// `worker limits`: the flow-control limits configured (WORKER_LIMITS, as this command reads its
// configuration) and their live state across the fleet, read from Redis: fleet permits held,
// the rate bucket, and the task types paused by a handler's backpressure.
#include <ostream>
#include <vector>

#include "redis/redis.hpp"
#include "task/limits.hpp"

namespace wk::app {

// Prints the table (or JSON with `json`); returns the exit code. Throws redis::Error when Redis
// does not answer.
int show_limits(const std::vector<task::TypeLimit>& limits, const redis::Settings& redis, bool json,
                std::ostream& out);

}  // namespace wk::app
