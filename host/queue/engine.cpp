#include "queue/engine.hpp"

#include <unistd.h>

#include <algorithm>
#include <climits>

#include "queue/context.hpp"
#include "queue/forwarder.hpp"
#include "queue/heartbeat.hpp"
#include "queue/janitor.hpp"
#include "queue/processor.hpp"
#include "queue/recoverer.hpp"
#include "queue/subscriber.hpp"
#include "queue/syncer.hpp"

namespace wk::queue {

ServerIdentity ServerIdentity::of_this_process() {
  ServerIdentity id;
  char name[HOST_NAME_MAX + 1] = {};
  id.host = gethostname(name, sizeof name - 1) == 0 && name[0] != '\0' ? name : "unknown-host";
  id.pid = static_cast<int>(getpid());
  id.server_id = task::new_uuid();
  return id;
}

const char* to_string(ServerStatus status) {
  switch (status) {
    case ServerStatus::active:
      return "active";
    case ServerStatus::stopped:
      return "stopped";
    case ServerStatus::closed:
      return "closed";
  }
  return "active";
}

const char* to_string(TaskResult result) {
  switch (result) {
    case TaskResult::done:
      return "done";
    case TaskResult::completed:
      return "completed";
    case TaskResult::retried:
      return "retried";
    case TaskResult::archived:
      return "archived";
    case TaskResult::requeued:
      return "requeued";
    case TaskResult::abandoned:
      return "abandoned";
  }
  return "done";
}

namespace {
void validate(const Settings& s) {
  auto positive = [](auto d, const char* what) {
    if (d.count() <= 0) throw std::invalid_argument(std::string("engine setting ") + what + " must be > 0");
  };
  if (s.concurrency < 1) throw std::invalid_argument("engine setting concurrency must be >= 1");
  if (s.janitor_batch < 1) throw std::invalid_argument("engine setting janitor_batch must be >= 1");
  positive(s.lease, "lease");
  positive(s.heartbeat_interval, "heartbeat_interval");
  positive(s.server_ttl, "server_ttl");
  positive(s.forwarder_interval, "forwarder_interval");
  positive(s.recoverer_interval, "recoverer_interval");
  positive(s.janitor_interval, "janitor_interval");
  positive(s.sync_interval, "sync_interval");
  positive(s.wait_timeout, "wait_timeout");
  if (s.heartbeat_interval >= s.lease) {
    throw std::invalid_argument("engine setting heartbeat_interval must be shorter than the lease");
  }
  if (s.identity.server_id.empty()) throw std::invalid_argument("engine setting identity.server_id is empty");
}
}  // namespace

Engine::Engine(Broker& broker, task::Dispatcher& dispatcher, log::Logger logger, Settings settings,
               std::unique_ptr<CancelSource> cancels) {
  validate(settings);
  ctx_ = std::make_unique<EngineContext>(broker, dispatcher, std::move(logger), std::move(settings));
  syncer_ = std::make_unique<Syncer>(*ctx_);
  // The slots, and the parking bound, shared out over the loops.
  const int slots = std::max(1, ctx_->settings.concurrency);
  const int loops = std::clamp(ctx_->settings.loops > 0 ? ctx_->settings.loops : slots / kSlotsPerLoop, 1,
                               std::min(slots, static_cast<int>(Broker::kWakers)));
  const int parked = ctx_->settings.parked_max < 0 ? slots : ctx_->settings.parked_max;
  for (int i = 0; i < loops; ++i) {
    processors_.push_back(
        std::make_unique<Processor>(*ctx_, *syncer_, slots / loops + (i < slots % loops ? 1 : 0),
                                    parked / loops + (i < parked % loops ? 1 : 0), static_cast<unsigned>(i)));
  }
  // One loop's task may give back the permit another loop's parked task waits for. (A single
  // loop learns of its own releases when its handler asks for the next task.)
  // The pointers, not the engine: a shutdown that abandons a stuck handler leaks the processors
  // (that thread may still give a permit back) but not the engine.
  if (processors_.size() > 1) {
    std::vector<Processor*> loops_of_this_engine;
    for (const auto& p : processors_) loops_of_this_engine.push_back(p.get());
    ctx_->flow.on_local_release([loops_of_this_engine] {
      for (Processor* p : loops_of_this_engine) p->permit_released();
    });
  }
  heartbeat_ = std::make_unique<Heartbeat>(*ctx_);
  forwarder_ = std::make_unique<Forwarder>(*ctx_);
  recoverer_ = std::make_unique<Recoverer>(*ctx_);
  janitor_ = std::make_unique<Janitor>(*ctx_);
  subscriber_ = std::make_unique<Subscriber>(*ctx_, std::move(cancels));
}

Engine::~Engine() { shutdown(); }

void Engine::set_observer(EngineObserver* observer) {
  ctx_->observer = observer;
  ctx_->health.set_observer(observer);
}

void Engine::start() {
  int expected = 0;
  if (!phase_.compare_exchange_strong(expected, 1)) throw std::logic_error("Engine::start called twice");
  std::string queues;
  if (!ctx_->settings.host_queue.empty()) queues = ctx_->settings.host_queue + "=first";
  for (const auto& q : ctx_->settings.queues) {
    queues += (queues.empty() ? "" : ",") + q.name + "=" + std::to_string(q.priority);
  }
  ctx_->log.info("Starting queue engine",
                 {{"server_id", ctx_->settings.identity.server_id},
                  {"concurrency", ctx_->settings.concurrency},
                  {"queues", queues},
                  {"strict_priority", ctx_->settings.strict_priority ? "true" : "false"}});
  ctx_->status = ServerStatus::active;
  heartbeat_->start();
  syncer_->start();
  recoverer_->start();
  forwarder_->start();
  janitor_->start();
  subscriber_->start();
  for (auto& p : processors_) p->start();
}

void Engine::stop() {
  if (phase_.load() != 1) return;
  for (auto& p : processors_) p->stop_fetching();
  ctx_->status = ServerStatus::stopped;
  ctx_->log.info("Stopped fetching new tasks");
}

void Engine::abort() {
  // Ends a shutdown's grace period at once (the running tasks are requeued by shutdown()).
  ctx_->inflight.notify();
}

void Engine::shutdown() {
  int expected = 1;
  if (!phase_.compare_exchange_strong(expected, 2)) {
    if (expected == 0) {  // never started: nothing runs
      phase_ = 3;
    } else if (expected == 2) {
      abort();  // a second request while the first waits: requeue now
    }
    return;
  }
  const auto& s = ctx_->settings;
  ctx_->log.info("Shutting down queue engine", {{"running", ctx_->inflight.size()}});
  ctx_->status = ServerStatus::closed;
  for (auto& p : processors_) p->stop_fetching();
  if (!ctx_->inflight.wait_empty_until(SteadyClock::now() + s.shutdown_timeout)) {
    ctx_->log.warn("Shutdown: tasks still running; cancelling and requeueing them",
                   {{"running", ctx_->inflight.size()}});
    for (auto& p : processors_) p->abort_running();
  }
  // Handlers were asked to stop; give them the lease duration to return. One that ignores
  // cancellation keeps its thread: the engine then leaks its internals instead of freeing memory
  // that thread still uses (the process is about to exit anyway).
  const auto join_by =
      SteadyClock::now() + std::max<SteadyClock::duration>(s.shutdown_timeout, std::chrono::seconds(1));
  bool joined = true;
  for (auto& p : processors_) joined = p->join_until(join_by) && joined;
  recoverer_->stop();
  syncer_->stop();
  subscriber_->stop();
  janitor_->stop();
  // The forwarder takes its turns for as long as the heartbeat keeps this server listed.
  forwarder_->stop();
  heartbeat_->stop();
  if (!joined) {
    ctx_->log.error("Shutdown: some handlers ignored cancellation; abandoning their threads");
    for (auto& p : processors_) (void)p.release();
    (void)syncer_.release();
    (void)ctx_.release();
  } else {
    ctx_->log.info("Queue engine stopped");
  }
  phase_ = 3;
}

bool Engine::healthy() const {
  const int phase = phase_.load();
  if (phase == 2) return true;   // shutting down on purpose
  if (phase != 1) return false;  // not serving
  return std::all_of(processors_.begin(), processors_.end(), [](const auto& p) { return p->healthy(); }) &&
         heartbeat_->healthy() && forwarder_->healthy() && recoverer_->healthy() && janitor_->healthy() &&
         syncer_->healthy() && subscriber_->healthy();
}

bool Engine::redis_up() const { return ctx_ && ctx_->health.up(); }
ServerStatus Engine::status() const { return ctx_ ? ctx_->status.load() : ServerStatus::closed; }
int Engine::running_tasks() const { return ctx_ ? ctx_->inflight.size() : 0; }
const ServerIdentity& Engine::identity() const { return ctx_->settings.identity; }
std::vector<FlowLimitState> Engine::flow_limits() const { return ctx_->flow.limits(); }
std::vector<FlowTypeState> Engine::flow_types() const { return ctx_->flow.types(); }

}  // namespace wk::queue
