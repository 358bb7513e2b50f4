#pragma once
// A Redis client: settings, one connection (plain TCP or TLS), replies, scripts, a small
// thread-safe pool, and a subscription (pub/sub) on a connection of its own. hiredis (0.14) is
// used for its RESP reply reader only; the socket and TLS are ours (host/redis/transport.hpp).
//
// A Connection is used by one thread at a time. Any I/O failure marks it broken; the next
// command reconnects (connect, TLS, AUTH, SELECT) before it is sent. Reply errors (-ERR ...) and
// connection errors are both redis::Error, told apart by kind().
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "posix/unique_fd.hpp"

struct redisReader;
struct redisReply;

namespace wk::redis {

// "host:port" of a server (a sentinel, a cluster node).
struct Address {
  std::string host;
  int port = 0;
  // "host:port" (the last colon splits, so "::1:6379" works); the port is 0 when it is no number.
  static Address parse(std::string_view text);
  std::string text() const { return host + ":" + std::to_string(port); }
};

// TLS to Redis (docs/operations.md, "Redis in production"). The server is verified unless
// `insecure`: its chain against `ca_file` (empty: the system's trust store) and its name against
// `server_name` (empty: the host connected to).
struct TlsOptions {
  std::string ca_file;
  std::string cert_file;  // client certificate for mutual TLS (PEM chain)
  std::string key_file;   // its private key (empty: in cert_file)
  std::string server_name;
  bool insecure = false;
};

class TlsClient;  // the loaded context, shared by every connection of one Settings
// Loads the files at once. Throws Error(Kind::setting) naming the variable whose file is bad.
std::shared_ptr<const TlsClient> make_tls_client(const TlsOptions& options);

class Sentinel;  // below: where the master is, for Redis run under Sentinel
class Cluster;   // below: which node serves which slot, for Redis Cluster

// The hash slot of a key (CRC16 of the key, or of its {hash tag}, mod 16384), as Redis Cluster
// computes it. asynq's keys carry the queue as their tag: one queue, one slot.
uint16_t key_slot(std::string_view key);

struct Settings {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string username;  // empty: AUTH <password> (or no AUTH); else AUTH <username> <password>
  std::string password;  // never logged, never part of an error text
  int db = 0;
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds command_timeout{5000};
  std::shared_ptr<const TlsClient> tls;  // null: plain TCP
  // Set: host and port are ignored; every connect asks the sentinels for the master.
  std::shared_ptr<Sentinel> sentinel;
  // Set: host and port are ignored; each command goes to the node that serves its key's slot.
  std::shared_ptr<Cluster> cluster;

  std::string address() const;  // "host:port", or "master <name> (sentinels)"
};

class Error : public std::runtime_error {
 public:
  enum class Kind {
    connection,  // could not connect, I/O error, timeout, protocol error: the command may or may not have run
    reply,       // Redis answered with an error reply (text in what())
    // A connection refused because of how it is configured (a certificate that does not verify,
    // a TLS file that cannot be read): waiting does not help. Also a connection error.
    setting,
  };
  Error(Kind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
  Kind kind() const noexcept { return kind_; }
  bool is_connection() const noexcept { return kind_ != Kind::reply; }
  bool is_setting() const noexcept { return kind_ == Kind::setting; }
  bool is_reply() const noexcept { return kind_ == Kind::reply; }

 private:
  Kind kind_;
};

// A non-owning view of one reply element.
class ReplyView {
 public:
  explicit ReplyView(const redisReply* reply) : reply_(reply) {}
  bool is_nil() const noexcept;
  bool is_error() const noexcept;
  bool is_string() const noexcept;  // bulk string or status
  bool is_integer() const noexcept;
  bool is_array() const noexcept;
  std::string_view str() const;  // bulk string, status or error text; throws if none
  // An error reply becomes Error(Kind::reply) with Redis's text (LOADING, OOM, WRONGTYPE...).
  const ReplyView& throw_if_error() const;
  long long integer() const;     // throws if not an integer
  size_t size() const noexcept;  // array length (0 if not an array)
  ReplyView operator[](size_t i) const;

 protected:
  const redisReply* reply_;
};

// Owns a reply (freeReplyObject on destruction).
class Reply : public ReplyView {
 public:
  explicit Reply(redisReply* reply);
  Reply(Reply&& other) noexcept;
  Reply& operator=(Reply&& other) noexcept;
  Reply(const Reply&) = delete;
  Reply& operator=(const Reply&) = delete;
  ~Reply();

 private:
  redisReply* owned_;
};

// A Lua script known by its SHA1: run with EVALSHA, falling back to EVAL on NOSCRIPT.
struct Script {
  explicit Script(std::string source);
  std::string source;
  std::string sha1;  // lowercase hex
};

using Argv = std::span<const std::string_view>;

// One script call of a batch sent with Connection::eval_all().
struct ScriptCall {
  const Script* script = nullptr;
  Argv keys_and_args;
  size_t numkeys = 0;
  std::optional<Reply> reply{};  // set by eval_all(): the script's reply, an error reply included
};

class Transport;

class Connection {
 public:
  explicit Connection(Settings settings);  // connects at once; throws Error
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // One command; throws Error for error replies too. Binary-safe.
  Reply command(Argv argv);
  Reply command(std::initializer_list<std::string_view> argv) {
    return command(Argv(argv.begin(), argv.size()));
  }
  // Same, but an error reply is returned (not thrown).
  Reply command_raw(Argv argv);

  // Pipelining: append several commands, then read one reply each, in order (errors returned,
  // not thrown). A connection failure marks the connection broken and throws.
  void append(Argv argv);
  void append(std::initializer_list<std::string_view> argv) { append(Argv(argv.begin(), argv.size())); }
  Reply read_reply();

  // EVALSHA keys.. args.. with EVAL fallback. numkeys = keys.size(). Error replies throw.
  Reply eval(const Script& script, Argv keys_and_args, size_t numkeys);
  // Pipelining for scripts: every call goes out in one write (EVALSHA each) and the replies are
  // read in order, so N calls cost one round trip. A call answered NOSCRIPT (script cache
  // flushed) runs again with EVAL after the others. Error replies land in each call's `reply`;
  // a connection failure throws, and which calls ran is then unknown (as for one command).
  void eval_all(std::span<ScriptCall> calls);
  // SCRIPT LOAD once per connection (needed before queueing EVALSHA inside MULTI).
  void ensure_loaded(const Script& script);

  // A command that may block in Redis up to `block_for` (BLMOVE ...), with `then` pipelined
  // behind it: Redis runs `then` the moment the first returns, so its answer costs no round trip
  // of its own. The socket read timeout is raised to block_for + command_timeout for the first
  // reply only. An error reply to the first throws; the second is returned as it is.
  std::pair<Reply, Reply> blocking_command_then(Argv argv, Argv then, std::chrono::milliseconds block_for);
  // Thread-safe: makes a concurrent blocking_command_then fail at once (shutdown(2) on the socket).
  // The connection reconnects on its next use.
  void interrupt() noexcept;

  bool broken() const noexcept { return routed_ ? routed_broken() : transport_ == nullptr; }
  // Replies appended for but not read yet: a pipeline abandoned half-way by an exception. Such a
  // connection must not be reused, or the next caller would read the previous caller's replies.
  bool has_unread_replies() const noexcept { return routed_ ? routed_unread() : unread_ != 0; }
  // Drops the socket; the next use reconnects. For connections that sat idle through a failure
  // seen elsewhere: the server probably restarted, and their sockets are dead too.
  void disconnect() noexcept {
    if (routed_) routed_disconnect();
    mark_broken();
  }
  const Settings& settings() const noexcept { return settings_; }
  // "host:port" of the server this connection reached last (the master's, under Sentinel).
  const std::string& address() const noexcept { return address_; }

 private:
  friend class Subscription;
  // Redis Cluster: a connection per node, each command routed by its key's slot (cluster.cpp).
  struct Routed;
  struct RoutedFree {
    void operator()(Routed* routed) const noexcept;
  };
  std::unique_ptr<Routed, RoutedFree> routed_;
  void route_through_cluster();
  void routed_append(Argv argv);
  Reply routed_read();
  void routed_ensure_loaded(const Script& script);
  std::pair<Reply, Reply> routed_blocking(Argv argv, Argv then, std::chrono::milliseconds block_for);
  void routed_interrupt() noexcept;
  bool routed_broken() const noexcept;
  bool routed_unread() const noexcept;
  void routed_disconnect() noexcept;  // reads pushed messages off the socket, which no command does
  struct ReaderFree {
    void operator()(redisReader* reader) const noexcept;
  };
  void ensure_connected();
  void connect();
  void mark_broken();
  [[noreturn]] void fail_io(const char* during);
  [[noreturn]] void fail_transport();
  Reply read_one();
  void flush();                         // sends what append() queued
  std::optional<Reply> parsed_reply();  // a reply already read off the socket, if any
  void read_more();                     // one read from the socket into the reader
  void set_read_timeout(std::chrono::milliseconds timeout);

  Settings settings_;
  std::string address_;
  uint64_t generation_ = 0;  // of settings_.sentinel, when connected
  std::unique_ptr<Transport> transport_;
  std::unique_ptr<redisReader, ReaderFree> reader_;
  std::mutex fd_mu_;  // guards fd_ for interrupt()
  int fd_ = -1;
  std::unordered_set<std::string> loaded_scripts_;
  size_t unread_ = 0;
  static constexpr size_t kMaxKeptBuffer = size_t{64} * 1024;
  std::string pending_;  // commands appended, in RESP, not sent yet
};

// A connection in subscriber mode on one channel (SUBSCRIBE). next() returns each message's
// payload; it connects (AUTH included) on first use and after a failure, pings a connection
// that has been silent for a while so that a dead peer is noticed, and waits with poll(2) on the
// socket and an eventfd, so that interrupt() from another thread makes it return at once. Not
// pooled: a subscribed connection can send nothing but (UN)SUBSCRIBE and PING.
class Subscription {
 public:
  Subscription(Settings settings, std::string channel);
  ~Subscription();
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  // The next message, or nothing once `timeout` passed or interrupt() was called. Throws Error
  // (connection, or reply for a refused AUTH/SUBSCRIBE); the next call connects again.
  std::optional<std::string> next(std::chrono::milliseconds timeout);
  void interrupt() noexcept;  // thread-safe

 private:
  [[noreturn]] void fail(const char* during);
  void read_more();

  Settings settings_;
  std::string channel_;
  std::optional<Connection> conn_;
  posix::UniqueFd wake_;  // eventfd
  std::chrono::steady_clock::time_point last_traffic_{};
  bool ping_outstanding_ = false;
};

// Redis under Sentinel: the master's address is asked of the sentinels (SENTINEL
// get-master-addr-by-name) at every connect, the one that answered last asked first. A
// connection checks that the server it reached is the master (ROLE) and reconnects when a
// failover was announced since it connected (generation()), when it is told READONLY, and
// when it is lost. Thread-safe; shared by every connection of one Settings.
class Sentinel {
 public:
  struct Options {
    std::vector<Address> sentinels;
    std::string master_name;
    // How a sentinel is spoken to: its credentials (never logged), timeouts and TLS; host and
    // port are each sentinel's.
    Settings connection;
  };
  explicit Sentinel(Options options);

  // The master's address. Throws Error(Kind::connection) when no sentinel answers or knows it.
  Address master();
  // How a watcher (SentinelWatch) reaches sentinel `i`.
  Settings sentinel_settings(size_t i) const;
  const Options& options() const noexcept { return options_; }
  // Bumped by master_switched(): connections made before it reconnect at their next command.
  uint64_t generation() const noexcept { return generation_.load(std::memory_order_acquire); }
  void master_switched() noexcept { generation_.fetch_add(1, std::memory_order_acq_rel); }

 private:
  Options options_;
  std::mutex mu_;
  size_t preferred_ = 0;
  std::atomic<uint64_t> generation_{0};
};

// Listens on the sentinels' +switch-master channel on a thread of its own (one sentinel at a
// time, the next one when it goes silent or away) and, for our master, bumps the generation and
// calls `on_switch` with the announcement ("<name> <old ip> <old port> <new ip> <new port>").
class SentinelWatch {
 public:
  SentinelWatch(std::shared_ptr<Sentinel> sentinel, std::function<void(const std::string&)> on_switch);
  ~SentinelWatch();  // stops and joins
  SentinelWatch(const SentinelWatch&) = delete;
  SentinelWatch& operator=(const SentinelWatch&) = delete;

 private:
  void run();

  std::shared_ptr<Sentinel> sentinel_;
  std::function<void(const std::string&)> on_switch_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  Subscription* current_ = nullptr;  // guarded by mu_, for interrupt()
  std::condition_variable cv_;
  std::thread thread_;
};

// Redis Cluster: the slot map (CLUSTER SLOTS, asked of the seed nodes and then of any node it
// names), updated at once by a MOVED redirection and read again in full when a node fails.
// Thread-safe; shared by every connection of one Settings.
class Cluster {
 public:
  struct Options {
    std::vector<Address> seeds;
    // How a node is spoken to: credentials (never logged), timeouts and TLS; host and port are
    // each node's.
    Settings connection;
  };
  explicit Cluster(Options options);

  // "host:port" of the master serving `slot`. Reads the map first if it is unknown or stale.
  // Throws Error(Kind::connection) when no node answers CLUSTER SLOTS.
  std::string node_for(uint16_t slot);
  // Every master in the map (scripts are loaded on each).
  std::vector<std::string> masters();
  // A MOVED reply: `slot` is served by `node` now; the rest of the map is read again soon.
  void moved(uint16_t slot, const std::string& node);
  // A node failed: read the whole map again before the next routing.
  void mark_stale() noexcept { stale_.store(true, std::memory_order_release); }
  // Plain settings for one node ("host:port").
  Settings node_settings(const std::string& node) const;
  const Options& options() const noexcept { return options_; }

 private:
  void refresh();  // mu_ held

  Options options_;
  std::mutex mu_;
  std::vector<std::string> nodes_;     // masters, "host:port"
  std::vector<int16_t> slot_to_node_;  // index into nodes_, -1 unknown
  std::atomic<bool> stale_{true};
};

// A fixed-size pool of connections, created lazily. acquire() blocks while all are in use.
class Pool {
 public:
  Pool(Settings settings, size_t size);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  class Lease {
   public:
    Lease(Pool& pool, std::unique_ptr<Connection> conn) : pool_(&pool), conn_(std::move(conn)) {}
    Lease(Lease&& other) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    ~Lease();
    Connection& operator*() const { return *conn_; }
    Connection* operator->() const { return conn_.get(); }

   private:
    Pool* pool_;
    std::unique_ptr<Connection> conn_;
  };

  Lease acquire();  // throws Error if a new connection cannot be made
  const Settings& settings() const noexcept { return settings_; }

 private:
  void give_back(std::unique_ptr<Connection> conn);

  Settings settings_;
  size_t size_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Connection>> idle_;
  size_t created_ = 0;
};

}  // namespace wk::redis
