// The plugin runner: the child process that hosts one plugin (`worker --plugin-runner`).
//
// It is the in-process PluginHost, unchanged, given services that forward to the worker: a
// db::Pool whose queries run on the worker's pool, an Enqueuer that publishes through the
// worker's Redis, and, per task, a TaskServices that writes the result through the worker's
// engine. Cancellation and deadlines are local (the worker sends cancel frames), so
// is_cancelled, wait_cancelled and remaining_ms cost no round trip. Logs are shipped to the
// worker, which writes them in its own format.
#include <execinfo.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "plugins/plugins.hpp"
#include "runner/channel.hpp"
#include "runner/runner.hpp"
#include "runner/threads.hpp"

namespace wk::runner {
namespace {

using wire::Kind;
using wire::Op;
using SteadyClock = std::chrono::steady_clock;

// ---- crash reports ---------------------------------------------------------------------------
// A fatal signal in plugin code writes one report to the crash pipe (read by the worker once the
// runner is gone), then dies of the same signal so the worker sees it in the exit status. Only
// async-signal-safe calls: write, backtrace (preloaded at start-up), backtrace_symbols_fd.

int g_crash_fd = -1;                  // set once before any plugin code runs
thread_local uint64_t t_call_id = 0;  // the task this thread runs, for the report

void write_text(const char* text) {
  const ssize_t ignored = ::write(g_crash_fd, text, std::strlen(text));
  (void)ignored;
}

void write_number(uint64_t n) {
  char digits[24];
  int i = sizeof digits;
  digits[--i] = '\0';
  do {
    digits[--i] = static_cast<char>('0' + n % 10);
    n /= 10;
  } while (n != 0 && i > 0);
  write_text(digits + i);
}

void on_fatal_signal(int signo) {
  write_text("signal ");
  write_number(static_cast<uint64_t>(signo));
  write_text(" call ");
  write_number(t_call_id);
  write_text("\n");
  void* frames[32];
  const int n = ::backtrace(frames, 32);
  ::backtrace_symbols_fd(frames, n, g_crash_fd);
  // SA_RESETHAND restored the default action: dying of the same signal keeps the exit status
  // honest (and a core dump, where enabled).
  ::raise(signo);
}

void install_crash_handlers(int crash_fd) {
  g_crash_fd = crash_fd;
  void* warm[1];
  ::backtrace(warm, 1);  // loads libgcc now: the first call may allocate, a signal handler must not
  struct sigaction action {};
  action.sa_handler = on_fatal_signal;
  action.sa_flags = SA_RESETHAND | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  for (int signo : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS, SIGTRAP})
    ::sigaction(signo, &action, nullptr);
}

// Each runner thread gets an alternate signal stack, so a stack overflow is reported too.
// Threads that already have one (the sanitizers install their own) keep it.
void use_alternate_signal_stack() {
  stack_t current{};
  if (::sigaltstack(nullptr, &current) == 0 && (current.ss_flags & SS_DISABLE) == 0) return;
  thread_local std::vector<char> stack(size_t{64} * 1024);
  stack_t ss{};
  ss.ss_sp = stack.data();
  ss.ss_size = stack.size();
  ::sigaltstack(&ss, nullptr);
}

// ---- calls to the worker ---------------------------------------------------------------------

class RpcClient {
 public:
  // `before_wait` runs on the calling thread once its call is sent, before it waits for the reply.
  RpcClient(Channel& channel, std::function<void()> before_wait)
      : channel_(channel), before_wait_(std::move(before_wait)) {}

  // Sends `op` with the arguments `args` writes and waits for the reply; returns the reply's
  // result bytes, or rethrows the worker-side exception.
  template <class Args>
  std::string call(Op op, Args&& args) {
    wire::Writer w;
    w.u8(static_cast<uint8_t>(op));
    args(w);
    auto pending = std::make_shared<Pending>();
    uint64_t id = 0;
    {
      std::lock_guard lock(mu_);
      if (closed_) throw std::runtime_error("the worker is gone");
      id = ++next_id_;
      pending_[id] = pending;
    }
    if (!channel_.send(Kind::call, id, w.data())) {
      std::lock_guard lock(mu_);
      pending_.erase(id);
      throw std::runtime_error("the worker is gone");
    }
    if (before_wait_) before_wait_();
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return pending->done; });
    if (!pending->answered) throw std::runtime_error("the worker is gone");
    wire::Reader r(pending->body);
    if (r.u8() == 0) wire::rethrow(r);
    return pending->body.substr(1);
  }

  void on_reply(uint64_t id, std::string_view body) {
    std::lock_guard lock(mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    it->second->body = std::string(body);
    it->second->answered = it->second->done = true;
    pending_.erase(it);
    cv_.notify_all();
  }

  void close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    for (auto& [id, p] : pending_) p->done = true;
    pending_.clear();
    cv_.notify_all();
  }

 private:
  struct Pending {
    bool done = false;
    bool answered = false;
    std::string body;
  };
  Channel& channel_;
  const std::function<void()> before_wait_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_id_ = 0;
  std::map<uint64_t, std::shared_ptr<Pending>> pending_;
  bool closed_ = false;
};

// Which task a db call belongs to: the host API passes the task's Cancellation in CallOptions.
class CallIds {
 public:
  void add(const task::Cancellation* c, uint64_t id) {
    std::lock_guard lock(mu_);
    ids_[c] = id;
  }
  void remove(const task::Cancellation* c) {
    std::lock_guard lock(mu_);
    ids_.erase(c);
  }
  uint64_t of(const db::CallOptions& options) const {
    if (options.cancellation == nullptr) return 0;
    std::lock_guard lock(mu_);
    auto it = ids_.find(options.cancellation);
    return it == ids_.end() ? 0 : it->second;
  }

 private:
  mutable std::mutex mu_;
  std::map<const task::Cancellation*, uint64_t> ids_;
};

class RemoteTransaction final : public db::Transaction {
 public:
  RemoteTransaction(RpcClient& rpc, uint64_t tx) : rpc_(rpc), tx_(tx) {}
  ~RemoteTransaction() override {
    if (open_) rollback();
  }
  std::unique_ptr<db::Result> query(std::string_view sql, const std::vector<db::Param>& params,
                                    const db::CallOptions& options) override {
    const std::string reply = rpc_.call(Op::tx_query, [&](wire::Writer& w) {
      w.u64(tx_);
      w.str(sql);
      wire::encode(w, params);
      w.u8(options.binary_results ? 1 : 0);
    });
    wire::Reader r(reply);
    return wire::decode_result(r);
  }
  void commit() override {
    open_ = false;  // the worker releases the transaction whatever the commit gives
    rpc_.call(Op::tx_commit, [&](wire::Writer& w) { w.u64(tx_); });
  }
  void rollback() override {
    if (!open_) return;
    open_ = false;
    try {
      rpc_.call(Op::tx_rollback, [&](wire::Writer& w) { w.u64(tx_); });
    } catch (const std::exception&) {
      // rollback never fails: the worker rolls back what a finished task left open anyway.
    }
  }
  bool once(std::string_view key) override {
    const std::string reply = rpc_.call(Op::tx_once, [&](wire::Writer& w) {
      w.u64(tx_);
      w.str(key);
    });
    wire::Reader r(reply);
    return r.u8() != 0;
  }

 private:
  RpcClient& rpc_;
  const uint64_t tx_;
  bool open_ = true;
};

class RemotePool final : public db::Pool {
 public:
  RemotePool(RpcClient& rpc, const CallIds& ids) : rpc_(rpc), ids_(ids) {}
  std::unique_ptr<db::Result> query(std::string_view sql, const std::vector<db::Param>& params,
                                    const db::CallOptions& options) override {
    const std::string reply = rpc_.call(Op::query, [&](wire::Writer& w) {
      w.u64(ids_.of(options));
      w.str(sql);
      wire::encode(w, params);
      w.u8(options.binary_results ? 1 : 0);
    });
    wire::Reader r(reply);
    return wire::decode_result(r);
  }
  std::unique_ptr<db::Transaction> begin(const db::CallOptions& options) override {
    const std::string reply = rpc_.call(Op::begin, [&](wire::Writer& w) { w.u64(ids_.of(options)); });
    wire::Reader r(reply);
    return std::make_unique<RemoteTransaction>(rpc_, r.u64());
  }
  void migrate(std::string_view plugin_id, const std::vector<db::Migration>& migrations) override {
    rpc_.call(Op::migrate, [&](wire::Writer& w) {
      w.str(plugin_id);
      wire::encode(w, migrations);
    });
  }
  bool healthy() override {
    const std::string reply = rpc_.call(Op::healthy, [](wire::Writer&) {});
    return !reply.empty() && reply[0] != 0;
  }

 private:
  RpcClient& rpc_;
  const CallIds& ids_;
};

class RemoteEnqueuer final : public task::Enqueuer {
 public:
  explicit RemoteEnqueuer(RpcClient& rpc) : rpc_(rpc) {}
  std::string enqueue(const task::EnqueueRequest& request) override {
    const std::string reply = rpc_.call(Op::enqueue, [&](wire::Writer& w) { wire::encode(w, request); });
    wire::Reader r(reply);
    return r.str();
  }
  void validate(const task::EnqueueRequest& request) const override {
    rpc_.call(Op::validate, [&](wire::Writer& w) { wire::encode(w, request); });
  }

 private:
  RpcClient& rpc_;
};

class RemoteTaskServices final : public task::TaskServices {
 public:
  RemoteTaskServices(RpcClient& rpc, uint64_t call_id) : rpc_(rpc), call_id_(call_id) {}
  bool write_result(std::string_view data) override {
    try {
      const std::string reply = rpc_.call(Op::write_result, [&](wire::Writer& w) {
        w.u64(call_id_);
        w.str(data);
      });
      return !reply.empty() && reply[0] != 0;
    } catch (const std::exception&) {
      return false;
    }
  }
  void heartbeat(const task::Progress& progress) override {
    try {
      rpc_.call(Op::heartbeat, [&](wire::Writer& w) {
        w.u64(call_id_);
        w.u64(progress.done);
        w.u64(progress.total);
        w.str(progress.note);
      });
    } catch (const std::exception&) {
      // a liveness signal: nothing to do when the worker is gone
    }
  }

 private:
  RpcClient& rpc_;
  const uint64_t call_id_;
};

struct RunningTask {
  RunningTask(RpcClient& rpc, uint64_t id, task::Task t)
      : call_id(id), task(std::move(t)), services(rpc, id) {}
  const uint64_t call_id;
  task::Task task;
  task::Cancellation cancellation;
  RemoteTaskServices services;
  std::vector<task::EnqueueRequest> staged;
};

// Tasks of a type that takes less than Hello::inline_max_us (a moving average over its last runs
// here) run on the thread that read them, one after the other, instead of waking a thread each:
// their outcomes then leave in one write. Longer types always get a thread of their own.
constexpr uint32_t kInlineAfterRuns = 8;  // runs of a type measured before it may go inline
// A batch stops running inline after this long; the rest gets threads.
constexpr std::chrono::microseconds kInlineBudget{500};
// A task running inline for longer than this hands the reading to another thread: frames for
// the others (cancellations, replies, new tasks) wait at most about this long.
constexpr std::chrono::milliseconds kInlineTakeover{1};

class Runner {
 public:
  Runner(int channel_fd)
      : channel_(channel_fd),
        rpc_(channel_, [this] { before_reply_wait(); }),
        pool_(rpc_, ids_),
        enqueuer_(rpc_) {}

  int run() {
    threads_.submit([this] { read_frames(1); });
    std::thread([this] { watch_inline(); }).detach();
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return channel_ended_; });
    lock.unlock();
    // The worker closed the channel (it exits, or gave up on us): nothing left to do.
    rpc_.close();
    ::_exit(0);
  }

 private:
  // ---- reading, and running fast tasks where they were read ----
  // One thread at a time holds the reading (its `turn`); it runs the fast tasks of each read
  // itself, then reads again. When one of them blocks (kInlineTakeover, or a call to the
  // worker), the reading goes to another thread and the tasks not started get threads.
  void read_frames(uint64_t turn) {
    const Channel::OnFrame on_frame = [this](Kind kind, uint64_t id, std::string_view body) {
      this->on_frame(kind, id, body);
    };
    std::string why;
    while (true) {
      if (!channel_.read_once(on_frame, why)) {
        std::lock_guard lock(mu_);
        channel_ended_ = true;
        cv_.notify_all();
        return;
      }
      if (!run_inline(turn)) return;  // another thread reads now
    }
  }

  // Runs the tasks of the last read queued for this thread; false when the reading was handed
  // to another thread meanwhile.
  bool run_inline(uint64_t turn) {
    const auto started = SteadyClock::now();
    {
      std::lock_guard lock(mu_);
      if (inline_batch_.empty()) return true;
      inline_active_ = true;
      inline_thread_ = std::this_thread::get_id();
      ++inline_batches_;
      if (watcher_parked_) watcher_cv_.notify_one();
    }
    while (true) {
      std::shared_ptr<RunningTask> t;
      {
        std::lock_guard lock(mu_);
        if (reader_turn_ != turn) break;
        if (inline_batch_.empty()) {
          inline_active_ = false;
          break;
        }
        if (SteadyClock::now() - started > kInlineBudget) {
          give_threads_locked();
          inline_active_ = false;
          break;
        }
        t = std::move(inline_batch_.front());
        inline_batch_.pop_front();
        ++inline_seq_;
      }
      execute(*t, false);
    }
    channel_.flush();  // their done frames, in one write
    std::lock_guard lock(mu_);
    return reader_turn_ == turn;
  }

  // mu_ held: the queued inline tasks get threads of their own.
  void give_threads_locked() {
    for (auto& t : inline_batch_) threads_.submit([this, t] { execute(*t, true); });
    inline_batch_.clear();
  }

  // mu_ held: the thread running inline keeps its task; another thread takes the reading. The
  // caller then flushes (outside mu_) the done frames of the tasks that thread finished already.
  void hand_off_reading_locked() {
    inline_active_ = false;
    give_threads_locked();
    const uint64_t turn = ++reader_turn_;
    threads_.submit([this, turn] { read_frames(turn); });
  }

  // A task about to wait for the worker's reply must not hold the reading: the reply would wait
  // for it.
  void before_reply_wait() {
    {
      std::lock_guard lock(mu_);
      if (!inline_active_ || inline_thread_ != std::this_thread::get_id()) return;
      hand_off_reading_locked();
    }
    channel_.flush();
  }

  // Hands the reading off when one inline task runs past kInlineTakeover. Looks every
  // kInlineTakeover while batches run inline; parks once none has for that long, so an idle
  // runner has no timer.
  void watch_inline() {
    std::unique_lock lock(mu_);
    uint64_t seen_batches = 0;
    while (true) {
      if (!inline_active_ && inline_batches_ == seen_batches) {
        watcher_parked_ = true;
        watcher_cv_.wait(lock, [&] { return inline_active_; });
        watcher_parked_ = false;
      }
      seen_batches = inline_batches_;
      const bool active = inline_active_;
      const uint64_t seq = inline_seq_;
      watcher_cv_.wait_for(lock, kInlineTakeover);
      if (active && inline_active_ && inline_seq_ == seq) {
        hand_off_reading_locked();
        lock.unlock();
        channel_.flush();
        lock.lock();
      }
    }
  }

  // mu_ held: whether a task of `type` runs where it was read.
  bool runs_inline_locked(const std::string& type) const {
    const auto it = durations_.find(type);
    return it != durations_.end() && it->second.runs >= kInlineAfterRuns && it->second.average < inline_max_;
  }

  void on_frame(Kind kind, uint64_t id, std::string_view body) {
    wire::Reader r(body);
    switch (kind) {
      case Kind::hello: {
        auto hello = std::make_shared<wire::Hello>(wire::decode_hello(r));
        {
          std::lock_guard lock(mu_);
          inline_max_ = std::chrono::microseconds(std::max<int64_t>(0, hello->inline_max_us));
        }
        // init() may call the worker (migrations): never on this thread, which reads the replies.
        std::thread([this, hello] { load(*hello); }).detach();
        return;
      }
      case Kind::run: {
        auto t = std::make_shared<RunningTask>(rpc_, id, wire::decode_task(r));
        ids_.add(&t->cancellation, id);
        std::lock_guard lock(mu_);
        tasks_[id] = t;
        if (runs_inline_locked(t->task.type)) {
          inline_batch_.push_back(std::move(t));
        } else {
          threads_.submit([this, t] { execute(*t, true); });
        }
        return;
      }
      case Kind::cancel: {
        const auto reason = static_cast<task::CancelReason>(r.i32());
        std::shared_ptr<RunningTask> t;
        {
          std::lock_guard lock(mu_);
          if (auto it = tasks_.find(id); it != tasks_.end()) t = it->second;
        }
        if (t) t->cancellation.cancel(reason);  // runs the plugin's on_cancel here, as in process
        return;
      }
      case Kind::reply:
        rpc_.on_reply(id, body);
        return;
      case Kind::admit: {
        std::lock_guard lock(mu_);
        admission_.verdict = static_cast<plugins::Admission::Verdict>(std::min<uint8_t>(r.u8(), 2));
        admission_.reason = r.str();
        admitted_ = true;
        cv_.notify_all();
        return;
      }
      case Kind::ping:
        channel_.send(Kind::pong, id);
        return;
      case Kind::shutdown:
        std::thread([this] { shut_down(); }).detach();
        return;
      default:
        throw wire::WireError("unexpected frame kind " + std::to_string(static_cast<int>(kind)));
    }
  }

  void load(const wire::Hello& hello) {
    use_alternate_signal_stack();
    const auto level = static_cast<log::Level>(std::clamp(hello.log_level, 0, 4));
    auto logger =
        log::Logger::forwarding(level, [this](log::Level l, std::string_view msg, const log::Fields& fields) {
          wire::Writer w;
          wire::encode_log(w, l, msg, fields);
          channel_.send(Kind::log, 0, w.data());
        });
    plugins::HostOptions options;
    options.staging_dir = hello.staging_dir;
    options.shutdown_grace = std::chrono::milliseconds(hello.shutdown_grace_ms);
    options.admit = [this](const plugins::PluginInfo& info) {
      wire::Writer declared;
      wire::encode(declared, info);
      channel_.send(Kind::declared, 0, declared.data());
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return admitted_; });
      return admission_;
    };
    owned_host_ =
        std::make_unique<plugins::PluginHost>(logger, hello.config, hello.has_pool ? &pool_ : nullptr,
                                              hello.has_enqueuer ? &enqueuer_ : nullptr, options);
    wire::Writer w;
    const auto refusal = owned_host_->load_file(hello.plugin_file);
    const auto loaded = owned_host_->plugins();
    host_.store(owned_host_.get(), std::memory_order_release);
    if (refusal || loaded.empty()) {
      w.u8(0);
      w.str(refusal ? refusal->reason : "not loaded");
    } else {
      w.u8(1);
      wire::encode(w, loaded.front());
    }
    channel_.send(Kind::loaded, 0, w.data());
  }

  // Runs `t` and sends its done frame (`flush`) or queues it for the next write.
  void execute(RunningTask& t, bool flush) {
    t_call_id = t.call_id;
    task::Execution execution{t.task, t.cancellation, t.services, t.staged};
    plugins::PluginHost* host = host_.load(std::memory_order_acquire);
    const auto started = SteadyClock::now();
    const task::Outcome outcome =
        host != nullptr ? host->dispatch(execution)
                        : task::Outcome{task::Disposition::requeue, "plugin not loaded yet", {}, {}};
    const auto took = SteadyClock::now() - started;
    t_call_id = 0;
    ids_.remove(&t.cancellation);
    wire::Writer w;
    wire::encode(w, outcome);
    w.u64(t.staged.size());
    for (const auto& request : t.staged) wire::encode(w, request);
    {
      std::lock_guard lock(mu_);
      tasks_.erase(t.call_id);
      if (host != nullptr) {
        Duration& d = durations_[t.task.type];
        d.average = d.runs == 0 ? took : (d.average * 7 + took) / 8;
        if (d.runs < kInlineAfterRuns) ++d.runs;
      }
    }
    if (flush) {
      channel_.send(Kind::done, t.call_id, w.data());
    } else {
      channel_.post(Kind::done, t.call_id, w.data());
    }
  }

  void shut_down() {
    if (owned_host_) owned_host_->shutdown();
    host_.store(nullptr, std::memory_order_release);  // a late run frame finds no host, not a freed one
    owned_host_.reset();                              // removes the staging directory
    ::_exit(0);
  }

  Channel channel_;
  RpcClient rpc_;
  CallIds ids_;
  RemotePool pool_;
  RemoteEnqueuer enqueuer_;
  ElasticThreads threads_{use_alternate_signal_stack};
  std::unique_ptr<plugins::PluginHost> owned_host_;  // made by the loading thread
  std::atomic<plugins::PluginHost*> host_{nullptr};  // what task threads read
  std::mutex mu_;
  std::condition_variable cv_;
  bool admitted_ = false;
  plugins::Admission admission_;
  std::map<uint64_t, std::shared_ptr<RunningTask>> tasks_;
  bool channel_ended_ = false;
  // The reading and the tasks run where they were read (mu_).
  uint64_t reader_turn_ = 1;  // whose turn it is to read (read_frames)
  std::deque<std::shared_ptr<RunningTask>> inline_batch_;
  bool inline_active_ = false;  // a reading thread runs tasks (inline_thread_)
  std::thread::id inline_thread_;
  uint64_t inline_batches_ = 0;  // batches begun
  uint64_t inline_seq_ = 0;      // inline tasks begun
  bool watcher_parked_ = false;
  std::condition_variable watcher_cv_;
  struct Duration {
    SteadyClock::duration average{};
    uint32_t runs = 0;
  };
  std::map<std::string, Duration, std::less<>> durations_;
  std::chrono::microseconds inline_max_{0};  // from the hello
};

}  // namespace

int run_plugin_runner(int channel_fd, int crash_fd, pid_t worker_pid) {
  // Die with the worker: a runner never outlives the process that feeds it tasks.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != worker_pid) return 1;  // the worker died before prctl took effect
  // Not for the plugin's own children (git, agents): they must not hold the channel open after
  // the runner dies, or the worker would not see it die.
  ::fcntl(channel_fd, F_SETFD, FD_CLOEXEC);
  ::fcntl(crash_fd, F_SETFD, FD_CLOEXEC);
  install_crash_handlers(crash_fd);
  use_alternate_signal_stack();
  // Terminal signals are for the worker, which stops runners in order.
  std::signal(SIGINT, SIG_IGN);
  std::signal(SIGTERM, SIG_IGN);
  std::signal(SIGPIPE, SIG_IGN);
  Runner runner(channel_fd);
  return runner.run();
}

}  // namespace wk::runner
