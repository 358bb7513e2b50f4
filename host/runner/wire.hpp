#pragma once
// Internal: the frames worker and plugin runner exchange over their socket (docs/plugin-isolation.md).
//
// A frame is  u32 length | u8 kind | u64 id | body  (little-endian; length counts kind, id and
// body). Bodies are written with Writer and read with Reader, field by field, in the order the
// encode/decode pair below fixes. A malformed frame throws WireError: the peer is then treated as
// broken (a runner that sends garbage is killed like one that crashed).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "db/db.hpp"
#include "plugins/plugins.hpp"
#include "task/task.hpp"

namespace wk::runner::wire {

class WireError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Frame kinds. Worker -> runner: hello, admit, run, cancel, reply, ping, shutdown.
// Runner -> worker: declared, loaded, done, log, call, pong.
// Loading takes two steps, so that the worker (which knows the other plugins) decides before
// the plugin's init() runs: hello -> declared (what the file declares) -> admit -> loaded.
enum class Kind : uint8_t {
  hello = 1,      // id 0; body: Hello
  admit = 7,      // id 0; body: u8 Admission::Verdict + reason
  run = 2,        // id = call id; body: handler task type + Task
  cancel = 3,     // id = call id; body: i32 CancelReason
  reply = 4,      // id = rpc id; body: u8 ok (1) + result, or 0 + RemoteError
  ping = 5,       // id = sequence number
  shutdown = 6,   // id 0: drain, call the plugin's shutdown(), exit 0
  loaded = 16,    // id 0; body: u8 ok + PluginInfo, or 0 + reason
  declared = 21,  // id 0; body: PluginInfo (validated, init not run yet)
  done = 17,      // id = call id; body: Outcome + staged follow-ups
  log = 18,       // id 0; body: level, message, fields
  call = 19,      // id = rpc id; body: Op + arguments
  pong = 20,      // id = the ping's sequence number
};

// Host services a runner asks the worker for (the pg_*, enqueue and result functions of the
// host API that need the worker's pool, Redis or the task's engine state).
enum class Op : uint8_t {
  query = 1,          // call id, sql, params, binary -> Result
  begin = 2,          // call id -> tx id
  tx_query = 3,       // tx id, sql, params, binary -> Result
  tx_commit = 4,      // tx id -> -
  tx_rollback = 5,    // tx id -> -
  tx_once = 6,        // tx id, key -> u8 first
  migrate = 7,        // plugin id, migrations -> -
  healthy = 8,        // -> u8
  enqueue = 9,        // request -> task id
  validate = 10,      // request -> -
  write_result = 11,  // call id, data -> u8 written
  heartbeat = 12      // call id -> -
};

constexpr size_t kHeaderSize = 4 + 1 + 8;
// A frame larger than this is refused as malformed (task payloads and results are far smaller).
constexpr size_t kMaxFrame = size_t{512} * 1024 * 1024;

class Writer {
 public:
  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(uint32_t v) { raw(&v, sizeof v); }
  void u64(uint64_t v) { raw(&v, sizeof v); }
  void i32(int32_t v) { raw(&v, sizeof v); }
  void i64(int64_t v) { raw(&v, sizeof v); }
  void str(std::string_view s) {
    u64(s.size());
    out_.append(s.data(), s.size());
  }
  std::string take() { return std::move(out_); }
  const std::string& data() const { return out_; }

 private:
  void raw(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  uint8_t u8() { return static_cast<uint8_t>(take(1)[0]); }
  uint32_t u32() { return fixed<uint32_t>(); }
  uint64_t u64() { return fixed<uint64_t>(); }
  int32_t i32() { return fixed<int32_t>(); }
  int64_t i64() { return fixed<int64_t>(); }
  std::string str() { return std::string(str_view()); }
  std::string_view str_view() {
    const uint64_t n = u64();
    if (n > in_.size()) throw WireError("frame truncated: string of " + std::to_string(n) + " bytes");
    return take(static_cast<size_t>(n));
  }
  // A count of elements that each take at least `min_element_bytes`: bounded by what is left.
  size_t count(size_t min_element_bytes = 1) {
    const uint64_t n = u64();
    if (n > in_.size() / std::max<size_t>(min_element_bytes, 1))
      throw WireError("frame truncated: " + std::to_string(n) + " elements");
    return static_cast<size_t>(n);
  }
  bool at_end() const { return in_.empty(); }

 private:
  template <class T>
  T fixed() {
    T v;
    const std::string_view b = take(sizeof v);
    std::memcpy(&v, b.data(), sizeof v);
    return v;
  }
  std::string_view take(size_t n) {
    if (n > in_.size()) throw WireError("frame truncated");
    std::string_view out = in_.substr(0, n);
    in_.remove_prefix(n);
    return out;
  }
  std::string_view in_;
};

// A whole frame: header + body. Throws WireError past kMaxFrame.
std::string frame(Kind kind, uint64_t id, std::string_view body);
// The same frame, appended to `out`.
void append_frame(std::string& out, Kind kind, uint64_t id, std::string_view body);

// What the worker tells a new runner.
struct Hello {
  std::string plugin_file;
  std::string staging_dir;  // base for the runner's private staging directory; empty = default
  int32_t log_level = 2;
  int64_t shutdown_grace_ms = 30000;
  int64_t inline_max_us = 50;  // RunnerOptions::inline_max
  bool has_pool = false;       // pg_* calls are offered (else WK_E_UNSUPPORTED, as in process)
  bool has_enqueuer = false;   // immediate enqueues are offered
  plugins::ConfigSnapshot config;
};
void encode(Writer& w, const Hello& v);
Hello decode_hello(Reader& r);

void encode(Writer& w, const plugins::PluginInfo& v);
plugins::PluginInfo decode_plugin_info(Reader& r);

void encode(Writer& w, const task::Task& v);
task::Task decode_task(Reader& r);

void encode(Writer& w, const task::EnqueueRequest& v);
task::EnqueueRequest decode_enqueue_request(Reader& r);

void encode(Writer& w, const task::Outcome& v);
task::Outcome decode_outcome(Reader& r);

void encode(Writer& w, const std::vector<db::Param>& v);
std::vector<db::Param> decode_params(Reader& r);

void encode(Writer& w, const std::vector<db::Migration>& v);
std::vector<db::Migration> decode_migrations(Reader& r);

void encode_log(Writer& w, log::Level level, std::string_view message, const log::Fields& fields);

// A query result, copied whole: the runner answers row/column/value calls locally.
void encode(Writer& w, const db::Result& v);
std::unique_ptr<db::Result> decode_result(Reader& r);

// An exception of the worker-side service, carried to the runner and rethrown there as the same
// kind (db::Error with its kind and SQLSTATE, std::invalid_argument, or std::runtime_error), so
// the host API maps it to the same status as in process.
void encode_current_exception(Writer& w);
[[noreturn]] void rethrow(Reader& r);

}  // namespace wk::runner::wire
