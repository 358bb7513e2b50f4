// RunnerHost: the worker's side of plugin isolation. Starts one runner process per plugin file,
// hands it tasks, serves its calls (database, enqueue, result), watches it (liveness, memory)
// and, when it dies, hands its tasks back to their queues and restarts it.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <shared_mutex>
#include <thread>

#include "db/db.hpp"
#include "plugins/loader.hpp"
#include "runner/channel.hpp"
#include "runner/output_relay.hpp"
#include "runner/runner.hpp"
#include "runner/threads.hpp"

extern char** environ;

namespace wk::runner {
namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;
using wire::Kind;
using wire::Op;

namespace {

constexpr auto kLoadTimeout = std::chrono::minutes(2);
constexpr auto kHealthyLifetime = std::chrono::minutes(1);
constexpr auto kTick = std::chrono::milliseconds(100);
constexpr auto kStopSlack = std::chrono::seconds(2);
constexpr auto kDeafGrace = std::chrono::seconds(5);  // as the engine's deadline grace

std::string signal_name(int signo) {
  const char* abbrev = ::sigabbrev_np(signo);
  return abbrev != nullptr ? std::string("SIG") + abbrev : "signal " + std::to_string(signo);
}

// An fd moved above the standard ones and the two the child gets (3, 4), close-on-exec.
posix::UniqueFd high_fd(posix::UniqueFd fd) {
  const int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 10);
  if (moved < 0) throw std::runtime_error(std::string("fcntl: ") + std::strerror(errno));
  return posix::UniqueFd(moved);  // `fd`, the original, closes here
}

// Both ends of a fresh pipe or socket pair, owned at once (nothing leaks when a later step
// throws) and moved high.
std::pair<posix::UniqueFd, posix::UniqueFd> high_pair(const int (&raw)[2]) {
  posix::UniqueFd first(raw[0]), second(raw[1]);
  posix::UniqueFd first_high = high_fd(std::move(first));
  return {std::move(first_high), high_fd(std::move(second))};
}

std::pair<posix::UniqueFd, posix::UniqueFd> make_pipe() {
  int raw[2];
  if (::pipe2(raw, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  return high_pair(raw);
}

// The crash report's frames, for one log field: the signal handler's own frames dropped, each
// frame's file without its directory (the staged copy's private path says nothing).
std::string short_backtrace(const std::string& report) {
  std::vector<std::string> frames;
  size_t pos = report.find('\n');  // the first line is "signal N call C"
  while (pos != std::string::npos && pos + 1 < report.size()) {
    const size_t end = std::min(report.find('\n', pos + 1), report.size());
    std::string frame = report.substr(pos + 1, end - pos - 1);
    if (const size_t paren = frame.find('('), slash = frame.rfind('/', paren); slash != std::string::npos)
      frame.erase(0, slash + 1);
    frames.push_back(std::move(frame));
    pos = end < report.size() ? end : std::string::npos;
  }
  // Frames up to the kernel's signal trampoline (in libc) belong to the handler.
  size_t first = 0;
  for (size_t i = 0; i < std::min<size_t>(frames.size(), 4); ++i) {
    if (frames[i].rfind("libc.so", 0) == 0) {
      first = i + 1;
      break;
    }
  }
  std::string out;
  for (size_t i = first; i < frames.size() && i < first + 10; ++i)
    out += (out.empty() ? "" : " | ") + frames[i];
  return out;
}

uint64_t resident_bytes(pid_t pid) {
  std::ifstream statm("/proc/" + std::to_string(pid) + "/statm");
  uint64_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return resident * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

// One attempt of one task in a runner. Either the dispatching engine thread waits for it
// (dispatch(): `completion` is null, `cv` wakes it), or nobody does (start(): `completion` gets
// the outcome from whichever thread sees the attempt over last).
struct Call {
  Call(task::Execution& e, task::AttemptCompletion* c) : execution(e), completion(c) {}
  task::Execution& execution;
  task::AttemptCompletion* const completion;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  task::Outcome outcome;
  std::vector<task::EnqueueRequest> staged;
  int active_rpcs = 0;  // worker-side calls running for it: the Execution must outlive them
  bool runner_died = false;
  task::Cancellation::Token cancel_token = 0;  // start(): forwards the engine's cancellation
  bool completed = false;                      // start(): `completion` was called
};

// The listeners to tell burst_over() (task::OutcomeBurstListener) for the outcomes one thread
// delivered: told when it is destroyed or over() is called, which the thread does before it
// blocks, holding none of our locks.
class OutcomeBurst {
 public:
  OutcomeBurst() = default;
  ~OutcomeBurst() { over(); }
  OutcomeBurst(const OutcomeBurst&) = delete;
  OutcomeBurst& operator=(const OutcomeBurst&) = delete;
  void add(task::OutcomeBurstListener* listener) {
    if (listener == nullptr) return;
    const auto it = std::find_if(listeners_.begin(), listeners_.end(),
                                 [&](const auto& entry) { return entry.first == listener; });
    if (it == listeners_.end()) {
      listeners_.emplace_back(listener, 1);
    } else {
      ++it->second;
    }
  }
  void over() {
    if (listeners_.empty()) return;
    told_.swap(listeners_);
    for (const auto& [listener, outcomes] : told_) listener->burst_over(outcomes);
    told_.clear();
  }

 private:
  std::vector<std::pair<task::OutcomeBurstListener*, size_t>> listeners_;
  std::vector<std::pair<task::OutcomeBurstListener*, size_t>> told_;  // kept for its capacity
};

// The attempt is over once its outcome is there and no worker-side call of its runs any more.
// `lock` holds call->mu and is released. A waiting dispatch() is woken; a started attempt's
// outcome goes to its completion, here, once, and its listener joins `burst`.
void settle_call(const std::shared_ptr<Call>& call, std::unique_lock<std::mutex>& lock, OutcomeBurst& burst) {
  if (call->completion == nullptr) {
    lock.unlock();
    call->cv.notify_all();
    return;
  }
  if (!call->done || call->active_rpcs > 0 || call->completed) return;
  call->completed = true;
  const task::Cancellation::Token token = std::exchange(call->cancel_token, 0);
  lock.unlock();
  task::Execution& execution = call->execution;
  if (token != 0) execution.cancellation.remove(token);
  for (auto& s : call->staged) execution.staged.push_back(std::move(s));
  burst.add(call->completion->burst_listener());
  call->completion->finished(std::move(call->outcome));
}

// How a runner ended.
struct Death {
  std::string reason;  // "crashed (SIGSEGV)", "exited with status 3", "memory limit ..."
  std::string signal;  // "SIGSEGV", or empty
  int exit_status = -1;
  std::string backtrace;
  bool expected = false;  // asked to stop
};

struct Entry;

// One runner process, seen from the worker.
struct RunnerProcess {
  pid_t pid = 0;
  std::unique_ptr<Channel> channel;
  int crash_fd = -1;
  std::thread reader;
  std::atomic<bool> finished{false};  // the reader thread is done (joinable at once)
  std::weak_ptr<Entry> entry;         // set once it serves a plugin (or runs one suspect)
  bool quarantine = false;            // a fresh runner for one crash suspect, stopped after it
  SteadyClock::time_point started = SteadyClock::now();
  SteadyClock::time_point last_ping = started;
  std::atomic<int64_t> last_pong_ticks{started.time_since_epoch().count()};
  uint64_t ping_seq = 0;

  std::mutex mu;
  std::condition_variable cv;
  std::optional<plugins::PluginInfo> declared;  // what the file declares (before init)
  bool load_answered = false;
  std::optional<plugins::PluginInfo> info;  // loaded and initialised
  std::string refusal;
  std::map<uint64_t, std::shared_ptr<Call>> calls;
  struct Tx {
    uint64_t call_id = 0;
    std::mutex mu;  // one statement at a time on a transaction's connection
    std::unique_ptr<db::Transaction> tx;
  };
  std::map<uint64_t, std::shared_ptr<Tx>> txs;
  uint64_t next_tx = 0;
  bool dead = false;
  bool stopping = false;    // shutdown frame sent: its exit is expected
  std::string kill_reason;  // why the supervisor killed it
  Death death;

  ~RunnerProcess() {
    // The last reference may be dropped by the reader thread itself (its closure holds one).
    if (reader.joinable()) {
      if (reader.get_id() == std::this_thread::get_id()) {
        reader.detach();
      } else {
        reader.join();
      }
    }
    if (crash_fd >= 0) ::close(crash_fd);
  }
  void kill(std::string reason) {
    {
      std::lock_guard lock(mu);
      if (dead) return;
      if (kill_reason.empty()) kill_reason = std::move(reason);
    }
    ::kill(pid, SIGKILL);
  }
};

// A plugin file served by runners: the process serving it now, and its crash history.
struct Entry {
  fs::path file;
  plugins::PluginInfo info;
  std::shared_ptr<RunnerProcess> process;  // null while it restarts
  int crashes = 0;
  std::chrono::milliseconds backoff{0};
  SteadyClock::time_point restart_at{};
  std::mutex quarantine_mu;     // crash suspects run one at a time
  int consecutive_crashes = 0;  // deaths without a minute of service in between
  std::string last_death;
  bool draining = false;       // replaced or removed: no new tasks, its runner stops once idle
  std::string refused_sha256;  // a newer file that was refused: not retried until it changes
};

std::string join_types(const plugins::PluginInfo& info) {
  std::string out;
  for (const auto& h : info.handlers) out += (out.empty() ? "" : ",") + h.task_type;
  return out;
}

}  // namespace

struct RunnerHost::Impl {
  Impl(log::Logger l, plugins::ConfigSnapshot c, db::Pool* p, task::Enqueuer* e, RunnerOptions o)
      : logger(std::move(l)), config(std::move(c)), pool(p), enqueuer(e), options(std::move(o)) {}

  log::Logger logger;
  plugins::ConfigSnapshot config;
  db::Pool* pool;
  task::Enqueuer* enqueuer;
  RunnerOptions options;
  OutputRelay output;  // the runners' stdout and stderr, as log lines
  std::unique_ptr<plugins::detail::StagingDir> staging;
  std::unique_ptr<plugins::PluginHost> in_process;  // plugins listed in options.in_process
  std::atomic<uint64_t> next_call_id{0};

  std::mutex load_mu;  // loads are serialised
  mutable std::shared_mutex mu;
  std::condition_variable_any changed;  // an entry got its process back, or we stop
  std::vector<std::shared_ptr<Entry>> entries;
  std::map<std::string, std::shared_ptr<Entry>, std::less<>> routes;
  std::vector<std::shared_ptr<RunnerProcess>> processes;  // every runner not joined yet
  std::vector<std::shared_ptr<Entry>> draining;           // old versions finishing their tasks

  // Hot swap: the watched directory and its inotify descriptor (read by the supervisor).
  fs::path watched_dir;  // load_mu
  std::atomic<int> inotify_fd{-1};
  std::atomic<bool> rescan_requested{false};
  std::mutex rescan_reason_mu;
  std::string rescan_reason;
  bool stopping = false;
  bool shut_down = false;

  // Tasks that were in flight when a runner died beside other tasks: each runs next alone in a
  // fresh runner, where a crash can be blamed on it (docs/plugin-isolation.md).
  std::mutex suspects_mu;
  std::map<std::string, SteadyClock::time_point> suspects;  // task id -> when marked
  std::map<std::string, int64_t> local_crashes;             // counts without a ledger

  std::mutex supervisor_mu;
  std::condition_variable supervisor_cv;
  bool supervisor_stop = false;
  std::thread supervisor;

  // Declared last: destroyed (joined) first, while everything its jobs touch is alive.
  std::unique_ptr<ElasticThreads> services = std::make_unique<ElasticThreads>();

  mutable std::mutex refused_mu;
  std::vector<plugins::Refusal> refused;  // every file that never served, for status()

  // Logs (unless the runner already did) and records a refusal.
  plugins::Refusal refuse(const fs::path& file, std::string reason, bool log = true) {
    if (log) logger.error("plugin refused", {{"file", file.string()}, {"reason", reason}});
    std::lock_guard lock(refused_mu);
    refused.push_back(plugins::Refusal{file, reason});
    return plugins::Refusal{file, std::move(reason)};
  }

  std::shared_ptr<RunnerProcess> spawn(const fs::path& file);
  // Waits (bounded) until `ready` or the runner's death; false when it died.
  bool await(const std::shared_ptr<RunnerProcess>& p, const std::function<bool()>& ready);
  // Runs the two-step load: `decide` judges what the file declares; then init. nullopt when the
  // plugin serves; otherwise the reason it does not (the runner has logged a refusal, if any).
  std::optional<std::string> admit(
      const std::shared_ptr<RunnerProcess>& p,
      const std::function<plugins::Admission(const plugins::PluginInfo&)>& decide);
  void read(const std::shared_ptr<RunnerProcess>& p);
  void on_frame(const std::shared_ptr<RunnerProcess>& p, Kind kind, uint64_t id, std::string_view body,
                OutcomeBurst& burst);
  void serve(const std::shared_ptr<RunnerProcess>& p, uint64_t rpc_id, const std::string& body);
  void on_death(const std::shared_ptr<RunnerProcess>& p, const std::string& why);
  void stop_process(const std::shared_ptr<RunnerProcess>& p);
  void supervise();
  void restart(const std::shared_ptr<Entry>& entry);
  // The next restart of `entry`'s runner, with its backoff (mu held).
  void schedule_restart(Entry& entry, bool fresh);
  void crashed(Entry& entry, const std::shared_ptr<RunnerProcess>& p);
  void request_rescan_reason(std::string why) {
    {
      std::lock_guard lock(rescan_reason_mu);
      rescan_reason = std::move(why);
    }
    rescan_requested = true;
    supervisor_cv.notify_all();
  }
  void rescan();
  std::optional<plugins::Refusal> load_new(const fs::path& file);  // load_mu held
  // A changed file of a serving plugin: the new version takes over once it has loaded.
  void upgrade(const std::shared_ptr<Entry>& old, const fs::path& file);
  // No new tasks for `entry`; its runner is stopped by the supervisor once idle. mu held.
  void retire(std::shared_ptr<Entry> entry);
  void stop_drained();

  // Starts one attempt on `p` without waiting for it: its run frame is posted (flush_started
  // writes it) and `done` gets the outcome. False when `p` takes no tasks any more.
  bool start_call(const std::shared_ptr<RunnerProcess>& p, task::Execution& execution,
                  task::AttemptCompletion& done);
  // The runners whose channels hold posted run frames.
  std::mutex unflushed_mu;
  std::vector<std::shared_ptr<RunnerProcess>> unflushed;
  // One attempt on `p`; `died` tells whether the runner died under it.
  task::Outcome run_call(const std::shared_ptr<RunnerProcess>& p, const std::string& plugin_id,
                         task::Execution& execution, bool& died, bool kill_if_deaf = false);
  task::Outcome run_quarantined(const std::shared_ptr<Entry>& entry, task::Execution& execution);
  bool is_suspect(const std::string& task_id);
  void mark_suspects(const std::vector<std::string>& task_ids);
  void clear_suspect(const std::string& task_id);
  // The outcome of the one task of a quarantine runner that died: counted, archived at the limit.
  task::Outcome blame(const task::Task& t, const std::string& plugin, const std::string& reason);
};

std::shared_ptr<RunnerProcess> RunnerHost::Impl::spawn(const fs::path& file) {
  if (!staging) staging = std::make_unique<plugins::detail::StagingDir>(options.host.staging_dir, true);
  // The runner's stdout and stderr: pipes whose lines the worker logs in its own format.
  auto [out_read, out_write] = make_pipe();
  auto [err_read, err_write] = make_pipe();
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    throw std::runtime_error(std::string("socketpair: ") + std::strerror(errno));
  auto [ours, theirs] = high_pair(sv);
  auto [crash_read, crash_write] = make_pipe();

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_write.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, err_write.get(), 2);
  posix_spawn_file_actions_adddup2(&actions, theirs.get(), 3);
  posix_spawn_file_actions_adddup2(&actions, crash_write.get(), 4);
  // Nothing else of the worker's (Redis and PostgreSQL sockets, other runners' channels).
  posix_spawn_file_actions_addclosefrom_np(&actions, 5);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  // A group of its own: a Ctrl-C meant for the worker does not reach its runners.
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);

  const std::string exe = options.executable.string();
  const std::string parent = std::to_string(::getpid());
  // argv[0] and the file name are for `ps`: which worker, which plugin.
  std::error_code ignored;
  const fs::path program = fs::read_symlink(options.executable, ignored);
  std::vector<std::string> args = {program.empty() ? exe : program.string(),
                                   "--plugin-runner",
                                   "3",
                                   "4",
                                   parent,
                                   file.filename().string()};
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, exe.c_str(), &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  theirs.reset();  // the child's copies are its own now
  crash_write.reset();
  out_write.reset();
  err_write.reset();
  if (rc != 0) throw std::runtime_error("cannot start a plugin runner (" + exe + "): " + std::strerror(rc));
  std::shared_ptr<RunnerProcess> p;
  try {
    if (options.open_files_max > 0) {
      const rlimit limit{options.open_files_max, options.open_files_max};
      ::prlimit(pid, RLIMIT_NOFILE, &limit, nullptr);
    }
    const log::Logger runner_output = logger.with({{"file", file.filename().string()}, {"runner_pid", pid}});
    output.add(std::move(out_read), runner_output, log::Level::info, "stdout");
    output.add(std::move(err_read), runner_output, log::Level::warn, "stderr");
    p = std::make_shared<RunnerProcess>();
    p->pid = pid;
    p->channel = std::make_unique<Channel>(ours.get());
    (void)ours.release();  // the channel owns it
    p->crash_fd = crash_read.release();
    {
      std::unique_lock lock(mu);
      processes.push_back(p);
    }
    p->reader = std::thread([this, p] { read(p); });
  } catch (...) {
    // The reader thread never started (its start is the last step that can throw): nobody would
    // supervise the runner just spawned, so stop and reap it rather than leave it behind.
    if (p) {
      std::unique_lock lock(mu);
      std::erase(processes, p);
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw;
  }

  wire::Hello hello;
  hello.plugin_file = file.string();
  hello.staging_dir = staging->path().string();
  hello.log_level = static_cast<int32_t>(logger.level());
  hello.shutdown_grace_ms = options.host.shutdown_grace.count();
  hello.inline_max_us = options.inline_max.count();
  hello.has_pool = pool != nullptr;
  hello.has_enqueuer = enqueuer != nullptr;
  hello.config = config;
  wire::Writer w;
  wire::encode(w, hello);
  p->channel->send(Kind::hello, 0, w.data());

  return p;
}

bool RunnerHost::Impl::await(const std::shared_ptr<RunnerProcess>& p, const std::function<bool()>& ready) {
  std::unique_lock lock(p->mu);
  if (!p->cv.wait_for(lock, kLoadTimeout, [&] { return ready() || p->dead; })) {
    lock.unlock();
    p->kill("no answer while loading the plugin");
    lock.lock();
    p->cv.wait(lock, [&] { return p->dead; });
  }
  return !p->dead;
}

std::optional<std::string> RunnerHost::Impl::admit(
    const std::shared_ptr<RunnerProcess>& p,
    const std::function<plugins::Admission(const plugins::PluginInfo&)>& decide) {
  if (!await(p, [&] { return p->declared.has_value() || p->load_answered; })) {
    return "its runner " + p->death.reason + " while loading the plugin";
  }
  plugins::Admission admission;
  {
    std::lock_guard lock(p->mu);
    if (!p->declared) return p->refusal;  // refused before it declared anything (preflight)
    admission = decide(*p->declared);
  }
  wire::Writer w;
  w.u8(static_cast<uint8_t>(admission.verdict));
  w.str(admission.reason);
  p->channel->send(Kind::admit, 0, w.data());
  if (!await(p, [&] { return p->load_answered; })) {
    return "its runner " + p->death.reason + " while initialising the plugin";
  }
  std::lock_guard lock(p->mu);
  if (!p->info) return p->refusal;
  return std::nullopt;
}

void RunnerHost::Impl::read(const std::shared_ptr<RunnerProcess>& p) {
  // The outcomes of one read are delivered together: their engine writes them, and dequeues what
  // fills their slots, before the next read (task::OutcomeBurstListener).
  OutcomeBurst burst;
  const std::string why =
      p->channel->read_loop([this, &p, &burst](Kind kind, uint64_t id,
                                               std::string_view body) { on_frame(p, kind, id, body, burst); },
                            [&burst] { burst.over(); });
  burst.over();
  on_death(p, why);
  p->finished = true;
  supervisor_cv.notify_all();
}

void RunnerHost::Impl::on_frame(const std::shared_ptr<RunnerProcess>& p, Kind kind, uint64_t id,
                                std::string_view body, OutcomeBurst& burst) {
  wire::Reader r(body);
  switch (kind) {
    case Kind::declared: {
      std::lock_guard lock(p->mu);
      p->declared = wire::decode_plugin_info(r);
      p->cv.notify_all();
      return;
    }
    case Kind::loaded: {
      std::lock_guard lock(p->mu);
      if (r.u8() != 0) {
        p->info = wire::decode_plugin_info(r);
      } else {
        p->refusal = r.str();
      }
      p->load_answered = true;
      p->cv.notify_all();
      return;
    }
    case Kind::done: {
      task::Outcome outcome = wire::decode_outcome(r);
      std::vector<task::EnqueueRequest> staged(r.count(8));
      for (auto& s : staged) s = wire::decode_enqueue_request(r);
      std::shared_ptr<Call> call;
      std::vector<std::shared_ptr<RunnerProcess::Tx>> leaked;
      {
        std::lock_guard lock(p->mu);
        auto it = p->calls.find(id);
        if (it == p->calls.end()) return;  // already handed back (a liveness kill raced it)
        call = it->second;
        p->calls.erase(it);
        for (auto tx = p->txs.begin(); tx != p->txs.end();) {
          if (tx->second->call_id == id) {
            leaked.push_back(tx->second);
            tx = p->txs.erase(tx);
          } else {
            ++tx;
          }
        }
      }
      leaked.clear();  // rolled back by their destructors
      std::unique_lock lock(call->mu);
      call->outcome = std::move(outcome);
      call->staged = std::move(staged);
      call->done = true;
      settle_call(call, lock, burst);
      return;
    }
    case Kind::log: {
      const auto level = static_cast<log::Level>(std::min<uint8_t>(r.u8(), 4));
      const std::string message = r.str();
      log::Fields fields;
      const size_t n = r.count(16);
      fields.reserve(n);
      for (size_t i = 0; i < n; ++i) {
        std::string key = r.str();
        fields.emplace_back(key, r.str());
      }
      logger.log(level, message, fields);
      return;
    }
    case Kind::call:
      services->submit([this, p, id, request = std::string(body)] { serve(p, id, request); });
      return;
    case Kind::pong:
      p->last_pong_ticks = SteadyClock::now().time_since_epoch().count();
      return;
    default:
      throw wire::WireError("unexpected frame kind " + std::to_string(static_cast<int>(kind)));
  }
}

void RunnerHost::Impl::serve(const std::shared_ptr<RunnerProcess>& p, uint64_t rpc_id,
                             const std::string& body) {
  wire::Reader in(body);
  wire::Writer out;
  out.u8(1);
  // The call (task attempt) a request belongs to: its Execution gives the deadline, the
  // cancellation and the result writer, and must stay alive while we use it.
  std::shared_ptr<Call> call;
  auto enter = [&](uint64_t call_id) {
    if (call_id == 0) return;
    std::lock_guard lock(p->mu);
    auto it = p->calls.find(call_id);
    if (it == p->calls.end()) throw std::runtime_error("the task of this call has finished");
    call = it->second;
    std::lock_guard call_lock(call->mu);
    ++call->active_rpcs;
  };
  auto call_options = [&](bool binary) {
    db::CallOptions o;
    o.binary_results = binary;
    if (call) {
      const task::Task& t = call->execution.task;
      if (t.deadline != task::Clock::time_point{}) o.deadline = t.deadline;
      o.cancellation = &call->execution.cancellation;
    }
    return o;
  };
  auto need_pool = [&]() -> db::Pool& {
    if (pool == nullptr) throw std::runtime_error("no database in this worker");
    return *pool;
  };
  auto find_tx = [&](uint64_t tx_id, bool take) {
    std::lock_guard lock(p->mu);
    auto it = p->txs.find(tx_id);
    if (it == p->txs.end()) throw std::invalid_argument("transaction is closed");
    auto tx = it->second;
    if (take) p->txs.erase(it);
    return tx;
  };
  try {
    const auto op = static_cast<Op>(in.u8());
    switch (op) {
      case Op::query: {
        enter(in.u64());
        const std::string sql = in.str();
        const auto params = wire::decode_params(in);
        const bool binary = in.u8() != 0;
        wire::encode(out, *need_pool().query(sql, params, call_options(binary)));
        break;
      }
      case Op::begin: {
        const uint64_t call_id = in.u64();
        enter(call_id);
        auto tx = std::make_shared<RunnerProcess::Tx>();
        tx->call_id = call_id;
        tx->tx = need_pool().begin(call_options(false));
        std::lock_guard lock(p->mu);
        const uint64_t tx_id = ++p->next_tx;
        p->txs[tx_id] = tx;
        out.u64(tx_id);
        break;
      }
      case Op::tx_query: {
        auto tx = find_tx(in.u64(), false);
        enter(tx->call_id);
        const std::string sql = in.str();
        const auto params = wire::decode_params(in);
        const bool binary = in.u8() != 0;
        std::lock_guard lock(tx->mu);
        wire::encode(out, *tx->tx->query(sql, params, call_options(binary)));
        break;
      }
      case Op::tx_commit: {
        auto tx = find_tx(in.u64(), true);
        enter(tx->call_id);
        std::lock_guard lock(tx->mu);
        tx->tx->commit();
        break;
      }
      case Op::tx_rollback: {
        auto tx = find_tx(in.u64(), true);
        std::lock_guard lock(tx->mu);
        tx->tx->rollback();
        break;
      }
      case Op::tx_once: {
        auto tx = find_tx(in.u64(), false);
        enter(tx->call_id);
        const std::string key = in.str();
        std::lock_guard lock(tx->mu);
        out.u8(tx->tx->once(key) ? 1 : 0);
        break;
      }
      case Op::migrate: {
        const std::string plugin_id = in.str();
        need_pool().migrate(plugin_id, wire::decode_migrations(in));
        break;
      }
      case Op::healthy:
        out.u8(pool != nullptr && pool->healthy() ? 1 : 0);
        break;
      case Op::enqueue:
        if (enqueuer == nullptr) throw std::runtime_error("immediate enqueue is not available here");
        out.str(enqueuer->enqueue(wire::decode_enqueue_request(in)));
        break;
      case Op::validate:
        if (enqueuer != nullptr) enqueuer->validate(wire::decode_enqueue_request(in));
        break;
      case Op::heartbeat: {
        enter(in.u64());
        task::Progress progress;
        progress.done = in.u64();
        progress.total = in.u64();
        progress.note = in.str();
        if (call) call->execution.services.heartbeat(progress);
        break;
      }
      case Op::write_result: {
        enter(in.u64());
        if (!call) throw std::invalid_argument("write_result needs a task");
        out.u8(call->execution.services.write_result(in.str_view()) ? 1 : 0);
        break;
      }
      default:
        throw std::invalid_argument("unknown call " + std::to_string(static_cast<int>(op)));
    }
  } catch (...) {
    out = wire::Writer();
    out.u8(0);
    wire::encode_current_exception(out);
  }
  OutcomeBurst burst;  // told once the reply is sent
  if (call) {
    std::unique_lock lock(call->mu);
    --call->active_rpcs;
    settle_call(call, lock, burst);
  }
  std::string frame;
  try {
    frame = wire::frame(Kind::reply, rpc_id, out.data());
  } catch (const wire::WireError& e) {  // a result over the frame limit: an error, not a crash
    wire::Writer too_large;
    too_large.u8(0);
    try {
      throw db::Error(db::ErrorKind::too_large, "",
                      std::string("result too large for the runner channel: ") + e.what());
    } catch (...) {
      wire::encode_current_exception(too_large);
    }
    frame = wire::frame(Kind::reply, rpc_id, too_large.data());
  }
  p->channel->send(std::move(frame));
}

void RunnerHost::Impl::on_death(const std::shared_ptr<RunnerProcess>& p, const std::string& why) {
  bool expected = false;
  {
    std::lock_guard lock(p->mu);
    expected = p->stopping;
  }
  p->channel->shutdown();
  int status = 0;
  if (!expected) {
    // It may still run (it closed its end, or sent garbage): it is done either way. A process
    // already exiting keeps the status it had.
    ::kill(p->pid, SIGKILL);
  }
  bool reaped = false;
  if (expected) {
    const auto until = SteadyClock::now() + options.host.shutdown_grace;
    while (!reaped && SteadyClock::now() < until) {
      reaped = ::waitpid(p->pid, &status, WNOHANG) == p->pid;
      if (!reaped) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!reaped) ::kill(p->pid, SIGKILL);  // not reaped yet: the pid is still ours
  }
  while (!reaped && ::waitpid(p->pid, &status, 0) < 0 && errno == EINTR) {
  }

  // The crash report, if the runner's handler wrote one: "signal N call C" and the frames.
  std::string report;
  ::fcntl(p->crash_fd, F_SETFL, O_NONBLOCK);
  char buf[4096];
  ssize_t n = 0;
  while (report.size() < size_t{64} * 1024 && (n = ::read(p->crash_fd, buf, sizeof buf)) > 0)
    report.append(buf, n);
  const std::string backtrace = short_backtrace(report);

  Death death;
  death.expected = expected;
  death.backtrace = backtrace;
  std::map<uint64_t, std::shared_ptr<Call>> calls;
  std::map<uint64_t, std::shared_ptr<RunnerProcess::Tx>> txs;
  std::shared_ptr<Entry> entry;
  bool loaded = false;
  std::string plugin = "(loading)";
  {
    std::lock_guard lock(p->mu);
    entry = p->entry.lock();
    loaded = p->load_answered;
    if (p->info) plugin = p->info->plugin_id;
    if (WIFSIGNALED(status)) {
      death.signal = signal_name(WTERMSIG(status));
      death.reason = "crashed (" + death.signal + ")";
    } else if (WIFEXITED(status)) {
      death.exit_status = WEXITSTATUS(status);
      death.reason = "exited with status " + std::to_string(death.exit_status);
    }
    if (!p->kill_reason.empty()) death.reason = p->kill_reason;
    if (!why.empty() && !expected && p->kill_reason.empty() && death.signal == "SIGKILL")
      death.reason = "broke the channel (" + why + ")";
    p->death = death;
    p->dead = true;
    calls.swap(p->calls);
    txs.swap(p->txs);
    p->cv.notify_all();
  }
  txs.clear();  // rolled back

  std::string tasks;
  for (const auto& [id, call] : calls) {
    const task::Task& t = call->execution.task;
    tasks += (tasks.empty() ? "" : ",") + t.id + ":" + t.type;
  }
  // Logged before the tasks are handed back: whoever sees them back can read why.
  if (loaded && !(expected && death.reason == "exited with status 0")) {
    log::Fields fields{{"plugin", plugin}, {"reason", death.reason}, {"pid", static_cast<int64_t>(p->pid)}};
    if (!death.signal.empty()) fields.emplace_back("signal", death.signal);
    if (death.exit_status >= 0) fields.emplace_back("exit_status", death.exit_status);
    fields.emplace_back("tasks_in_flight", static_cast<int64_t>(calls.size()));
    if (!tasks.empty()) fields.emplace_back("tasks", tasks);
    if (!death.backtrace.empty()) fields.emplace_back("backtrace", death.backtrace);
    logger.error("plugin runner died; its tasks go back to their queues", fields);
  }
  // The plugin's state first (no longer served by this runner, a restart due), so that a task
  // handed back below and dequeued again at once waits for the new runner.
  if (entry != nullptr && !expected && options.on_crash) {
    std::string kind = !death.signal.empty() ? death.signal : "exit";
    if (death.reason.rfind("memory limit", 0) == 0) kind = "memory_limit";
    if (death.reason.rfind("no answer to liveness", 0) == 0) kind = "liveness";
    if (death.reason.rfind("broke the channel", 0) == 0) kind = "channel";
    options.on_crash(plugin, kind);
  }
  if (entry != nullptr && !expected && p->quarantine) {
    std::unique_lock lock(mu);
    ++entry->crashes;  // the serving runner lives on; the count is the plugin's
  }
  if (entry != nullptr && !expected && !p->quarantine) crashed(*entry, p);
  // Alone in a fresh runner, the task is the culprit; beside others, each is only a suspect.
  const bool culprit_known = p->quarantine && calls.size() == 1 && !expected;
  if (!culprit_known && !expected) {
    std::vector<std::string> ids;
    ids.reserve(calls.size());
    for (const auto& [id, call] : calls) ids.push_back(call->execution.task.id);
    mark_suspects(ids);
  }
  OutcomeBurst burst;  // told once every task of the runner is settled
  for (const auto& [id, call] : calls) {
    task::Outcome outcome =
        culprit_known ? blame(call->execution.task, plugin, death.reason)
                      : task::Outcome{task::Disposition::requeue,
                                      "plugin " + plugin + " " + death.reason + " while running this task",
                                      {},
                                      {}};
    std::unique_lock lock(call->mu);
    call->outcome = std::move(outcome);
    call->runner_died = true;
    call->done = true;
    settle_call(call, lock, burst);
  }
}

void RunnerHost::Impl::crashed(Entry& entry, const std::shared_ptr<RunnerProcess>& p) {
  std::unique_lock lock(mu);
  if (entry.process != p) return;
  entry.process.reset();
  if (stopping || entry.draining) return;
  ++entry.crashes;
  entry.last_death = p->death.reason;
  const bool served_long = SteadyClock::now() - p->started >= kHealthyLifetime;
  entry.consecutive_crashes = served_long ? 1 : entry.consecutive_crashes + 1;
  schedule_restart(entry, served_long);
  logger.info("plugin runner restarts", {{"plugin", entry.info.plugin_id},
                                         {"in_ms", static_cast<int64_t>(entry.backoff.count())},
                                         {"crashes", entry.crashes}});
  supervisor_cv.notify_all();
}

void RunnerHost::Impl::schedule_restart(Entry& entry, bool fresh) {
  // From the minimum after a runner that served a while (or the first time); doubling otherwise.
  entry.backoff =
      fresh ? options.restart_backoff_min
            : std::min(std::max(entry.backoff * 2, options.restart_backoff_min), options.restart_backoff_max);
  entry.restart_at = SteadyClock::now() + entry.backoff;
}

void RunnerHost::Impl::restart(const std::shared_ptr<Entry>& entry) {
  std::shared_ptr<RunnerProcess> p;
  std::string problem;
  try {
    p = spawn(entry->file);
    const auto refusal = admit(p, [&](const plugins::PluginInfo& info) {
      if (info.plugin_id == entry->info.plugin_id && join_types(info) == join_types(entry->info))
        return plugins::Admission{};
      return plugins::Admission{plugins::Admission::Verdict::refuse,
                                "the file now holds plugin " + info.plugin_id + " with task types " +
                                    join_types(info) + ", not " + join_types(entry->info)};
    });
    if (refusal) problem = *refusal;
  } catch (const std::exception& e) {
    problem = e.what();
  }
  if (!problem.empty()) {
    if (p) stop_process(p);
    std::unique_lock lock(mu);
    schedule_restart(*entry, false);
    logger.error("plugin runner could not be restarted",
                 {{"plugin", entry->info.plugin_id},
                  {"reason", problem},
                  {"retry_in_ms", static_cast<int64_t>(entry->backoff.count())}});
    return;
  }
  {
    std::lock_guard lock(p->mu);
    if (p->dead) {  // died right after loading: its death found no entry to restart
      std::unique_lock host_lock(mu);
      schedule_restart(*entry, false);
      return;
    }
    p->entry = entry;
  }
  std::unique_lock lock(mu);
  if (stopping) {
    lock.unlock();
    stop_process(p);
    return;
  }
  entry->info = *p->info;
  entry->process = p;
  lock.unlock();
  changed.notify_all();
  logger.info("plugin runner restarted",
              {{"plugin", entry->info.plugin_id}, {"pid", static_cast<int64_t>(p->pid)}});
}

void RunnerHost::Impl::stop_process(const std::shared_ptr<RunnerProcess>& p) {
  {
    std::lock_guard lock(p->mu);
    if (p->dead) return;
    p->stopping = true;
  }
  if (!p->channel->send(Kind::shutdown, 0)) p->kill("its channel is closed");
  std::unique_lock lock(p->mu);
  // The plugin's shutdown() gets the grace; one that never returns does not hold us.
  if (!p->cv.wait_for(lock, options.host.shutdown_grace + kStopSlack, [&] { return p->dead; })) {
    lock.unlock();
    p->kill("did not stop within the shutdown grace");
    p->channel->shutdown();
    lock.lock();
    p->cv.wait(lock, [&] { return p->dead; });
  }
}

void RunnerHost::Impl::supervise() {
  std::unique_lock lock(supervisor_mu);
  while (!supervisor_stop) {
    supervisor_cv.wait_for(lock, kTick);
    if (supervisor_stop) break;
    lock.unlock();
    const auto now = SteadyClock::now();
    std::vector<std::shared_ptr<Entry>> due;
    std::vector<std::shared_ptr<RunnerProcess>> live, finished;
    {
      std::unique_lock host_lock(mu);
      for (const auto& e : entries) {
        if (!e->process && !stopping && now >= e->restart_at) due.push_back(e);
      }
      // Every runner is watched: serving, draining, loading, and those running one suspect.
      for (auto it = processes.begin(); it != processes.end();) {
        if ((*it)->finished) {
          finished.push_back(*it);
          it = processes.erase(it);
        } else {
          live.push_back(*it);
          ++it;
        }
      }
    }
    finished.clear();  // joins their reader threads
    for (const auto& p : live) {
      const SteadyClock::time_point last_pong{SteadyClock::duration(p->last_pong_ticks.load())};
      if (now - last_pong > options.liveness_timeout) {
        p->kill(
            "no answer to liveness checks for " +
            std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now - last_pong).count()) +
            " ms");
      }
      // After the check: a ping to a runner that stopped reading may block until it is killed.
      if (now - p->last_ping >= options.liveness_interval) {
        p->channel->send(Kind::ping, ++p->ping_seq);
        p->last_ping = now;
      }
      uint64_t limit = options.memory_max;
      {
        std::lock_guard p_lock(p->mu);
        const auto& plugin = p->info ? p->info : p->declared;
        if (plugin) {
          if (auto it = options.memory_max_by_plugin.find(plugin->plugin_id);
              it != options.memory_max_by_plugin.end()) {
            limit = it->second;
          }
        }
      }
      if (limit > 0) {
        const uint64_t rss = resident_bytes(p->pid);
        if (rss > limit) {
          p->kill("memory limit (" + std::to_string(rss) + " bytes resident, limit " + std::to_string(limit) +
                  ")");
        }
      }
    }
    for (const auto& e : due) restart(e);
    if (inotify_fd >= 0) {
      // Any change to a name in the directory: the rescan compares contents, so spurious events
      // (a temporary file, an attribute change) cost one directory listing.
      alignas(inotify_event) char events[4096];
      bool changed_files = false;
      while (::read(inotify_fd, events, sizeof events) > 0) changed_files = true;
      if (changed_files) request_rescan_reason("the plugin directory changed");
    }
    if (rescan_requested.exchange(false)) rescan();
    stop_drained();
    lock.lock();
  }
}

void RunnerHost::Impl::retire(std::shared_ptr<Entry> entry) {
  entry->draining = true;
  for (auto it = routes.begin(); it != routes.end();) {
    if (it->second == entry) {
      it = routes.erase(it);
    } else {
      ++it;
    }
  }
  std::erase(entries, entry);  // `entry` is our own copy: it may have been an element of `entries`
  draining.push_back(std::move(entry));
}

void RunnerHost::Impl::stop_drained() {
  std::vector<std::shared_ptr<Entry>> idle;
  {
    std::unique_lock lock(mu);
    for (auto it = draining.begin(); it != draining.end();) {
      const auto& p = (*it)->process;
      bool busy = false;
      if (p) {
        std::lock_guard p_lock(p->mu);
        busy = !p->calls.empty();
        if (!busy) p->stopping = true;  // run_call refuses it from now on
      }
      if (busy) {
        ++it;
      } else {
        idle.push_back(*it);
        it = draining.erase(it);
      }
    }
  }
  for (const auto& e : idle) {
    if (e->process) stop_process(e->process);
    logger.info(
        "plugin runner drained and stopped",
        {{"plugin", e->info.plugin_id}, {"version", e->info.plugin_version}, {"file", e->file.string()}});
  }
}

void RunnerHost::Impl::upgrade(const std::shared_ptr<Entry>& old, const fs::path& file) {
  std::shared_ptr<RunnerProcess> p;
  std::optional<std::string> refusal;
  try {
    p = spawn(file);
    refusal = admit(p, [&](const plugins::PluginInfo& info) -> plugins::Admission {
      using Verdict = plugins::Admission::Verdict;
      if (info.plugin_id != old->info.plugin_id) {
        return {Verdict::refuse,
                "the file now holds plugin " + info.plugin_id + ", not " + old->info.plugin_id};
      }
      std::shared_lock lock(mu);
      for (const auto& handler : info.handlers) {
        auto it = routes.find(handler.task_type);
        if (it != routes.end() && it->second != old) {
          return {Verdict::refuse, "task type \"" + handler.task_type + "\" is already served by plugin " +
                                       it->second->info.plugin_id};
        }
      }
      return {};
    });
  } catch (const std::exception& e) {
    refusal = e.what();
  }
  if (refusal) {
    if (p) stop_process(p);
    logger.error("plugin update refused; the version already loaded keeps serving",
                 {{"plugin", old->info.plugin_id},
                  {"serving_version", old->info.plugin_version},
                  {"file", file.string()},
                  {"reason", *refusal}});
    try {
      old->refused_sha256 = plugins::detail::file_sha256(file);
    } catch (const std::exception&) {
      old->refused_sha256.clear();  // unreadable now: the next rescan tries again
    }
    return;
  }
  auto entry = std::make_shared<Entry>();
  entry->file = file;
  {
    std::lock_guard lock(p->mu);
    if (p->dead) {
      logger.error("plugin update refused; the version already loaded keeps serving",
                   {{"plugin", old->info.plugin_id},
                    {"file", file.string()},
                    {"reason", "its runner " + p->death.reason + " right after loading"}});
      return;
    }
    entry->info = *p->info;
    p->entry = entry;
  }
  entry->process = p;
  {
    std::unique_lock lock(mu);
    if (stopping) {
      lock.unlock();
      stop_process(p);
      return;
    }
    retire(old);
    entries.push_back(entry);
    for (const auto& handler : entry->info.handlers) routes[handler.task_type] = entry;
  }
  changed.notify_all();
  logger.info("plugin updated; the old version finishes its tasks",
              {{"plugin", entry->info.plugin_id},
               {"from_version", old->info.plugin_version},
               {"to_version", entry->info.plugin_version},
               {"sha256", entry->info.sha256.substr(0, 16)},
               {"pid", static_cast<int64_t>(p->pid)}});
}

void RunnerHost::Impl::rescan() {
  std::string why;
  {
    std::lock_guard lock(rescan_reason_mu);
    why = rescan_reason;
  }
  fs::path dir;
  {
    std::lock_guard load_lock(load_mu);
    dir = watched_dir;
  }
  if (dir.empty()) return;
  logger.info("rescanning plugins", {{"dir", dir.string()}, {"reason", why}});
  std::vector<fs::path> files;
  try {
    files = plugins::detail::plugin_files(dir);
  } catch (const std::exception& e) {
    logger.error("plugin directory not rescanned", {{"dir", dir.string()}, {"error", e.what()}});
    return;
  }
  std::vector<std::shared_ptr<Entry>> serving;
  {
    std::unique_lock lock(mu);
    if (stopping) return;
    std::vector<std::shared_ptr<Entry>> removed;
    for (const auto& e : entries) {
      if (std::find(files.begin(), files.end(), e->file) == files.end()) removed.push_back(e);
    }
    for (const auto& e : removed) {  // retire() erases from `entries`: not while iterating it
      logger.info("plugin file removed; its runner stops once its tasks are done",
                  {{"plugin", e->info.plugin_id}, {"file", e->file.string()}});
      retire(e);
    }
    serving = entries;
  }
  changed.notify_all();
  for (const auto& file : files) {
    auto it = std::find_if(serving.begin(), serving.end(), [&](const auto& e) { return e->file == file; });
    if (it == serving.end()) {
      std::lock_guard load_lock(load_mu);
      (void)load_new(file);  // logs its own refusal
      continue;
    }
    std::string sha;
    try {
      sha = plugins::detail::file_sha256(file);
    } catch (const std::exception& e) {
      logger.error("plugin file unreadable", {{"file", file.string()}, {"error", e.what()}});
      continue;
    }
    if (sha == (*it)->info.sha256 || sha == (*it)->refused_sha256) continue;
    std::lock_guard load_lock(load_mu);
    upgrade(*it, file);
  }
}

RunnerHost::RunnerHost(log::Logger logger, plugins::ConfigSnapshot config, db::Pool* pool,
                       task::Enqueuer* enqueuer, RunnerOptions options)
    : impl_(
          std::make_unique<Impl>(std::move(logger), std::move(config), pool, enqueuer, std::move(options))) {
  Impl& m = *impl_;
  // Made once, before any thread reads it: trusted plugins are served here (never swapped).
  if (!m.options.in_process.empty()) {
    m.in_process =
        std::make_unique<plugins::PluginHost>(m.logger, m.config, m.pool, m.enqueuer, m.options.host);
  }
  impl_->supervisor = std::thread([this] { impl_->supervise(); });
}

RunnerHost::~RunnerHost() {
  shutdown();
  {
    std::lock_guard lock(impl_->supervisor_mu);
    impl_->supervisor_stop = true;
  }
  impl_->supervisor_cv.notify_all();
  impl_->supervisor.join();
  impl_->processes.clear();  // joins the reader threads
  if (impl_->inotify_fd >= 0) ::close(impl_->inotify_fd);
}

std::optional<plugins::Refusal> RunnerHost::load_file(const fs::path& file) {
  std::lock_guard load_lock(impl_->load_mu);
  return impl_->load_new(file);
}

std::optional<plugins::Refusal> RunnerHost::Impl::load_new(const fs::path& file) {
  Impl& m = *this;
  {
    std::shared_lock lock(m.mu);
    if (m.stopping) return m.refuse(file, "the plugin host is shutting down");
  }
  std::shared_ptr<RunnerProcess> p;
  try {
    p = m.spawn(file);
  } catch (const std::exception& e) {
    return m.refuse(file, e.what());
  }
  bool trusted = false;
  const auto refusal = m.admit(p, [&](const plugins::PluginInfo& info) -> plugins::Admission {
    using Verdict = plugins::Admission::Verdict;
    std::shared_lock lock(m.mu);
    for (const auto& other : m.entries) {
      if (other->info.plugin_id == info.plugin_id) {
        return {Verdict::refuse,
                "plugin id " + info.plugin_id + " is already loaded from " + other->file.string()};
      }
    }
    for (const auto& handler : info.handlers) {
      if (auto it = m.routes.find(handler.task_type); it != m.routes.end()) {
        return {Verdict::refuse, "task type \"" + handler.task_type + "\" of plugin " + info.plugin_id +
                                     " is already served by plugin " + it->second->info.plugin_id + " (" +
                                     it->second->file.string() + ")"};
      }
      if (m.in_process && m.in_process->handles(handler.task_type)) {
        return {Verdict::refuse, "task type \"" + handler.task_type + "\" of plugin " + info.plugin_id +
                                     " is already served by a plugin in the worker's process"};
      }
    }
    if (m.options.in_process.count(info.plugin_id) > 0) {
      trusted = true;  // trusted: served in this process; the runner only told us its id
      return {Verdict::withdraw, "served in the worker's process"};
    }
    return {};
  });
  if (trusted) {
    m.stop_process(p);
    return m.in_process->load_file(file);
  }
  if (refusal) {
    bool died = false;
    {
      std::lock_guard lock(p->mu);
      died = p->dead;
    }
    m.stop_process(p);
    // A refusal the runner's plugin host made is logged there; a death is ours to report.
    return m.refuse(file, *refusal, died);
  }
  plugins::PluginInfo info;
  {
    std::lock_guard lock(p->mu);
    info = *p->info;
  }
  auto entry = std::make_shared<Entry>();
  entry->file = file;
  entry->info = info;
  entry->process = p;
  {
    std::lock_guard lock(p->mu);
    // Died right after loading (a thread its init() started crashed): no entry was there to
    // restart it, so it is a failed load.
    if (p->dead) return m.refuse(file, "its runner " + p->death.reason + " right after loading the plugin");
    p->entry = entry;
  }
  {
    std::unique_lock lock(m.mu);
    m.entries.push_back(entry);
    for (const auto& handler : info.handlers) m.routes.emplace(handler.task_type, entry);
  }
  m.logger.info("plugin runner started", {{"plugin", info.plugin_id},
                                          {"version", info.plugin_version},
                                          {"pid", static_cast<int64_t>(p->pid)},
                                          {"task_types", join_types(info)},
                                          {"file", file.string()}});
  return std::nullopt;
}

std::vector<plugins::PluginInfo> RunnerHost::plugins() const {
  std::vector<plugins::PluginInfo> out;
  std::shared_lock lock(impl_->mu);
  for (const auto& e : impl_->entries) out.push_back(e->info);
  if (impl_->in_process) {
    for (auto& info : impl_->in_process->plugins()) out.push_back(std::move(info));
  }
  return out;
}

std::vector<plugins::PluginStatus> RunnerHost::status() const {
  constexpr int kCrashLoop = 3;  // deaths in a row, each within a minute of its start
  std::vector<plugins::PluginStatus> out;
  auto describe = [&](const Entry& e, bool draining) {
    plugins::PluginStatus s;
    s.plugin_id = e.info.plugin_id;
    s.version = e.info.plugin_version;
    s.file = e.file;
    s.crashes = e.crashes;
    if (const auto& p = e.process) {
      s.pid = p->pid;
      s.resident_bytes = resident_bytes(p->pid);
      std::lock_guard lock(p->mu);
      s.in_flight = static_cast<int64_t>(p->calls.size());
    }
    const bool looping = e.consecutive_crashes >= kCrashLoop &&
                         (!e.process || SteadyClock::now() - e.process->started < kHealthyLifetime);
    s.state = draining ? "draining" : looping ? "crash-looping" : e.process ? "serving" : "restarting";
    if (s.state != "serving" && s.state != "draining") s.reason = e.last_death;
    return s;
  };
  {
    std::shared_lock lock(impl_->mu);
    for (const auto& e : impl_->entries) out.push_back(describe(*e, false));
    for (const auto& e : impl_->draining) out.push_back(describe(*e, true));
  }
  if (impl_->in_process) {
    for (auto& s : impl_->in_process->status()) {
      if (s.state != "refused") out.push_back(std::move(s));
    }
  }
  std::lock_guard lock(impl_->refused_mu);
  for (const auto& r : impl_->refused) {
    plugins::PluginStatus s;
    s.file = r.file;
    s.state = "refused";
    s.reason = r.reason;
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<std::string> RunnerHost::task_types() const {
  std::vector<std::string> out;
  {
    std::shared_lock lock(impl_->mu);
    for (const auto& [type, entry] : impl_->routes) out.push_back(type);
  }
  if (impl_->in_process) {
    for (auto& t : impl_->in_process->task_types()) out.push_back(std::move(t));
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool RunnerHost::handles(std::string_view type) const {
  {
    std::shared_lock lock(impl_->mu);
    if (impl_->stopping) return false;
    if (impl_->routes.find(type) != impl_->routes.end()) return true;
  }
  return impl_->in_process && impl_->in_process->handles(type);
}

std::chrono::milliseconds RunnerHost::attempt_timeout(std::string_view type) const {
  {
    std::shared_lock lock(impl_->mu);
    const auto it = impl_->routes.find(type);
    if (it != impl_->routes.end()) {
      for (const auto& h : it->second->info.handlers) {
        if (h.task_type == type) return std::chrono::milliseconds(h.default_timeout_ms);
      }
      return std::chrono::milliseconds(0);
    }
  }
  return impl_->in_process ? impl_->in_process->attempt_timeout(type) : std::chrono::milliseconds(0);
}

uint32_t RunnerHost::max_concurrency(std::string_view type) const {
  {
    std::shared_lock lock(impl_->mu);
    const auto it = impl_->routes.find(type);
    if (it != impl_->routes.end()) {
      for (const auto& h : it->second->info.handlers) {
        if (h.task_type == type) return h.max_concurrency;
      }
      return 0;
    }
  }
  return impl_->in_process ? impl_->in_process->max_concurrency(type) : 0;
}

void RunnerHost::watch(const fs::path& dir) {
  Impl& m = *impl_;
  std::lock_guard load_lock(m.load_mu);
  m.watched_dir = dir;
  if (m.inotify_fd < 0) m.inotify_fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  // Completed writes and renames into or out of the directory, and removals: what deploying a
  // file (cp + mv) or deleting one produces.
  if (m.inotify_fd < 0 || ::inotify_add_watch(m.inotify_fd, dir.c_str(),
                                              IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
                                                  IN_CREATE | IN_ATTRIB) < 0) {
    m.logger.warn("plugin directory not watched; SIGHUP rescans it",
                  {{"dir", dir.string()}, {"error", std::strerror(errno)}});
  }
}

void RunnerHost::request_rescan(std::string_view why) { impl_->request_rescan_reason(std::string(why)); }

bool RunnerHost::serving() const {
  {
    std::shared_lock lock(impl_->mu);
    if (impl_->stopping) return false;
    if (!impl_->routes.empty()) return true;
  }
  return impl_->in_process && impl_->in_process->serving();
}

pid_t RunnerHost::runner_pid(const std::string& plugin_id) const {
  std::shared_lock lock(impl_->mu);
  for (const auto& e : impl_->entries) {
    if (e->info.plugin_id == plugin_id) return e->process ? e->process->pid : 0;
  }
  return 0;
}

task::Outcome RunnerHost::dispatch(task::Execution& execution) {
  Impl& m = *impl_;
  const task::Task& t = execution.task;
  std::shared_ptr<RunnerProcess> p;
  std::shared_ptr<Entry> entry_ptr;
  std::string plugin_id;
  {
    std::shared_lock lock(m.mu);
    if (m.stopping) return {task::Disposition::retry, "worker is shutting down", {}, {}};
    auto it = m.routes.find(t.type);
    if (it == m.routes.end()) {
      lock.unlock();
      if (m.in_process && m.in_process->handles(t.type)) return m.in_process->dispatch(execution);
      return task::unhandled_type(t.type);
    }
    entry_ptr = it->second;
    Entry& entry = *entry_ptr;
    plugin_id = entry.info.plugin_id;
    // Restarting: wait a little for the new runner rather than bounce the task straight back.
    const auto until = SteadyClock::now() + m.options.restart_wait;
    while (!entry.process && !m.stopping && !execution.cancellation.cancelled() &&
           SteadyClock::now() < until) {
      m.changed.wait_for(lock, std::chrono::milliseconds(50));
    }
    p = entry.process;
  }
  if (!p) {
    if (execution.cancellation.cancelled()) return {task::Disposition::cancelled, "context canceled", {}, {}};
    return {task::Disposition::requeue, "plugin " + plugin_id + " is restarting", {}, {}};
  }
  if (m.is_suspect(t.id)) return m.run_quarantined(entry_ptr, execution);

  bool died = false;
  return m.run_call(p, plugin_id, execution, died);
}

bool RunnerHost::start(task::Execution& execution, task::AttemptCompletion& done) {
  Impl& m = *impl_;
  const task::Task& t = execution.task;
  std::shared_ptr<RunnerProcess> p;
  {
    std::shared_lock lock(m.mu);
    if (m.stopping) return false;
    const auto it = m.routes.find(t.type);
    // In process, a restarting runner (dispatch() waits for it) or none: a thread's work.
    if (it == m.routes.end() || !it->second->process) return false;
    p = it->second->process;
  }
  if (m.is_suspect(t.id)) return false;  // runs alone in a fresh runner, from dispatch()
  return m.start_call(p, execution, done);
}

void RunnerHost::flush_started() {
  Impl& m = *impl_;
  std::vector<std::shared_ptr<RunnerProcess>> posted;
  {
    std::lock_guard lock(m.unflushed_mu);
    posted.swap(m.unflushed);
  }
  // A dead runner's channel refuses: its calls are failed by its death, not here.
  for (const auto& p : posted) p->channel->flush();
}

bool RunnerHost::Impl::start_call(const std::shared_ptr<RunnerProcess>& p, task::Execution& execution,
                                  task::AttemptCompletion& done) {
  const uint64_t id = ++next_call_id;
  auto call = std::make_shared<Call>(execution, &done);
  {
    std::lock_guard lock(p->mu);
    if (p->dead || p->stopping) return false;
    p->calls[id] = call;
  }
  wire::Writer w;
  wire::encode(w, execution.task);
  {
    // Held until the cancellation is forwarded: the attempt cannot settle (and remove it) first.
    std::lock_guard lock(call->mu);
    // Queued behind the run frame, so the runner never sees a cancel before its task.
    p->channel->post(Kind::run, id, w.data());  // a dead runner fails the call through on_death
    call->cancel_token = execution.cancellation.on_cancel([p, id](task::CancelReason reason) {
      wire::Writer cancel;
      cancel.i32(static_cast<int32_t>(reason));
      p->channel->send(Kind::cancel, id, cancel.data());
    });
  }
  {
    std::lock_guard lock(unflushed_mu);
    if (std::find(unflushed.begin(), unflushed.end(), p) == unflushed.end()) unflushed.push_back(p);
  }
  return true;
}

task::Outcome RunnerHost::Impl::run_call(const std::shared_ptr<RunnerProcess>& p,
                                         const std::string& plugin_id, task::Execution& execution, bool& died,
                                         bool kill_if_deaf) {
  const uint64_t id = ++next_call_id;
  auto call = std::make_shared<Call>(execution, nullptr);
  {
    std::lock_guard lock(p->mu);
    if (p->dead || p->stopping) {  // died, or a drained old version being stopped
      died = p->dead;
      return {task::Disposition::requeue,
              "plugin " + plugin_id + " " + (p->dead ? p->death.reason : "is being replaced"),
              {},
              {}};
    }
    p->calls[id] = call;
  }
  wire::Writer w;
  wire::encode(w, execution.task);
  p->channel->send(Kind::run, id, w.data());  // a dead runner fails the call through on_death
  // After the run frame: a cancellation already there is sent right away, behind it.
  const auto token = execution.cancellation.on_cancel([p, id](task::CancelReason reason) {
    wire::Writer cancel;
    cancel.i32(static_cast<int32_t>(reason));
    p->channel->send(Kind::cancel, id, cancel.data());
  });
  {
    std::unique_lock lock(call->mu);
    const auto finished = [&] { return call->done && call->active_rpcs == 0; };
    if (!kill_if_deaf) {
      call->cv.wait(lock, finished);
    } else {
      // A runner that serves only this task: a handler deaf to its cancellation past the grace
      // is killed with its runner, so it cannot hold the plugin's suspects' turn forever.
      std::optional<SteadyClock::time_point> cancelled_at;
      while (!call->cv.wait_for(lock, std::chrono::milliseconds(100), finished)) {
        if (!execution.cancellation.cancelled()) continue;
        if (!cancelled_at) cancelled_at = SteadyClock::now();
        if (SteadyClock::now() - *cancelled_at < kDeafGrace) continue;
        lock.unlock();
        p->kill("its handler ignored the task's cancellation");
        lock.lock();
      }
    }
  }
  if (token != 0) execution.cancellation.remove(token);
  for (auto& s : call->staged) execution.staged.push_back(std::move(s));
  died = call->runner_died;
  return call->outcome;
}

task::Outcome RunnerHost::Impl::run_quarantined(const std::shared_ptr<Entry>& entry,
                                                task::Execution& execution) {
  const task::Task& t = execution.task;
  // One suspect at a time per plugin; waiting for the turn honours this task's cancellation.
  std::unique_lock one_at_a_time(entry->quarantine_mu, std::defer_lock);
  while (!one_at_a_time.try_lock()) {
    if (execution.cancellation.wait_for(std::chrono::milliseconds(50)) != task::CancelReason::none) {
      return {task::Disposition::cancelled, "context canceled", {}, {}};
    }
  }
  std::string plugin_id;
  {
    std::shared_lock lock(mu);
    plugin_id = entry->info.plugin_id;
  }
  logger.info("running a crash suspect alone in a fresh runner",
              {{"plugin", plugin_id}, {"task_id", t.id}, {"task_type", t.type}});
  std::shared_ptr<RunnerProcess> p;
  std::optional<std::string> refusal;
  try {
    p = spawn(entry->file);
    refusal = admit(p, [&](const plugins::PluginInfo& info) {
      if (info.plugin_id == plugin_id) return plugins::Admission{};
      return plugins::Admission{plugins::Admission::Verdict::refuse,
                                "the file now holds plugin " + info.plugin_id};
    });
  } catch (const std::exception& e) {
    refusal = e.what();
  }
  if (refusal) {
    if (p) stop_process(p);
    return {
        task::Disposition::requeue, "plugin " + plugin_id + " could not start a runner: " + *refusal, {}, {}};
  }
  {
    std::lock_guard lock(p->mu);
    p->entry = entry;
    p->quarantine = true;
  }
  bool died = false;
  task::Outcome outcome = run_call(p, plugin_id, execution, died, true);
  stop_process(p);
  if (!died) clear_suspect(t.id);  // it ran alone and its runner lived: not the culprit
  return outcome;
}

bool RunnerHost::Impl::is_suspect(const std::string& task_id) {
  std::lock_guard lock(suspects_mu);
  return !suspects.empty() && suspects.count(task_id) > 0;
}

void RunnerHost::Impl::mark_suspects(const std::vector<std::string>& task_ids) {
  constexpr size_t kMaxSuspects = 10000;
  constexpr auto kSuspectFor = std::chrono::hours(1);
  std::lock_guard lock(suspects_mu);
  const auto now = SteadyClock::now();
  if (suspects.size() + task_ids.size() > kMaxSuspects) {
    std::erase_if(suspects, [&](const auto& kv) { return now - kv.second > kSuspectFor; });
  }
  for (const auto& id : task_ids) {
    if (suspects.size() < kMaxSuspects) suspects[id] = now;
  }
}

void RunnerHost::Impl::clear_suspect(const std::string& task_id) {
  std::lock_guard lock(suspects_mu);
  suspects.erase(task_id);
}

task::Outcome RunnerHost::Impl::blame(const task::Task& t, const std::string& plugin,
                                      const std::string& reason) {
  int64_t crashes = 0;
  try {
    if (options.crash_ledger != nullptr) {
      crashes = options.crash_ledger->record_crash(t);
    } else {
      std::lock_guard lock(suspects_mu);
      crashes = ++local_crashes[t.id];
    }
  } catch (const std::exception& e) {
    logger.warn("crash count not recorded; the task is requeued", {{"task_id", t.id}, {"error", e.what()}});
    return {
        task::Disposition::requeue, "plugin " + plugin + " " + reason + " while running this task", {}, {}};
  }
  const std::string text = "plugin " + plugin + " " + reason + " while running this task " +
                           std::to_string(crashes) + (crashes == 1 ? " time" : " times");
  if (crashes >= options.crash_limit) {
    logger.error("poison task archived", {{"plugin", plugin},
                                          {"task_id", t.id},
                                          {"task_type", t.type},
                                          {"queue", t.queue},
                                          {"crashes", crashes}});
    clear_suspect(t.id);
    return {task::Disposition::fail_no_retry, text, {}, {}};
  }
  return {task::Disposition::requeue, text, {}, {}};
}

void RunnerHost::shutdown() {
  Impl& m = *impl_;
  std::vector<std::shared_ptr<Entry>> entries;
  {
    std::unique_lock lock(m.mu);
    m.stopping = true;
    if (m.shut_down) return;
    m.shut_down = true;
    entries = m.entries;
    entries.insert(entries.end(), m.draining.begin(), m.draining.end());
    m.draining.clear();
  }
  m.changed.notify_all();
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    std::shared_ptr<RunnerProcess> p;
    {
      std::shared_lock lock(m.mu);
      p = (*it)->process;
    }
    if (!p) continue;
    // The engine has drained: what still runs is past the shutdown grace. The runner gets the
    // same grace for its plugin's shutdown() and is killed after it.
    m.stop_process(p);
    m.logger.info("plugin runner stopped", {{"plugin", (*it)->info.plugin_id}});
  }
  if (m.in_process) m.in_process->shutdown();
}

}  // namespace wk::runner
