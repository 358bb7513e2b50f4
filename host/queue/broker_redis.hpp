#pragma once
// queue::Broker over Redis in asynq's layout (protocol §6.7-§6.19). Each operation's Lua script sits
// in broker_redis.cpp directly above the one method that runs it, under its KEYS/ARGV block;
// waiting for work is work_waiter.hpp's, the enqueue scripts are client.cpp's, flow control's
// (keys of our own) are broker_limits.cpp's.
#include <chrono>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <span>

#include "log/log.hpp"
#include "queue/broker.hpp"
#include "queue/client.hpp"
#include "queue/work_waiter.hpp"
#include "redis/redis.hpp"

namespace wk::queue {

struct RedisBrokerSettings {
  redis::Settings redis;
  size_t pool_size = 8;
  std::chrono::seconds stats_ttl{std::chrono::hours(24 * 90)};        // daily counter expiry
  std::chrono::seconds archive_max_age{std::chrono::hours(24 * 90)};  // archive age trim
  int archive_max_size = 10000;                                       // archive size trim
};

// A (list id, stored msg) entry the engine cannot serve, and the message archived in its place:
// the decoded one with the list's id and queue when it decodes, else one that carries the stored
// bytes as its payload, so that asynq's tools and `worker tasks show` still display it.
struct Malformed {
  std::string reason;
  asynq::TaskMessage archived;
};

class RedisBroker : public Broker {
 public:
  RedisBroker(RedisBrokerSettings settings, log::Logger logger);
  ~RedisBroker() override;
  RedisBroker(const RedisBroker&) = delete;
  RedisBroker& operator=(const RedisBroker&) = delete;

  std::optional<Dequeued> dequeue(const std::vector<std::string>& queues,
                                  std::chrono::seconds lease) override;
  std::vector<Dequeued> dequeue_batch(const std::vector<std::string>& queues, std::chrono::seconds lease,
                                      size_t max) override;
  void exchange(std::span<const OutcomeWrite> writes, std::span<std::exception_ptr> errors,
                const std::vector<std::string>& queues, std::chrono::seconds lease, size_t max,
                std::vector<Dequeued>& out) override;
  bool wait_for_work(const std::vector<std::string>& queues, std::chrono::milliseconds timeout,
                     unsigned waker) override;
  void wake(unsigned waker) override;
  Clock::time_point extend_leases(const std::string& queue, const std::vector<std::string>& ids,
                                  std::chrono::seconds lease) override;
  void done(const asynq::TaskMessage& msg, const std::vector<task::EnqueueRequest>& followups) override;
  void mark_complete(const asynq::TaskMessage& msg,
                     const std::vector<task::EnqueueRequest>& followups) override;
  void retry(const asynq::TaskMessage& msg, Clock::time_point retry_at, const std::string& error,
             bool is_failure) override;
  void archive(const asynq::TaskMessage& msg, const std::string& error) override;
  void requeue(const asynq::TaskMessage& msg) override;
  void hand_back(const asynq::TaskMessage& msg) override;
  void write_result(const std::string& queue, const std::string& id, std::string_view data) override;
  int forward(const std::string& queue) override;
  std::vector<asynq::TaskMessage> list_lease_expired(const std::vector<std::string>& queues,
                                                     Clock::time_point cutoff) override;
  std::vector<asynq::TaskMessage> list_active_without_lease(const std::string& queue) override;
  OrphanRecovery recover_orphan(const asynq::TaskMessage& msg, std::optional<Clock::time_point> retry_at,
                                const std::string& error) override;
  int delete_expired_completed(const std::string& queue, int batch) override;
  void write_server_state(const asynq::ServerInfo& info, const std::vector<asynq::WorkerInfo>& workers,
                          std::chrono::seconds ttl) override;
  void clear_server_state(const std::string& host, int pid, const std::string& server_id) override;
  bool ping() override;
  std::vector<std::string> all_queues() override;
  std::vector<long long> backlogs(const std::vector<std::string>& queues) override;
  PermitGrant acquire_permit(const task::TypeLimit& limit, const std::string& member,
                             std::chrono::milliseconds lease) override;
  void release_permit(const task::TypeLimit& limit, const std::string& member) override;
  void extend_permits(const task::TypeLimit& limit, const std::vector<std::string>& members,
                      std::chrono::milliseconds lease) override;
  void pause_type(const std::string& type, std::chrono::milliseconds duration) override;
  std::vector<std::pair<std::string, std::chrono::milliseconds>> paused_types() override;
  std::vector<std::string> live_servers() override;
  std::optional<asynq::ServerInfo> server_info(const std::string& key) override;
  std::vector<bool> any_due(const std::vector<std::string>& sorted_sets, Clock::time_point now) override;
  std::vector<LeaseProbe> probe_leases(const std::vector<std::string>& queues) override;
  Clock::time_point first_unhandled(const asynq::TaskMessage& msg, std::chrono::seconds keep) override;

  // The producer sharing this broker's pool (follow-ups use the same code path).
  Client& client() { return client_; }
  // The connections it uses (for other keys of ours, such as crash counts).
  redis::Pool& pool() { return pool_; }

  // The per-call strings of the done script's arguments (the others are cached per queue).
  struct DoneStrings {
    std::string processed_key, stats_expiry;
  };

 private:
  struct QueueKeys;
  const QueueKeys& keys_for(const std::string& queue);  // cached per queue, never removed

  // The dequeue script's KEYS/ARGV for `queues`, viewing cached keys and this thread's scratch
  // buffers; returns numkeys.
  size_t dequeue_argv(std::span<const std::string> queues, Clock::time_point expiry, size_t max,
                      std::vector<std::string_view>& out);
  // How many of `queues` queues one dequeue call may name (all of them, but one in a Cluster).
  size_t dequeue_span(size_t queues) const;
  // A dequeue call of this thread failed with `error`: when Redis may have run it without its
  // reply reaching us, remember the call, so that what it took is handed back (no attempt
  // counted) by reclaim_lost_dequeue() before this thread's next dequeue.
  void note_lost_dequeue(std::span<const std::string> queues, const std::exception_ptr& error);
  void reclaim_lost_dequeue();  // throws redis::Error (Redis still away): the record is kept
  // Decodes a dequeue reply ({q, {id, msg, ...}} for queues[q - 1]) into `out`, archiving the
  // entries that cannot be served (set_aside); false when no queue had a task.
  bool decode_dequeued(const redis::ReplyView& reply, std::span<const std::string> queues,
                       Clock::time_point expiry, std::vector<Dequeued>& out);
  // As decode_dequeued() for the recoverer's listings; `archive_script` sets aside (the orphan
  // form for ids that must still have no lease).
  void decode_listed(const redis::ReplyView& reply, const std::string& queue,
                     const redis::Script& archive_script, std::vector<asynq::TaskMessage>& out);
  // Hands `take` each servable message of a reply of id, msg pairs; archives the others with
  // `archive_script` (set_aside). Defined in broker_redis.cpp, its only user.
  template <class Take>
  void take_servable(const redis::ReplyView& reply, const std::string& queue,
                     const redis::Script& archive_script, Take&& take);
  // Archives a message the engine cannot serve, with its reason as the last error, logged once.
  void set_aside(const Malformed& bad, const redis::Script& archive_script);

  // The done script's KEYS/ARGV for `msgs`, all of one queue: views of cached keys, of the
  // messages and of `strings`.
  void done_argv(std::span<const asynq::TaskMessage* const> msgs, Clock::time_point now, DoneStrings& strings,
                 std::vector<std::string_view>& out);
  // Runs a success script in one MULTI/EXEC with the follow-ups' enqueues.
  void complete_with_followups(const asynq::TaskMessage& msg, const redis::Script& script,
                               std::span<const std::string_view> keys_and_args, size_t numkeys,
                               const std::vector<task::EnqueueRequest>& followups);
  void complete_then_followups_in_cluster(const asynq::TaskMessage& msg, redis::Connection& conn,
                                          const redis::Script& script,
                                          std::span<const std::string_view> keys_and_args, size_t numkeys,
                                          const std::vector<PreparedEnqueue>& prepared);
  // EVALSHA on a pool connection; NOT FOUND becomes queue::NotFound (for `msg`).
  redis::Reply eval_for(const asynq::TaskMessage& msg, const redis::Script& script,
                        std::span<const std::string_view> keys_and_args, size_t numkeys);

  RedisBrokerSettings settings_;
  log::Logger log_;
  redis::Pool pool_;
  Client client_;
  WorkWaiter waiter_;
  const std::string id_;  // names this broker's dequeue claims
  // Whether the last write_server_state listed workers: an idle server that listed none last
  // time has nothing to clear (only the heartbeat loop writes server state).
  bool workers_listed_ = true;

  std::mutex keys_mu_;
  std::map<std::string, std::unique_ptr<QueueKeys>, std::less<>> keys_;
};

// What `worker limits` shows of one limit across the fleet (broker_limits.cpp).
struct FleetLimitState {
  long long permits_held = 0;    // unexpired fleet permits
  std::optional<double> tokens;  // the rate bucket now (none: never used)
};
FleetLimitState read_fleet_limit_state(redis::Connection& conn, const task::TypeLimit& limit);
std::vector<std::pair<std::string, std::chrono::milliseconds>> read_paused_types(redis::Connection& conn);

}  // namespace wk::queue
