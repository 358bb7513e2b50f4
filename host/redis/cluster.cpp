// Redis Cluster: key slots, the slot map, and a Connection that routes each command to the node
// serving its key (docs/operations.md, "Redis in production").
#include <algorithm>
#include <cctype>
#include <charconv>
#include <deque>
#include <map>
#include <thread>

#include "redis/redis.hpp"

namespace wk::redis {

namespace {

constexpr size_t kSlots = 16384;
// Redirections followed for one command before giving up (a map that keeps changing).
constexpr int kMaxRedirects = 16;
// TRYAGAIN (a multi-key command during a slot's migration): asked again after this long, for
// as long as a slot's migration may take.
constexpr auto kTryAgainPause = std::chrono::milliseconds(25);
constexpr auto kMigrationWait = std::chrono::seconds(10);

// CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with.
uint16_t crc16(std::string_view bytes) {
  uint16_t crc = 0;
  for (const char c : bytes) {
    crc = static_cast<uint16_t>(crc ^ (static_cast<uint16_t>(static_cast<unsigned char>(c)) << 8U));
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 0x8000U) != 0 ? static_cast<uint16_t>((crc << 1U) ^ 0x1021U)
                                 : static_cast<uint16_t>(crc << 1U);
    }
  }
  return crc;
}

bool equals_ci(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::toupper(static_cast<unsigned char>(x)) == std::toupper(static_cast<unsigned char>(y));
         });
}

// The key a command is routed by; none for commands without one (they go where the previous
// command went, so that MULTI ... EXEC stays with its WATCH).
std::optional<std::string_view> routing_key(Argv argv) {
  if (argv.size() < 2) return std::nullopt;
  const std::string_view name = argv[0];
  if (equals_ci(name, "EVALSHA") || equals_ci(name, "EVAL")) {
    size_t numkeys = 0;
    const std::string_view n = argv[2 < argv.size() ? 2 : 0];
    const auto [ptr, ec] = std::from_chars(n.data(), n.data() + n.size(), numkeys);
    if (argv.size() < 4 || ec != std::errc() || numkeys == 0) return std::nullopt;
    return argv[3];
  }
  for (const char* keyless : {"PING",   "MULTI",  "EXEC", "DISCARD", "UNWATCH", "SCRIPT",    "AUTH",
                              "SELECT", "ROLE",   "INFO", "CLUSTER", "PUBLISH", "SUBSCRIBE", "ECHO",
                              "CLIENT", "ASKING", "WAIT", "TIME",    "CONFIG",  "COMMAND",   "HELLO"}) {
    if (equals_ci(name, keyless)) return std::nullopt;
  }
  return argv[1];
}

// "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381" -> (slot, node).
std::optional<std::pair<uint16_t, std::string>> redirection(std::string_view error, std::string_view kind) {
  if (!error.starts_with(kind) || error.size() <= kind.size() || error[kind.size()] != ' ')
    return std::nullopt;
  error.remove_prefix(kind.size() + 1);
  const size_t space = error.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  unsigned slot = 0;
  const auto [ptr, ec] = std::from_chars(error.data(), error.data() + space, slot);
  if (ec != std::errc() || slot >= kSlots) return std::nullopt;
  return std::make_pair(static_cast<uint16_t>(slot), std::string(error.substr(space + 1)));
}

}  // namespace

uint16_t key_slot(std::string_view key) {
  // Only the part between the first '{' and the next '}' counts, when it is not empty.
  const size_t open = key.find('{');
  if (open != std::string_view::npos) {
    const size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) key = key.substr(open + 1, close - open - 1);
  }
  return static_cast<uint16_t>(crc16(key) % kSlots);
}

// ---- Cluster ------------------------------------------------------------------------------------

Cluster::Cluster(Options options) : options_(std::move(options)), slot_to_node_(kSlots, -1) {
  if (options_.seeds.empty()) throw Error(Error::Kind::setting, "REDIS_CLUSTER_NODES: no node given");
}

Settings Cluster::node_settings(const std::string& node) const {
  const Address a = Address::parse(node);
  Settings s = options_.connection;
  s.host = a.host;
  s.port = a.port;
  return s;
}

void Cluster::refresh() {
  // Known masters first (they know the current map), then the seeds.
  std::vector<std::string> candidates = nodes_;
  for (const auto& seed : options_.seeds) {
    std::string node = seed.text();
    if (std::find(candidates.begin(), candidates.end(), node) == candidates.end()) candidates.push_back(node);
  }
  std::string problems;
  for (const auto& candidate : candidates) {
    try {
      Connection conn(node_settings(candidate));
      Reply slots = conn.command({"CLUSTER", "SLOTS"});
      std::vector<std::string> nodes;
      std::vector<int16_t> map(kSlots, -1);
      // [[start, end, [ip, port, id...], replicas...], ...]; the first node is the master. An
      // empty ip means "the address you reached me at".
      for (size_t i = 0; i < slots.size(); ++i) {
        const ReplyView range = slots[i];
        if (range.size() < 3 || range[2].size() < 2) continue;
        std::string host(range[2][0].str());
        if (host.empty() || host == "?") host = Address::parse(candidate).host;
        const std::string node = host + ":" + std::to_string(range[2][1].integer());
        auto it = std::find(nodes.begin(), nodes.end(), node);
        if (it == nodes.end()) it = nodes.insert(nodes.end(), node);
        const auto index = static_cast<int16_t>(it - nodes.begin());
        const long long first = range[0].integer();
        const long long last = range[1].integer();
        for (long long slot = std::max(0LL, first); slot <= last && slot < static_cast<long long>(kSlots);
             ++slot) {
          map[static_cast<size_t>(slot)] = index;
        }
      }
      if (nodes.empty()) {
        problems += "; " + candidate + ": no slot is served";
        continue;
      }
      nodes_ = std::move(nodes);
      slot_to_node_ = std::move(map);
      stale_.store(false, std::memory_order_release);
      return;
    } catch (const Error& e) {
      problems += std::string("; ") + e.what();
    }
  }
  throw Error(Error::Kind::connection, "no cluster node answered CLUSTER SLOTS" + problems);
}

std::string Cluster::node_for(uint16_t slot) {
  std::lock_guard lock(mu_);
  if (stale_.load(std::memory_order_acquire) || nodes_.empty()) refresh();
  int16_t index = slot_to_node_[slot];
  if (index < 0) {
    refresh();  // an unserved slot: perhaps the map moved on
    index = slot_to_node_[slot];
    if (index < 0)
      throw Error(Error::Kind::connection, "cluster: no node serves slot " + std::to_string(slot));
  }
  return nodes_[static_cast<size_t>(index)];
}

std::vector<std::string> Cluster::masters() {
  std::lock_guard lock(mu_);
  if (stale_.load(std::memory_order_acquire) || nodes_.empty()) refresh();
  return nodes_;
}

void Cluster::moved(uint16_t slot, const std::string& node) {
  std::lock_guard lock(mu_);
  auto it = std::find(nodes_.begin(), nodes_.end(), node);
  if (it == nodes_.end()) it = nodes_.insert(nodes_.end(), node);
  slot_to_node_[slot] = static_cast<int16_t>(it - nodes_.begin());
  // One slot moved is usually a resharding in progress: the next routing reads the whole map.
  stale_.store(true, std::memory_order_release);
}

// ---- Connection in cluster mode -----------------------------------------------------------------

struct Connection::Routed {
  Routed(std::shared_ptr<Cluster> c, std::mutex& m) : cluster(std::move(c)), mu(m) {}

  struct Pending {
    std::string node;
    std::vector<std::string> argv;  // kept to send again when redirected
  };

  std::shared_ptr<Cluster> cluster;
  std::mutex& mu;  // the owning Connection's fd_mu_: guards `nodes` against interrupt()
  std::map<std::string, std::unique_ptr<Connection>> nodes;      // pipelined, one per node
  std::map<std::string, std::unique_ptr<Connection>> redirects;  // for redirected commands
  std::deque<Pending> order;                                     // replies still to read
  std::string sticky;                                            // the node of the last keyed command
  bool broken = false;

  Connection& connection(std::map<std::string, std::unique_ptr<Connection>>& pool, const std::string& node) {
    auto it = pool.find(node);
    if (it == pool.end()) {
      auto conn = std::make_unique<Connection>(cluster->node_settings(node));
      std::lock_guard lock(mu);
      it = pool.emplace(node, std::move(conn)).first;
    }
    return *it->second;
  }

  void drop_all() noexcept {
    std::lock_guard lock(mu);
    nodes.clear();
    redirects.clear();
    order.clear();
    broken = true;
  }

  // A node failed: every socket may be stale, and so may the map.
  template <typename Fn>
  auto guarded(Fn&& fn) -> decltype(fn()) {
    try {
      return fn();
    } catch (const Error& e) {
      if (e.is_connection()) {
        drop_all();
        cluster->mark_stale();
      }
      throw;
    }
  }

  std::string route(Argv argv) {
    if (const auto key = routing_key(argv)) {
      sticky = cluster->node_for(key_slot(*key));
      return sticky;
    }
    if (sticky.empty()) sticky = cluster->masters().front();
    return sticky;
  }

  void append(Argv argv) {
    guarded([&] {
      broken = false;
      const std::string node = route(argv);
      connection(nodes, node).append(argv);
      order.push_back({node, std::vector<std::string>(argv.begin(), argv.end())});
    });
  }

  Reply read_reply() {
    if (order.empty()) throw Error(Error::Kind::connection, "redis cluster: no reply expected");
    Pending pending = std::move(order.front());
    order.pop_front();
    return guarded([&] {
      Reply reply = connection(nodes, pending.node).read_reply();
      return follow_redirections(pending, std::move(reply));
    });
  }

  // MOVED: the slot lives elsewhere now (the map is fixed and the command sent there). ASK: this
  // one command goes to the importing node, after ASKING. TRYAGAIN: a multi-key command while
  // its slot migrates; asked again shortly, for up to kMigrationWait.
  Reply follow_redirections(const Pending& pending, Reply reply) {
    const std::vector<std::string_view> argv(pending.argv.begin(), pending.argv.end());
    const auto give_up_at = std::chrono::steady_clock::now() + kMigrationWait;
    for (int i = 0; i < kMaxRedirects && reply.is_error(); ++i) {
      const std::string_view error = reply.str();
      if (auto moved = redirection(error, "MOVED")) {
        cluster->moved(moved->first, moved->second);
        reply = connection(redirects, moved->second).command_raw(argv);
      } else if (auto ask = redirection(error, "ASK")) {
        Connection& target = connection(redirects, ask->second);
        target.append({"ASKING"});
        target.append(argv);
        target.read_reply();
        reply = target.read_reply();
      } else if (error.starts_with("TRYAGAIN") || error.find("non local key") != std::string_view::npos) {
        // TRYAGAIN: a multi-key command while its slot migrates. "non local key": a script read a
        // key it did not declare that already moved (it stopped there); both pass once the
        // slot has moved. Waiting is not a redirection: it does not count against kMaxRedirects.
        if (std::chrono::steady_clock::now() >= give_up_at) break;
        std::this_thread::sleep_for(kTryAgainPause);
        --i;
        const auto key = routing_key(argv);
        const std::string node = key ? cluster->node_for(key_slot(*key)) : pending.node;
        reply = connection(redirects, node).command_raw(argv);
      } else if (error.starts_with("CLUSTERDOWN")) {
        throw Error(Error::Kind::connection, "redis cluster: " + std::string(error));
      } else {
        break;
      }
    }
    return reply;
  }
};

void Connection::route_through_cluster() {
  routed_.reset(new Routed(settings_.cluster,
                           fd_mu_));  // NOLINT(cppcoreguidelines-owning-memory): RoutedFree deletes it
  address_ = "cluster";
  settings_.cluster->masters();  // reads the map: a cluster that cannot be reached throws here
}

void Connection::routed_append(Argv argv) { routed_->append(argv); }

Reply Connection::routed_read() { return routed_->read_reply(); }

void Connection::routed_ensure_loaded(const Script& script) {
  routed_->guarded([&] {
    for (const auto& node : settings_.cluster->masters())
      routed_->connection(routed_->nodes, node).ensure_loaded(script);
  });
}

std::pair<Reply, Reply> Connection::routed_blocking(Argv argv, Argv then,
                                                    std::chrono::milliseconds block_for) {
  return routed_->guarded([&] {
    const std::string node = routed_->route(argv);
    try {
      return routed_->connection(routed_->nodes, node).blocking_command_then(argv, then, block_for);
    } catch (const Error& e) {
      // A blocking wait is not redirected (the engine dequeues next, which is); the map is fixed.
      if (auto moved = redirection(e.what(), "MOVED")) settings_.cluster->moved(moved->first, moved->second);
      throw;
    }
  });
}

void Connection::routed_interrupt() noexcept {
  std::lock_guard lock(fd_mu_);
  for (auto& [node, conn] : routed_->nodes) conn->interrupt();
}

bool Connection::routed_broken() const noexcept { return routed_->broken; }
bool Connection::routed_unread() const noexcept { return !routed_->order.empty(); }
void Connection::routed_disconnect() noexcept { routed_->drop_all(); }
void Connection::RoutedFree::operator()(Routed* r) const noexcept { delete r; }

}  // namespace wk::redis
