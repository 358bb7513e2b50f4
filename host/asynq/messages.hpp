#pragma once
// asynq's protobuf messages (protocol §4) and a small hand-written proto3 codec for them.
//
// The codec is byte-exact with Go's protobuf runtime for these messages: fields in number order,
// defaults left out, map entries written with both key and value, in the order held here.
// Fields the schema does not know are kept as raw bytes (`unknown`) and written back after the
// known ones, so a rewrite (retry, archive, complete) loses nothing a newer producer stored.
// Every string written is made valid UTF-8 first (protocol §4.7.2: Go readers reject invalid UTF-8).
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wk::asynq {

// Malformed protobuf bytes: truncated varint, length past the end, wrong wire type, ...
struct DecodeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

using Headers = std::vector<std::pair<std::string, std::string>>;

// google.protobuf.Timestamp
struct Timestamp {
  int64_t seconds = 0;
  int32_t nanos = 0;  // 0 ... 999'999'999
  friend bool operator==(const Timestamp&, const Timestamp&) = default;
};

// asynq.TaskMessage: the `msg` field of a task hash. Times are unix seconds, durations seconds.
struct TaskMessage {
  std::string type;            // 1
  std::string payload;         // 2 (bytes)
  std::string id;              // 3
  std::string queue;           // 4
  int32_t retry = 0;           // 5 max retries
  int32_t retried = 0;         // 6
  std::string error_msg;       // 7
  int64_t timeout = 0;         // 8 seconds, 0 = none
  int64_t deadline = 0;        // 9 unix-s, 0 = none
  std::string unique_key;      // 10
  int64_t last_failed_at = 0;  // 11 unix-s
  int64_t retention = 0;       // 12 seconds
  int64_t completed_at = 0;    // 13 unix-s
  std::string group_key;       // 14
  Headers headers;             // 15 map<string,string> (v0.26)
  std::string unknown;         // raw bytes of fields this schema does not know, in wire order
  friend bool operator==(const TaskMessage&, const TaskMessage&) = default;
};

// asynq.ServerInfo: the value of asynq:servers:{host:pid:sid}.
struct ServerInfo {
  std::string host;                                     // 1
  int32_t pid = 0;                                      // 2
  std::string server_id;                                // 3
  int32_t concurrency = 0;                              // 4
  std::vector<std::pair<std::string, int32_t>> queues;  // 5 map<string,int32>
  bool strict_priority = false;                         // 6
  std::string status;                                   // 7 "active" | "stopped" | "closed"
  std::optional<Timestamp> start_time;                  // 8
  int32_t active_worker_count = 0;                      // 9
  std::string unknown;
  friend bool operator==(const ServerInfo&, const ServerInfo&) = default;
};

// asynq.WorkerInfo: one value of the asynq:workers:{host:pid:sid} hash (field = task id).
struct WorkerInfo {
  std::string host;                     // 1
  int32_t pid = 0;                      // 2
  std::string server_id;                // 3
  std::string task_id;                  // 4
  std::string task_type;                // 5
  std::string task_payload;             // 6 (bytes)
  std::string queue;                    // 7
  std::optional<Timestamp> start_time;  // 8
  std::optional<Timestamp> deadline;    // 9
  // Ours, past asynq's fields (its decoders keep them as unknown fields and read on): the
  // handler's last reported progress (docs/asynq-protocol.md §4.3).
  uint64_t progress_done = 0;   // 100
  uint64_t progress_total = 0;  // 101, 0 = unknown
  std::string progress_note;    // 102
  std::string unknown;
  friend bool operator==(const WorkerInfo&, const WorkerInfo&) = default;
};

// Encoding. The `out` overloads clear `out` first and reuse its capacity (hot paths keep one
// buffer per thread); the returning overloads are for convenience.
void encode(const TaskMessage& msg, std::string& out);
void encode(const ServerInfo& info, std::string& out);
void encode(const WorkerInfo& info, std::string& out);
std::string encode(const TaskMessage& msg);
std::string encode(const ServerInfo& info);
std::string encode(const WorkerInfo& info);

// Decoding. Throws DecodeError on malformed input (never reads out of bounds). Strings that are
// not valid UTF-8 are accepted as they are (they are sanitised when written back).
TaskMessage decode_task_message(std::string_view bytes);
ServerInfo decode_server_info(std::string_view bytes);
WorkerInfo decode_worker_info(std::string_view bytes);

// True if `text` is valid UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool is_valid_utf8(std::string_view text) noexcept;
// `text` with every invalid byte sequence replaced by U+FFFD (one per maximal invalid subpart).
std::string sanitize_utf8(std::string_view text);

}  // namespace wk::asynq
