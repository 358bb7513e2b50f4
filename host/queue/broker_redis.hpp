#pragma once
// queue::Broker over Redis in asynq's layout (spec §6.7-§6.19), through the Lua scripts of
// scripts.hpp (EVALSHA) and a pool of connections. wait_for_work() blocks without polling: one
// waiter thread per queue, each on its own connection, parks in
// `BLMOVE pending pending RIGHT RIGHT <t>` (a no-op rotation that returns as soon as the list is
// non-empty) while armed; paused queues are never armed, so they cannot cause a busy loop.
#include <condition_variable>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <thread>

#include "log/log.hpp"
#include "queue/broker.hpp"
#include "queue/client.hpp"
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
  void dequeue_after(const OutcomeWrite& w, std::exception_ptr& write_error,
                     const std::vector<std::string>& queues, std::chrono::seconds lease, size_t max,
                     std::vector<Dequeued>& out) override;
  bool wait_for_work(const std::vector<std::string>& queues, std::chrono::milliseconds timeout) override;
  void wake() override;
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
  static std::vector<std::string> requeue_args(const asynq::TaskMessage& msg);
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
  Clock::time_point first_unhandled(const asynq::TaskMessage& msg, std::chrono::seconds keep) override;

  // The producer sharing this broker's pool (follow-ups use the same code path).
  Client& client() { return client_; }
  // The connections it uses (for other keys of ours, such as crash counts).
  redis::Pool& pool() { return pool_; }

 private:
  struct Waiter;
  struct Call;
  // EVALSHA (EVAL on NOSCRIPT) through the auto-pipeline; throws as Connection::eval does.
  redis::Reply call(const redis::Script& script, redis::Argv keys_and_args, size_t numkeys);
  // Sends `calls` consecutively in one pipeline batch and returns when all have a reply or an
  // error (in each Call); the thread waits once, on the last call.
  void submit(std::span<Call* const> calls);
  void flush(const std::vector<Call*>& batch);  // by the one flushing caller
  struct QueueKeys;
  const QueueKeys& keys_for(const std::string& queue);  // cached per queue, never removed
  // The dequeue script's / the done script's KEYS/ARGV, viewing cached keys and this thread's
  // scratch buffers (valid until this thread's next call of the same kind).
  void dequeue_argv(const std::string& q, Clock::time_point expiry, size_t max,
                    std::vector<std::string_view>& out);
  // A dequeue call of this thread failed with `error`: when Redis may have run it without its
  // reply reaching us, remember the call, so that what it took is handed back (no attempt
  // counted) by reclaim_lost_dequeue() before this thread's next dequeue.
  void note_lost_dequeue(const std::string& q, const std::exception_ptr& error);
  void reclaim_lost_dequeue();  // throws redis::Error (Redis still away): the record is kept
  // The script and KEYS/ARGV of an outcome write (no follow-ups); `storage` owns what `argv`
  // views besides the cached keys and the scratch buffers.
  const redis::Script* write_call_args(const OutcomeWrite& w, Clock::time_point now,
                                       std::vector<std::string_view>& argv, std::vector<std::string>& storage,
                                       size_t& numkeys);
  void done_argv(const asynq::TaskMessage& msg, Clock::time_point now, std::vector<std::string_view>& out,
                 size_t& numkeys);
  // Decodes a dequeue reply (id, msg pairs) into `out`, archiving the entries that cannot be
  // served (set_aside); false when the reply was empty.
  bool decode_dequeued(const redis::Reply& reply, const std::string& q, Clock::time_point expiry,
                       std::vector<Dequeued>& out);
  void complete(const asynq::TaskMessage& msg, const redis::Script& script,
                std::vector<std::string> keys_and_args, size_t numkeys,
                const std::vector<task::EnqueueRequest>& followups);
  void waiter_loop(Waiter& waiter);
  void requeue_with(const redis::Script& script, const asynq::TaskMessage& msg);
  // As decode_dequeued() for the recoverer's listings; `archive_script` sets aside (the orphan
  // form for ids that must still have no lease).
  void decode_listed(const redis::ReplyView& reply, const std::string& queue,
                     const redis::Script& archive_script, std::vector<asynq::TaskMessage>& out);
  // Archives a message the engine cannot serve, with its reason as the last error, logged once.
  void set_aside(const Malformed& bad, const redis::Script& archive_script);
  Waiter& waiter_for(const std::string& queue);  // wait_mu_ held

  RedisBrokerSettings settings_;
  log::Logger log_;
  redis::Pool pool_;
  Client client_;
  const std::string id_;  // names this broker's dequeue claims

  std::mutex keys_mu_;
  std::map<std::string, std::unique_ptr<QueueKeys>, std::less<>> keys_;

  // auto-pipeline state (call / flush)
  std::mutex pipe_mu_;
  std::vector<Call*> pipe_queue_;            // waiting for the next flush
  std::vector<Call*> pipe_batch_;            // being flushed (flusher only)
  std::vector<std::string_view> pipe_argv_;  // flusher only
  bool pipe_flushing_ = false;

  // wait_for_work state
  std::mutex wait_mu_;
  std::condition_variable work_cv_;    // waiters -> wait_for_work callers
  std::condition_variable waiter_cv_;  // wait_for_work -> waiters (armed) and shutdown
  uint64_t work_signals_ = 0;
  bool wake_pending_ = false;
  bool stopping_ = false;
  std::map<std::string, std::unique_ptr<Waiter>> waiters_;
};

}  // namespace wk::queue
