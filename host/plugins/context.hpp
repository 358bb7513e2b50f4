#pragma once
// Internal: the generation-checked handles behind wk_ctx*, wk_pg_rows* and wk_pg_tx*.
//
// A plugin only ever holds opaque 64-bit values (slot index << 32 | generation). Every host
// function looks the value up here first; a stale, forged or wrong-kind value gets
// WK_E_WRONG_CTX and a "plugin misbehaving" warning instead of a dangling dereference.
//
// The table is process-wide on purpose: the C callbacks in wk_host_api carry no user data, and a
// plugin thread may call the host after the PluginHost that made the handle is gone (libraries
// are retired, never unmapped). It is the plugin layer's only process-wide object.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "log/log.hpp"
#include "plugins/plugins.hpp"
#include "task/task.hpp"
#include "wk_abi.h"

namespace wk::db {
class Pool;
class Result;
class Transaction;
struct Migration;
}  // namespace wk::db

namespace wk::plugins::detail {

enum class HandleKind : uint8_t { plugin_ctx, task_ctx, rows, tx };
const char* kind_name(HandleKind kind);

// Who is blamed (and where it is logged) when a handle is misused.
struct HandleOwner {
  log::Logger logger;  // host logger, already bound with plugin=<id>
  std::string plugin_id;
};

class HandleTable {
 public:
  static HandleTable& process();

  uint64_t add(HandleKind kind, std::shared_ptr<void> object, std::shared_ptr<const HandleOwner> owner);
  // The live object of `handle` if it is of `kind`; otherwise logs "plugin misbehaving" naming
  // `function` and returns null.
  std::shared_ptr<void> get(uint64_t handle, HandleKind kind, const char* function);
  // A plugin ctx or a task ctx.
  std::shared_ptr<void> get_any_ctx(uint64_t handle, const char* function);
  // Like get() but also frees the slot; later lookups of `handle` fail.
  std::shared_ptr<void> take(uint64_t handle, HandleKind kind, const char* function);
  // Frees the slot silently (the host releasing what it made). Returns the object, if live.
  std::shared_ptr<void> release(uint64_t handle);

 private:
  struct Slot {
    uint32_t generation = 0;
    HandleKind kind = HandleKind::plugin_ctx;
    std::shared_ptr<void> object;
    std::shared_ptr<const HandleOwner> owner;  // kept after release, to blame stale calls
  };
  std::shared_ptr<void> find(uint64_t handle, HandleKind kind, const char* function, bool erase,
                             bool any_ctx = false);

  std::mutex mu_;
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_;  // used FIFO-ish from the front, so a freed slot is reused late
  size_t free_head_ = 0;
  std::shared_ptr<const HandleOwner> last_owner_;  // for values that name no slot at all
};

// Migrations pg_migrate could not apply at load time because the database was unreachable. A
// worker must start (and serve its other plugins) during a database outage, so the plugin loads
// anyway; the plugin host applies these before any of its tasks runs, and retries the task
// ("database unavailable") until they are applied.
class DeferredMigrations {
 public:
  DeferredMigrations();
  ~DeferredMigrations();
  DeferredMigrations(const DeferredMigrations&) = delete;
  DeferredMigrations& operator=(const DeferredMigrations&) = delete;

  void defer(const std::vector<db::Migration>& migrations);
  bool pending() const noexcept { return pending_.load(std::memory_order_acquire); }
  // One thread applies, the others wait for it; throws db::Error while the database is away.
  void apply(db::Pool& pool, const std::string& plugin_id, const log::Logger& logger);

 private:
  std::mutex mu_;
  std::vector<db::Migration> migrations_;
  std::atomic<bool> pending_{false};
};

// Everything a plugin's contexts reach: fixed for the plugin's life.
struct PluginServices {
  std::shared_ptr<const HandleOwner> owner;
  log::Logger logger;  // bound with plugin=<id>
  std::string plugin_id;
  std::shared_ptr<const ConfigSnapshot> config;
  db::Pool* pool = nullptr;
  task::Enqueuer* enqueuer = nullptr;
  std::shared_ptr<DeferredMigrations> deferred_migrations = std::make_shared<DeferredMigrations>();
};

// The host's state behind one wk_ctx*: a plugin ctx or a task ctx (the SDK's wk::Context is the
// plugin's view of it). Host calls enter() it for their whole duration, and close()
// waits for them, so a call never outlives the objects (Execution) the context points to.
class CtxState {
 public:
  // A plugin ctx logs with the plugin's logger.
  CtxState(HandleKind kind, std::shared_ptr<const PluginServices> services)
      : kind_(kind), services_(std::move(services)), execution_(nullptr) {}
  // A task ctx logs with the task's fields too (made on first use: most tasks never log).
  CtxState(std::shared_ptr<const PluginServices> services, task::Execution& execution)
      : kind_(HandleKind::task_ctx), services_(std::move(services)), execution_(&execution) {}

  HandleKind kind() const { return kind_; }
  const PluginServices& services() const { return *services_; }
  const log::Logger& logger() const;
  task::Execution* execution() const { return execution_; }  // task ctx only
  uint64_t handle() const { return handle_; }
  void set_handle(uint64_t handle) { handle_ = handle; }

  bool enter();
  // enter(), but only while the handler's run() is active (set_running): on_cancel must never
  // start after run() returned, when a C plugin may have freed what it works on.
  bool enter_while_running();
  void set_running(bool running);
  void leave();
  // Stops new calls, wakes waiters, waits for running calls, then releases leaked rows and
  // transactions (rolled back) with a warning.
  void close();

  // Waits until the cancellation has been delivered (notify(), after the handler's on_cancel
  // ran), the ctx closes or `timeout` passes.
  task::CancelReason wait_cancelled(std::chrono::milliseconds timeout);
  void notify();  // the cancellation arrived and on_cancel, if any, has run

  void own(uint64_t handle, HandleKind kind);
  void disown(uint64_t handle);
  // Serialises appends to Execution::staged from several plugin threads.
  std::mutex& staged_mutex() { return staged_mu_; }

  // A database call of this task found the database away (WK_E_UNAVAILABLE).
  void note_unavailable() { unavailable_.store(true, std::memory_order_relaxed); }
  bool saw_unavailable() const { return unavailable_.load(std::memory_order_relaxed); }

 private:
  const HandleKind kind_;
  std::shared_ptr<const PluginServices> services_;
  mutable std::once_flag task_logger_once_;
  mutable std::optional<log::Logger> task_logger_;
  task::Execution* execution_;
  uint64_t handle_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  int active_calls_ = 0;
  bool open_ = true;
  bool cancel_delivered_ = false;
  bool running_ = false;
  std::vector<std::pair<uint64_t, HandleKind>> owned_;
  std::mutex staged_mu_;
  std::atomic<bool> unavailable_{false};
};

// RAII: a host call inside a context's window.
class CtxCall {
 public:
  explicit CtxCall(std::shared_ptr<CtxState> ctx) : ctx_(std::move(ctx)) {
    if (ctx_ && !ctx_->enter()) ctx_.reset();
  }
  ~CtxCall() {
    if (ctx_) ctx_->leave();
  }
  CtxCall(const CtxCall&) = delete;
  CtxCall& operator=(const CtxCall&) = delete;
  explicit operator bool() const { return ctx_ != nullptr; }
  CtxState* operator->() const { return ctx_.get(); }
  CtxState& operator*() const { return *ctx_; }

 private:
  std::shared_ptr<CtxState> ctx_;
};

struct RowsObject {
  std::unique_ptr<db::Result> result;
  std::weak_ptr<CtxState> owner;
};

struct TxObject {
  std::mutex mu;  // db::Transaction is one connection: one statement at a time
  std::unique_ptr<db::Transaction> tx;
  std::weak_ptr<CtxState> owner;
  ~TxObject();
};

// The one host-services table (constant; every function looks its handles up).
const wk_host_api* host_api();

// Handles are table numbers spelled as opaque ABI pointers: never dereferenced, so no provenance.
// NOLINTNEXTLINE(performance-no-int-to-ptr): the "pointer" is a number, the ABI's handle type
inline void* to_pointer(uint64_t handle) { return reinterpret_cast<void*>(static_cast<uintptr_t>(handle)); }
inline uint64_t to_handle(const void* pointer) { return reinterpret_cast<uintptr_t>(pointer); }

}  // namespace wk::plugins::detail
