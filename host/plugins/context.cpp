#include "plugins/context.hpp"

#include <algorithm>

#include "db/db.hpp"

namespace wk::plugins::detail {

const char* kind_name(HandleKind kind) {
  switch (kind) {
    case HandleKind::plugin_ctx:
      return "plugin ctx";
    case HandleKind::task_ctx:
      return "task ctx";
    case HandleKind::rows:
      return "pg rows";
    case HandleKind::tx:
      return "pg transaction";
  }
  return "handle";
}

HandleTable& HandleTable::process() {
  // Never destroyed: a plugin thread may call the host during static destruction.
  static HandleTable* const table = new HandleTable();
  return *table;
}

uint64_t HandleTable::add(HandleKind kind, std::shared_ptr<void> object,
                          std::shared_ptr<const HandleOwner> owner) {
  std::lock_guard lock(mu_);
  uint32_t index = 0;
  // Reuse a freed slot only once a fair number are free, so a stale value rarely meets a new
  // occupant (it would still be caught by the generation).
  if (free_.size() - free_head_ > 64) {
    index = free_[free_head_++];
    if (free_head_ > 1024 && free_head_ * 2 > free_.size()) {
      free_.erase(free_.begin(), free_.begin() + static_cast<std::ptrdiff_t>(free_head_));
      free_head_ = 0;
    }
  } else {
    slots_.emplace_back();
    index = static_cast<uint32_t>(slots_.size() - 1);
  }
  Slot& slot = slots_[index];
  slot.generation = slot.generation == UINT32_MAX ? 1 : slot.generation + 1;
  slot.kind = kind;
  slot.object = std::move(object);
  slot.owner = owner;
  last_owner_ = std::move(owner);
  return (static_cast<uint64_t>(index) + 1) << 32 | slot.generation;
}

std::shared_ptr<void> HandleTable::get(uint64_t handle, HandleKind kind, const char* function) {
  return find(handle, kind, function, false);
}

std::shared_ptr<void> HandleTable::get_any_ctx(uint64_t handle, const char* function) {
  return find(handle, HandleKind::task_ctx, function, false, true);
}

std::shared_ptr<void> HandleTable::take(uint64_t handle, HandleKind kind, const char* function) {
  return find(handle, kind, function, true);
}

std::shared_ptr<void> HandleTable::release(uint64_t handle) {
  std::lock_guard lock(mu_);
  const uint64_t index_plus_one = handle >> 32;
  if (index_plus_one == 0 || index_plus_one > slots_.size()) return nullptr;
  Slot& slot = slots_[index_plus_one - 1];
  if (slot.generation != static_cast<uint32_t>(handle) || !slot.object) return nullptr;
  free_.push_back(static_cast<uint32_t>(index_plus_one - 1));
  return std::move(slot.object);
}

std::shared_ptr<void> HandleTable::find(uint64_t handle, HandleKind kind, const char* function, bool erase,
                                        bool any_ctx) {
  std::shared_ptr<void> found;
  std::shared_ptr<const HandleOwner> blame;
  const char* problem = nullptr;
  {
    std::lock_guard lock(mu_);
    const uint64_t index_plus_one = handle >> 32;
    if (index_plus_one == 0 || index_plus_one > slots_.size()) {
      problem = handle == 0 ? "null handle" : "unknown handle";
      blame = last_owner_;
    } else {
      Slot& slot = slots_[index_plus_one - 1];
      blame = slot.owner;
      if (slot.generation != static_cast<uint32_t>(handle) || !slot.object) {
        problem = "expired handle (its window closed)";
      } else if (slot.kind != kind &&
                 !(any_ctx && (slot.kind == HandleKind::plugin_ctx || slot.kind == HandleKind::task_ctx))) {
        problem = "wrong kind of handle";
      } else if (erase) {
        free_.push_back(static_cast<uint32_t>(index_plus_one - 1));
        found = std::move(slot.object);
      } else {
        found = slot.object;
      }
    }
  }
  if (problem != nullptr && blame) {
    blame->logger.warn(
        "plugin misbehaving",
        {{"function", function}, {"problem", problem}, {"expected", any_ctx ? "ctx" : kind_name(kind)}});
  }
  return found;
}

// ---- DeferredMigrations ----------------------------------------------------------------------

DeferredMigrations::DeferredMigrations() = default;
DeferredMigrations::~DeferredMigrations() = default;

void DeferredMigrations::defer(const std::vector<db::Migration>& migrations) {
  std::lock_guard lock(mu_);
  // Applying is idempotent per version (the pool re-checks under its advisory lock), so a list
  // that was partly applied before the outage is simply kept whole.
  migrations_.insert(migrations_.end(), migrations.begin(), migrations.end());
  std::stable_sort(migrations_.begin(), migrations_.end(),
                   [](const db::Migration& a, const db::Migration& b) { return a.version < b.version; });
  migrations_.erase(
      std::unique(migrations_.begin(), migrations_.end(),
                  [](const db::Migration& a, const db::Migration& b) { return a.version == b.version; }),
      migrations_.end());
  pending_.store(!migrations_.empty(), std::memory_order_release);
}

void DeferredMigrations::apply(db::Pool& pool, const std::string& plugin_id, const log::Logger& logger) {
  std::lock_guard lock(mu_);
  if (migrations_.empty()) return;  // another thread applied them while this one waited
  pool.migrate(plugin_id, migrations_);
  logger.info("deferred migrations applied", {{"count", static_cast<int64_t>(migrations_.size())}});
  migrations_.clear();
  pending_.store(false, std::memory_order_release);
}

// ---- CtxState -----------------------------------------------------------------------------

const log::Logger& CtxState::logger() const {
  if (execution_ == nullptr) return services_->logger;
  std::call_once(task_logger_once_, [this] {
    const task::Task& t = execution_->task;
    task_logger_ = services_->logger.with(
        {{"task_id", t.id}, {"task_type", t.type}, {"queue", t.queue}, {"attempt", t.retried + 1}});
  });
  return *task_logger_;
}

bool CtxState::enter() {
  std::lock_guard lock(mu_);
  if (!open_) return false;
  ++active_calls_;
  return true;
}

bool CtxState::enter_while_running() {
  std::lock_guard lock(mu_);
  if (!open_ || !running_) return false;
  ++active_calls_;
  return true;
}

void CtxState::set_running(bool running) {
  std::lock_guard lock(mu_);
  running_ = running;
}

void CtxState::leave() {
  std::lock_guard lock(mu_);
  if (--active_calls_ == 0) cv_.notify_all();
}

void CtxState::close() {
  std::vector<std::pair<uint64_t, HandleKind>> leaked;
  {
    std::unique_lock lock(mu_);
    open_ = false;
    cv_.notify_all();  // wakes wait_cancelled
    cv_.wait(lock, [&] { return active_calls_ == 0; });
    leaked.swap(owned_);
  }
  HandleTable::process().release(handle_);
  size_t rows = 0;
  size_t txs = 0;
  for (const auto& [handle, kind] : leaked) {
    // Destroying a TxObject rolls its transaction back.
    if (HandleTable::process().release(handle)) (kind == HandleKind::tx ? txs : rows) += 1;
  }
  if (rows + txs > 0) {
    logger().warn("plugin leaked database handles; released by the host",
                  {{"rows", rows}, {"transactions_rolled_back", txs}});
  }
}

task::CancelReason CtxState::wait_cancelled(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  // Not the token's own flag: it is set before on_cancel runs, and the ABI promises the handler
  // that on_cancel has run by the time wait_cancelled returns.
  cv_.wait_for(lock, timeout, [&] { return !open_ || cancel_delivered_; });
  // A cancellation still being delivered (on_cancel running) is reported once it is done.
  if (execution_ == nullptr || (open_ && !cancel_delivered_)) return task::CancelReason::none;
  return execution_->cancellation.reason();
}

void CtxState::notify() {
  std::lock_guard lock(mu_);
  cancel_delivered_ = true;
  cv_.notify_all();
}

void CtxState::own(uint64_t handle, HandleKind kind) {
  std::lock_guard lock(mu_);
  owned_.emplace_back(handle, kind);
}

void CtxState::disown(uint64_t handle) {
  std::lock_guard lock(mu_);
  std::erase_if(owned_, [&](const auto& entry) { return entry.first == handle; });
}

TxObject::~TxObject() {
  if (!tx) return;
  try {
    tx->rollback();
  } catch (...) {
    // The connection is gone or already aborted: the server rolls back on its own.
  }
}

}  // namespace wk::plugins::detail
