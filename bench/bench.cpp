// Queue engine benchmark against a running redis-server.
//
//   wk_bench [--host H] [--port P] [--db N] [--tasks N] [--latency-samples N] [--json] [--worker-drain]
//            [--concurrency N]... (default: 4, 8 and 16; 4 and 16 with --worker-drain)
//            [--isolation none|process|both] [--worker-plugins DIR] [--idle-seconds N]
//            (or env WK_BENCH_REDIS_HOST / WK_BENCH_REDIS_PORT / WK_BENCH_TASKS)
//
// Each isolation mode (docs/plugin-isolation.md) is measured in turn, in-process first: the
// plugin loaded into this process, or into a runner process started from the worker binary.
// In process mode "host CPU" is this process plus the runner.
// For concurrency 4, 8 and 16: enqueue N no-op tasks, drain them with an in-process engine whose
// dispatcher is the real plugin host serving a no-op plugin (bench/noop_plugin.cpp), and
// report tasks/s, CPU seconds per 100k tasks of this process (getrusage) and of redis-server
// (its pid from INFO server, CPU from /proc/<pid>/stat), then the idle enqueue-to-start latency
// (enqueue one task into an idle engine, time until the handler starts) and the peak RSS.
// --json prints one JSON object a line instead of the table (kind "drain" per concurrency, then
// kind "idle"), the form bench/peers/bullmq/bench.mjs prints too; bench/run.sh --peers reads both.
// --worker-drain: instead, what users run (kind "worker_drain"): the shipped `worker` binary at
// its default settings, concurrency 4 and 16, with runner processes and in process, drains N
// no-op tasks from the `default` queue; host CPU is the worker's and its runners' together.
// WK_BENCH_WORKER=PATH runs that binary instead of this build's (two builds compared in turn).
// --worker-plugins DIR: instead, the shipped `worker` binary serves N no-op tasks at concurrency
// 16 with the plugins of DIR (the no-op plugin among them; the shipped ones need the database the
// DB_* variables of this environment name), in each isolation mode, and its peak RSS and the PSS
// of the worker and its runners are reported (kind "worker_rss").
// Last, what idle workers cost Redis (kind "idle_cost"): 1 and then 4 idle engines serving three
// weighted queues at concurrency 8, Redis commands per second over --idle-seconds (60; 0 skips),
// and the idle pickup p50/p99 in that setup.
// The DB given is FLUSHed: point it at a private redis (bench/run.sh starts one).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "asynq/keys.hpp"
#include "plugins/plugins.hpp"
#include "queue/broker_redis.hpp"
#include "queue/engine.hpp"
#include "runner/runner.hpp"

namespace {

using namespace wk;
using SteadyClock = std::chrono::steady_clock;

struct Options {
  std::string host = "127.0.0.1";
  int port = 6379;
  int db = 0;
  int tasks = 100000;
  int latency_samples = 200;
  bool json = false;
  std::vector<std::string> isolations = {"none", "process"};
  std::string worker_plugins;      // set: measure the worker binary's RSS instead
  int idle_seconds = 60;           // the idle-cost window; 0 skips it
  bool worker_drain = false;       // drain through the shipped worker binary instead
  std::vector<int> concurrencies;  // empty: 4, 8, 16 (engine drains), 4, 16 (worker binary)
};

// VmHWM (peak resident set) of another process, in MiB; -1 when unreadable.
// A "Key:   N kB" line of /proc/<pid>/<file>, in MiB; `missing` when there is none.
double proc_mib(long pid, const char* file, std::string_view key, double missing) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/" + file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(key.size())) / 1024.0;
  }
  return missing;
}

double pid_peak_rss_mib(long pid) { return proc_mib(pid, "status", "VmHWM:", -1); }

// A no-op task of the bench's queue.
task::EnqueueRequest noop_task() {
  task::EnqueueRequest r;
  r.type = "noop";
  r.queue = "bench";
  return r;
}

double process_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // ru_maxrss is KiB on Linux
}

// utime + stime of a process, from /proc/<pid>/stat; -1 when unreadable (redis on another host).
double pid_cpu_seconds(long pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return -1;
  const auto close = line.rfind(')');  // the command name may contain spaces
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  std::vector<std::string> fields;
  while (rest >> field) fields.push_back(field);
  if (fields.size() < 13) return -1;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  return (std::stod(fields[11]) + std::stod(fields[12])) / ticks;  // fields 14 and 15 of stat
}

long redis_pid(redis::Connection& conn) {
  auto info = conn.command({"INFO", "server"});
  const std::string text(info.str());
  const auto at = text.find("process_id:");
  return at == std::string::npos ? -1 : std::stol(text.substr(at + 11));
}

// The plugin host, counting finished tasks so the main thread can wait for a target without
// polling, and noting when the last one started.
class CountingDispatcher : public task::Dispatcher {
 public:
  explicit CountingDispatcher(plugins::Host& host) : host_(host) {}
  bool handles(std::string_view type) const override { return host_.handles(type); }
  task::Outcome dispatch(task::Execution& execution) override {
    const auto now = SteadyClock::now();
    task::Outcome outcome = host_.dispatch(execution);
    counted(now);
    return outcome;
  }
  // A runner's task, started by the engine's loop as the worker's are (no thread waits for it).
  bool start(task::Execution& execution, task::AttemptCompletion& done) override {
    auto counting = std::make_unique<Counting>(*this, done, SteadyClock::now());
    if (!host_.start(execution, *counting)) return false;
    (void)counting.release();  // Counting::finished owns it now
    return true;
  }
  void flush_started() override { host_.flush_started(); }
  void wait_for(long target) {
    std::unique_lock lock(mu_);
    target_ = target;
    cv_.wait(lock, [&] { return count_ >= target; });
  }
  SteadyClock::time_point last_start() {
    std::lock_guard lock(mu_);
    return last_start_;
  }
  long count() {
    std::lock_guard lock(mu_);
    return count_;
  }

 private:
  struct Counting final : task::AttemptCompletion {
    Counting(CountingDispatcher& d, task::AttemptCompletion& i, SteadyClock::time_point s)
        : dispatcher(d), inner(i), started(s) {}
    void finished(task::Outcome outcome) override {
      const std::unique_ptr<Counting> self(this);
      dispatcher.counted(started);
      inner.finished(std::move(outcome));
    }
    task::OutcomeBurstListener* burst_listener() override { return inner.burst_listener(); }
    CountingDispatcher& dispatcher;
    task::AttemptCompletion& inner;
    SteadyClock::time_point started;
  };
  void counted(SteadyClock::time_point started) {
    std::lock_guard lock(mu_);
    last_start_ = started;  // the idle samples run one task at a time
    // Wake the main thread only when its target is reached: a wake-up per task would add a
    // context switch per task to the host CPU being measured.
    if (++count_ == target_) cv_.notify_all();
  }

  plugins::Host& host_;
  std::mutex mu_;
  std::condition_variable cv_;
  long count_ = 0;
  long target_ = -1;
  SteadyClock::time_point last_start_{};
};

// As the worker runs: its machine's queue first (empty here), then the bench queue.
queue::Settings engine_settings(int concurrency) {
  queue::Settings s;
  s.queues = {{"bench", 1}};
  s.host_queue = task::host_queue("bench-machine");
  s.concurrency = concurrency;
  return s;
}

Options parse(int argc, char** argv) {
  Options o;
  if (const char* v = std::getenv("WK_BENCH_REDIS_HOST")) o.host = v;
  if (const char* v = std::getenv("WK_BENCH_REDIS_PORT")) o.port = std::atoi(v);
  if (const char* v = std::getenv("WK_BENCH_TASKS")) o.tasks = std::atoi(v);
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--json") {
      o.json = true;
      continue;
    }
    if (flag == "--worker-drain") {
      o.worker_drain = true;
      continue;
    }
    if (i + 1 >= argc) throw std::invalid_argument("missing value for " + flag);
    const std::string value = argv[++i];
    if (flag == "--host")
      o.host = value;
    else if (flag == "--port")
      o.port = std::stoi(value);
    else if (flag == "--db")
      o.db = std::stoi(value);
    else if (flag == "--tasks")
      o.tasks = std::stoi(value);
    else if (flag == "--latency-samples")
      o.latency_samples = std::stoi(value);
    else if (flag == "--idle-seconds")
      o.idle_seconds = std::stoi(value);
    else if (flag == "--concurrency")
      o.concurrencies.push_back(std::stoi(value));
    else if (flag == "--worker-plugins")
      o.worker_plugins = value;
    else if (flag == "--isolation")
      o.isolations =
          value == "both" ? std::vector<std::string>{"none", "process"} : std::vector<std::string>{value};
    else
      throw std::invalid_argument("unknown flag " + flag);
  }
  if (o.concurrencies.empty()) {
    o.concurrencies = o.worker_drain ? std::vector<int>{4, 16} : std::vector<int>{4, 8, 16};
  }
  if (o.tasks <= 0 || o.latency_samples <= 0)
    throw std::invalid_argument("--tasks and --latency-samples must be > 0");
  return o;
}

std::unique_ptr<plugins::Host> make_host(const std::string& isolation, const log::Logger& logger) {
  if (isolation == "none") {
    return std::make_unique<plugins::PluginHost>(logger, plugins::ConfigSnapshot{}, nullptr, nullptr);
  }
  if (isolation != "process") throw std::invalid_argument("--isolation takes none, process or both");
  runner::RunnerOptions options;
  options.executable = WK_WORKER_BINARY;
  return std::make_unique<runner::RunnerHost>(logger, plugins::ConfigSnapshot{}, nullptr, nullptr, options);
}

void run_mode(const Options& opt, const std::string& isolation, const log::Logger& logger,
              queue::RedisBrokerSettings& bs, redis::Connection& admin, long rpid) {
  auto host = make_host(isolation, logger);
  if (host->load_directory(WK_BENCH_PLUGIN_DIR).loaded.size() != 1 || !host->handles("noop")) {
    throw std::runtime_error("the no-op plugin did not load from " WK_BENCH_PLUGIN_DIR);
  }
  long runner = -1;
  if (auto* runners = dynamic_cast<runner::RunnerHost*>(host.get()))
    runner = runners->runner_pid("bench.noop");
  // CPU of this process, plus the runner's in process mode.
  auto host_cpu = [&] { return process_cpu_seconds() + (runner > 0 ? pid_cpu_seconds(runner) : 0.0); };

  if (!opt.json) {
    std::printf("isolation %s\n%-12s %12s %18s %18s\n", isolation.c_str(), "concurrency", "tasks/s",
                "host CPU s/100k", "redis CPU s/100k");
  }
  for (int concurrency : opt.concurrencies) {
    admin.command({"FLUSHDB"});
    queue::RedisBroker broker(bs, logger);
    // Enqueue in pipelined batches through the client's script, outside the measured window.
    for (int i = 0; i < opt.tasks; ++i) broker.client().enqueue(noop_task());
    CountingDispatcher dispatcher(*host);
    queue::Engine engine(broker, dispatcher, logger, engine_settings(concurrency));
    const double cpu0 = host_cpu();
    const double rcpu0 = pid_cpu_seconds(rpid);
    const auto t0 = SteadyClock::now();
    engine.start();
    dispatcher.wait_for(opt.tasks);
    // Wait until the last completions are written too.
    while (admin.command({"LLEN", "asynq:{bench}:active"}).integer() > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    const double secs = std::chrono::duration<double>(SteadyClock::now() - t0).count();
    const double cpu = host_cpu() - cpu0;
    const double rcpu = rcpu0 < 0 ? -1 : pid_cpu_seconds(rpid) - rcpu0;
    engine.shutdown();
    const double per100k = 100000.0 / opt.tasks;
    const double rcpu100k = rcpu < 0 ? -1.0 : rcpu * per100k;
    if (opt.json) {
      std::printf(
          "{\"impl\":\"wk\",\"isolation\":\"%s\",\"kind\":\"drain\",\"concurrency\":%d,\"tasks\":%d,"
          "\"tasks_per_s\":%.1f,\"host_cpu_s_per_100k\":%.4f,\"redis_cpu_s_per_100k\":%.4f}\n",
          isolation.c_str(), concurrency, opt.tasks, opt.tasks / secs, cpu * per100k, rcpu100k);
    } else {
      std::printf("%-12d %12.0f %18.2f %18.2f\n", concurrency, opt.tasks / secs, cpu * per100k, rcpu100k);
    }
    std::fflush(stdout);
  }

  // Idle pickup: the engine waits in Redis; each sample enqueues one task into the empty queue.
  admin.command({"FLUSHDB"});
  queue::RedisBroker broker(bs, logger);
  CountingDispatcher dispatcher(*host);
  queue::Engine engine(broker, dispatcher, logger, engine_settings(4));
  engine.start();
  std::vector<double> latencies_ms;
  for (int i = 0; i < opt.latency_samples; ++i) {
    // Let the engine go idle (blocked in its wait) before the next sample.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    const task::EnqueueRequest r = noop_task();
    const auto before = SteadyClock::now();
    broker.client().enqueue(r);
    dispatcher.wait_for(i + 1);
    latencies_ms.push_back(
        std::chrono::duration<double, std::milli>(dispatcher.last_start() - before).count());
  }
  engine.shutdown();
  std::sort(latencies_ms.begin(), latencies_ms.end());
  auto pct = [&](double p) {
    return latencies_ms[static_cast<size_t>(p * static_cast<double>(latencies_ms.size() - 1))];
  };
  // Peak RSS of this process (in process mode after the in-process run, so it includes it) and
  // of the runner.
  const double runner_rss = runner > 0 ? pid_peak_rss_mib(runner) : 0.0;
  if (opt.json) {
    std::printf(
        "{\"impl\":\"wk\",\"isolation\":\"%s\",\"kind\":\"idle\",\"samples\":%d,\"p50_ms\":%.4f,"
        "\"p99_ms\":%.4f,\"peak_rss_mib\":%.2f,\"runner_peak_rss_mib\":%.2f}\n",
        isolation.c_str(), opt.latency_samples, pct(0.5), pct(0.99), peak_rss_mib(), runner_rss);
  } else {
    std::printf("idle enqueue-to-start latency over %d samples: p50 %.3f ms, p99 %.3f ms\n",
                opt.latency_samples, pct(0.5), pct(0.99));
    std::printf("peak RSS: %.1f MiB (runner %.1f MiB)\n\n", peak_rss_mib(), runner_rss);
  }
  host->shutdown();
}

// Script calls (EVAL and EVALSHA) Redis has run: the worker's round trips carry one per queue
// dequeued from and one per outcome batch, so their count per task shows how well rounds batch.
long long script_calls(redis::Connection& admin) {
  const std::string info(admin.command({"INFO", "commandstats"}).str());
  long long calls = 0;
  for (const std::string key : {"cmdstat_evalsha:calls=", "cmdstat_eval:calls="}) {
    const auto at = info.find(key);
    if (at != std::string::npos) calls += std::stoll(info.substr(at + key.size()));
  }
  return calls;
}

long long commands_processed(redis::Connection& admin) {
  const std::string info(admin.command({"INFO", "stats"}).str());
  const std::string key = "total_commands_processed:";
  const auto at = info.find(key);
  if (at == std::string::npos) throw std::runtime_error("INFO stats has no total_commands_processed");
  return std::stoll(info.substr(at + key.size()));
}

// What idle workers cost Redis: `workers` engines (each its own broker and server identity, as
// separate worker processes would be) serving three weighted queues at concurrency 8, idle for
// opt.idle_seconds after a warm-up long enough for each to have read the fleet (30 s); commands
// per second from INFO total_commands_processed (script commands included, the two INFO calls
// excluded). With one worker, also the idle pickup in that setup, a task to each queue in turn.
void run_idle_cost(const Options& opt, int workers, plugins::Host& host, const log::Logger& logger,
                   queue::RedisBrokerSettings& bs, redis::Connection& admin) {
  admin.command({"FLUSHDB"});
  const std::vector<std::string> queues = {"critical", "default", "low"};
  std::vector<std::unique_ptr<queue::RedisBroker>> brokers;
  std::vector<std::unique_ptr<CountingDispatcher>> dispatchers;
  std::vector<std::unique_ptr<queue::Engine>> engines;
  for (int i = 0; i < workers; ++i) {
    queue::Settings s;
    s.queues = {{"critical", 6}, {"default", 3}, {"low", 1}};
    s.host_queue = task::host_queue("bench-machine");  // one machine: one host queue
    s.concurrency = 8;
    auto broker_settings = bs;
    broker_settings.pool_size = 4;
    brokers.push_back(std::make_unique<queue::RedisBroker>(broker_settings, logger));
    dispatchers.push_back(std::make_unique<CountingDispatcher>(host));
    engines.push_back(std::make_unique<queue::Engine>(*brokers.back(), *dispatchers.back(), logger, s));
    engines.back()->start();
  }
  std::this_thread::sleep_for(workers > 1 ? std::chrono::seconds(35) : std::chrono::seconds(5));
  const long long before = commands_processed(admin);
  std::this_thread::sleep_for(std::chrono::seconds(opt.idle_seconds));
  const long long after = commands_processed(admin);
  const double per_s = static_cast<double>(after - before - 1) / opt.idle_seconds;

  std::vector<double> latencies_ms;
  if (workers == 1) {
    CountingDispatcher& dispatcher = *dispatchers.front();
    for (int i = 0; i < opt.latency_samples; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      task::EnqueueRequest r = noop_task();
      r.queue = queues[static_cast<size_t>(i) % queues.size()];
      const auto sent = SteadyClock::now();
      brokers.front()->client().enqueue(r);
      dispatcher.wait_for(i + 1);
      latencies_ms.push_back(
          std::chrono::duration<double, std::milli>(dispatcher.last_start() - sent).count());
    }
    std::sort(latencies_ms.begin(), latencies_ms.end());
  }
  for (auto& engine : engines) engine->shutdown();
  auto pct = [&](double p) {
    return latencies_ms[static_cast<size_t>(p * static_cast<double>(latencies_ms.size() - 1))];
  };
  if (opt.json) {
    std::printf(
        "{\"impl\":\"wk\",\"kind\":\"idle_cost\",\"workers\":%d,\"queues\":3,\"concurrency\":8,"
        "\"seconds\":%d,\"commands_per_s\":%.2f",
        workers, opt.idle_seconds, per_s);
    if (!latencies_ms.empty())
      std::printf(",\"pickup_p50_ms\":%.4f,\"pickup_p99_ms\":%.4f", pct(0.5), pct(0.99));
    std::printf("}\n");
  } else {
    std::printf("idle, %d worker%s, 3 queues, concurrency 8: %.2f Redis commands/s over %d s", workers,
                workers == 1 ? "" : "s", per_s, opt.idle_seconds);
    if (!latencies_ms.empty()) std::printf("; pickup p50 %.3f ms, p99 %.3f ms", pct(0.5), pct(0.99));
    std::printf("\n");
  }
  std::fflush(stdout);
}

// Proportional set size of a process (shared pages divided among their users), in MiB.
double pid_pss_mib(long pid) { return proc_mib(pid, "smaps_rollup", "Pss:", 0.0); }

// The children of a process (its plugin runners), from /proc/<pid>/task/<tid>/children.
std::vector<long> child_pids(long pid) {
  std::vector<long> out;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(task.path() / "children");
    long child = 0;
    while (in >> child) out.push_back(child);
  }
  return out;
}

// Starts the worker binary with `settings` added to this environment, its output to `log_file`
// (empty: this process's stdout and stderr).
pid_t spawn_worker(const std::vector<std::string>& settings, const std::string& plugins_dir,
                   const std::string& log_file) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  for (const std::string& s : settings) env.push_back(s);
  std::vector<char*> envp;
  envp.reserve(env.size() + 1);
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  // WK_BENCH_WORKER: another build's binary, to compare two builds on the same machine.
  const char* other = std::getenv("WK_BENCH_WORKER");
  std::string binary = other != nullptr && *other != '\0' ? other : WK_WORKER_BINARY;
  std::string plugins_flag = "--plugins";
  std::string dir = plugins_dir;
  char* argv[] = {binary.data(), plugins_flag.data(), dir.data(), nullptr};
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    const int fd =
        log_file.empty() ? -1 : ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    execve(argv[0], argv, envp.data());
    _exit(127);
  }
  return pid;
}

// The worker binary, concurrency 16, with the plugins of opt.worker_plugins, in process or with
// runner processes: drains opt.tasks no-op tasks; its peak RSS after the drain, and the PSS of the
// worker and its runners together (what they cost the machine, shared pages counted once).
void run_worker_rss(const Options& opt, const std::string& isolation, queue::RedisBrokerSettings& bs,
                    redis::Connection& admin, const log::Logger& logger) {
  admin.command({"FLUSHDB"});
  {
    queue::RedisBroker broker(bs, logger);
    for (int i = 0; i < opt.tasks; ++i) broker.client().enqueue(noop_task());
  }
  const pid_t pid = spawn_worker(
      {"REDIS_HOST=" + opt.host, "REDIS_PORT=" + std::to_string(opt.port),
       "REDIS_DB=" + std::to_string(opt.db), "WORKER_ISOLATION=" + isolation, "WORKER_CONCURRENCY=16",
       "WORKER_QUEUES=bench=1", "WORKER_METRICS_ADDR=", "LOG_LEVEL=warn"},
      opt.worker_plugins, "");
  // Drained when nothing is pending or active any more (polling is fine outside a timed window).
  const auto give_up = SteadyClock::now() + std::chrono::minutes(10);
  while (admin.command({"LLEN", "asynq:{bench}:pending"}).integer() > 0 ||
         admin.command({"LLEN", "asynq:{bench}:active"}).integer() > 0) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) throw std::runtime_error("the worker exited before draining");
    if (SteadyClock::now() > give_up) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      throw std::runtime_error("the worker did not drain within 10 minutes");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const double rss = pid_peak_rss_mib(pid);
  double pss = pid_pss_mib(pid);
  const std::vector<long> runners = child_pids(pid);
  for (long runner : runners) pss += pid_pss_mib(runner);
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  if (opt.json) {
    std::printf(
        "{\"impl\":\"wk\",\"kind\":\"worker_rss\",\"isolation\":\"%s\",\"tasks\":%d,\"peak_rss_mib\":%.2f,"
        "\"runners\":%zu,\"pss_total_mib\":%.2f}\n",
        isolation.c_str(), opt.tasks, rss, runners.size(), pss);
  } else {
    std::printf(
        "worker binary, isolation %s, concurrency 16, plugins of %s, after %d tasks: peak RSS %.1f MiB; "
        "PSS of the worker and its %zu runners %.1f MiB\n",
        isolation.c_str(), opt.worker_plugins.c_str(), opt.tasks, rss, runners.size(), pss);
  }
}

// The CPU seconds of `pid` and of its children now (a worker and its plugin runners).
double tree_cpu_seconds(long pid) {
  double cpu = pid_cpu_seconds(pid);
  for (long child : child_pids(pid)) cpu += std::max(0.0, pid_cpu_seconds(child));
  return cpu;
}

// A free loopback TCP port (for the worker's HTTP endpoint, on by default).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("no free loopback port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

// What users run: the shipped `worker` binary at its default settings but for the concurrency and
// the isolation mode, the no-op plugin in its plugin directory, opt.tasks no-op tasks already in
// the `default` queue. The queue is paused until the worker serves (its asynq server record is
// written and its runners run), so start-up is outside the window; the window opens when the
// first task leaves pending and closes when pending and active are empty. Host CPU is the
// worker's and its runners' (/proc of each), Redis CPU redis-server's; memory is read at the end
// (peak RSS of the worker and of its runners, PSS of all of them).
void run_worker_drain(const Options& opt, const std::string& isolation, int concurrency,
                      queue::RedisBrokerSettings& bs, redis::Connection& admin, const log::Logger& logger,
                      long rpid) {
  admin.command({"FLUSHDB"});
  {
    queue::RedisBroker broker(bs, logger);
    task::EnqueueRequest r = noop_task();
    r.queue = "default";
    for (int i = 0; i < opt.tasks; ++i) broker.client().enqueue(r);
  }
  const std::string paused = asynq::paused_key("default");
  admin.command({"SET", paused, std::to_string(std::time(nullptr))});
  const std::string log_file = "/tmp/wk_bench_worker_" + std::to_string(::getpid()) + ".log";
  const pid_t pid = spawn_worker({"REDIS_HOST=" + opt.host, "REDIS_PORT=" + std::to_string(opt.port),
                                  "REDIS_DB=" + std::to_string(opt.db), "WORKER_ISOLATION=" + isolation,
                                  "WORKER_CONCURRENCY=" + std::to_string(concurrency),
                                  "WORKER_METRICS_ADDR=127.0.0.1:" + std::to_string(free_port())},
                                 WK_BENCH_PLUGIN_DIR, log_file);
  const auto give_up = SteadyClock::now() + std::chrono::minutes(10);
  auto check_alive = [&] {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid)
      throw std::runtime_error("the worker exited early; its log: " + log_file);
    if (SteadyClock::now() > give_up) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      throw std::runtime_error("the worker did not drain within 10 minutes; its log: " + log_file);
    }
  };
  const size_t runners_wanted = isolation == "process" ? 1 : 0;
  while (admin.command({"ZCARD", std::string(asynq::kAllServersKey)}).integer() < 1 ||
         child_pids(pid).size() < runners_wanted) {
    check_alive();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // settled: the first beats are done
  const std::string pending = asynq::pending_key("default");
  const std::string active = asynq::active_key("default");
  const double cpu0 = tree_cpu_seconds(pid);
  const double rcpu0 = pid_cpu_seconds(rpid);
  const long long scripts0 = script_calls(admin);
  admin.command({"DEL", paused});
  while (admin.command({"LLEN", pending}).integer() >= opt.tasks) check_alive();
  const auto t0 = SteadyClock::now();
  while (admin.command({"LLEN", pending}).integer() > 0 || admin.command({"LLEN", active}).integer() > 0) {
    check_alive();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const double secs = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  const double cpu = tree_cpu_seconds(pid) - cpu0;
  const double rcpu = rcpu0 < 0 ? -1 : pid_cpu_seconds(rpid) - rcpu0;
  const double scripts_per_task =
      static_cast<double>(script_calls(admin) - scripts0) / static_cast<double>(opt.tasks);
  const double rss = pid_peak_rss_mib(pid);
  double pss = pid_pss_mib(pid);
  double runners_rss = 0;
  const std::vector<long> runners = child_pids(pid);
  for (long runner : runners) {
    pss += pid_pss_mib(runner);
    runners_rss += std::max(0.0, pid_peak_rss_mib(runner));
  }
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  std::remove(log_file.c_str());
  const double per100k = 100000.0 / opt.tasks;
  if (opt.json) {
    std::printf(
        "{\"impl\":\"wk\",\"kind\":\"worker_drain\",\"isolation\":\"%s\",\"concurrency\":%d,\"tasks\":%d,"
        "\"tasks_per_s\":%.1f,\"host_cpu_s_per_100k\":%.4f,\"redis_cpu_s_per_100k\":%.4f,"
        "\"redis_scripts_per_task\":%.3f,\"worker_peak_rss_mib\":%.2f,\"runners\":%zu,"
        "\"runners_peak_rss_mib\":%.2f,\"pss_total_mib\":%.2f}\n",
        isolation.c_str(), concurrency, opt.tasks, opt.tasks / secs, cpu * per100k,
        rcpu < 0 ? -1.0 : rcpu * per100k, scripts_per_task, rss, runners.size(), runners_rss, pss);
  } else {
    std::printf(
        "worker binary, isolation %-7s concurrency %2d: %8.0f tasks/s, host CPU (worker + runners) %.2f "
        "s/100k, "
        "redis CPU %.2f s/100k, %.3f scripts/task, peak RSS worker %.1f MiB, runners %.1f MiB, PSS total "
        "%.1f MiB\n",
        isolation.c_str(), concurrency, opt.tasks / secs, cpu * per100k, rcpu < 0 ? -1.0 : rcpu * per100k,
        scripts_per_task, rss, runners_rss, pss);
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) try {
  const Options opt = parse(argc, argv);
  const auto logger = log::Logger::to_stderr(log::Level::warn, log::Format::logfmt);
  queue::RedisBrokerSettings bs;
  bs.redis.host = opt.host;
  bs.redis.port = opt.port;
  bs.redis.db = opt.db;
  bs.pool_size = 24;
  redis::Connection admin(bs.redis);
  const long rpid = redis_pid(admin);
  if (!opt.json)
    std::printf("tasks per run: %d, redis %s:%d (pid %ld)\n\n", opt.tasks, opt.host.c_str(), opt.port, rpid);
  if (!opt.worker_plugins.empty()) {
    for (const auto& isolation : opt.isolations) run_worker_rss(opt, isolation, bs, admin, logger);
    return 0;
  }
  if (opt.worker_drain) {
    for (int concurrency : opt.concurrencies) {
      for (const auto& isolation : opt.isolations)
        run_worker_drain(opt, isolation, concurrency, bs, admin, logger, rpid);
    }
    return 0;
  }
  for (const auto& isolation : opt.isolations) run_mode(opt, isolation, logger, bs, admin, rpid);
  if (opt.idle_seconds > 0) {
    auto host = make_host("none", logger);
    if (host->load_directory(WK_BENCH_PLUGIN_DIR).loaded.size() != 1) {
      throw std::runtime_error("the no-op plugin did not load from " WK_BENCH_PLUGIN_DIR);
    }
    for (int workers : {1, 4}) run_idle_cost(opt, workers, *host, logger, bs, admin);
    host->shutdown();
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "wk_bench: %s\n", e.what());
  return 1;
}
