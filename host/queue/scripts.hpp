#pragma once
// The Lua scripts of the asynq operations (spec §6), written from the spec's step lists. Each is
// run with EVALSHA (EVAL on NOSCRIPT). KEYS/ARGV layouts are documented beside each script in
// scripts.cpp; only broker_redis.cpp and client.cpp call them.
#include "redis/redis.hpp"

namespace wk::queue {

struct Scripts {
  redis::Script enqueue;                    // §6.2
  redis::Script enqueue_unique;             // §6.3
  redis::Script schedule;                   // §6.4
  redis::Script schedule_unique;            // §6.5
  redis::Script dequeue;                    // §6.7, up to N tasks of one queue per call
  redis::Script reclaim;                    // hands back what a dequeue with a lost reply took
  redis::Script done;                       // §6.9 (unique key optional as KEYS[6])
  redis::Script mark_complete;              // §6.10 (unique key optional as KEYS[7])
  redis::Script retry;                      // §6.11
  redis::Script archive;                    // §6.12
  redis::Script recover_orphan_retry;       // asynq #1144: §6.11 for an active id with no lease
  redis::Script recover_orphan_archive;     // asynq #1144: §6.12 for an active id with no lease
  redis::Script requeue;                    // §6.13
  redis::Script hand_back;                  // requeue at the back of pending (not the task's fault)
  redis::Script forward;                    // §6.14
  redis::Script list_lease_expired;         // §6.15
  redis::Script list_active_without_lease;  // asynq #1144
  redis::Script write_server_state;         // §6.16 c
  redis::Script clear_server_state;         // §6.17 (the DEL part)
  redis::Script delete_expired_completed;   // §6.19
};

// The one immutable set of scripts (SHA1s computed once).
const Scripts& scripts();

}  // namespace wk::queue
