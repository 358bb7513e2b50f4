// The proto3 codec against the bytes real asynq v0.26.0 wrote (asynq-golden/*.json), plus
// malformed input and UTF-8 sanitising.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "asynq/messages.hpp"

namespace wk::asynq {
namespace {

using nlohmann::json;

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

struct GoldenValue {
  std::string where;
  std::string message;  // asynq.TaskMessage | asynq.ServerInfo | asynq.WorkerInfo
  std::string bytes;
  json decoded;
};

void collect(const json& node, const std::string& where, std::vector<GoldenValue>& out) {
  if (node.is_object()) {
    if (node.contains("decoded") && node["decoded"].is_object() && node.contains("value")) {
      const json& value = node["value"];
      if (value.is_object() && value.contains("hex")) {
        out.push_back({where, node["decoded"]["message"], from_hex(value["hex"]), node["decoded"]});
      }
    }
    for (const auto& [k, v] : node.items()) collect(v, where + "/" + k, out);
  } else if (node.is_array()) {
    for (size_t i = 0; i < node.size(); ++i) collect(node[i], where + "/" + std::to_string(i), out);
  }
}

std::vector<GoldenValue> golden_values() {
  std::vector<GoldenValue> out;
  for (const auto& entry : std::filesystem::directory_iterator(WK_ASYNQ_GOLDEN_DIR)) {
    if (entry.path().extension() != ".json") continue;
    std::ifstream in(entry.path());
    collect(json::parse(in), entry.path().filename().string(), out);
  }
  return out;
}

const json& field(const json& decoded, int number) {
  for (const auto& f : decoded["fields"]) {
    if (f["number"] == number) return f;
  }
  throw std::runtime_error("no field " + std::to_string(number));
}
std::string str_of(const json& f) {
  return f["value"].is_object() ? from_hex(f["value"]["hex"]) : f["value"].get<std::string>();
}
template <class Map>
size_t map_size(const Map& m) {
  return m.size();
}
std::optional<Timestamp> ts_of(const json& f) {
  if (f["omitted"].get<bool>()) return std::nullopt;
  return Timestamp{f["value"]["seconds"].get<int64_t>(), f["value"]["nanos"].get<int32_t>()};
}

void expect_task(const TaskMessage& m, const json& d, const std::string& where) {
  SCOPED_TRACE(where);
  EXPECT_EQ(m.type, str_of(field(d, 1)));
  EXPECT_EQ(m.payload, str_of(field(d, 2)));
  EXPECT_EQ(m.id, str_of(field(d, 3)));
  EXPECT_EQ(m.queue, str_of(field(d, 4)));
  EXPECT_EQ(m.retry, field(d, 5)["value"].get<int32_t>());
  EXPECT_EQ(m.retried, field(d, 6)["value"].get<int32_t>());
  EXPECT_EQ(m.error_msg, str_of(field(d, 7)));
  EXPECT_EQ(m.timeout, field(d, 8)["value"].get<int64_t>());
  EXPECT_EQ(m.deadline, field(d, 9)["value"].get<int64_t>());
  EXPECT_EQ(m.unique_key, str_of(field(d, 10)));
  EXPECT_EQ(m.last_failed_at, field(d, 11)["value"].get<int64_t>());
  EXPECT_EQ(m.retention, field(d, 12)["value"].get<int64_t>());
  EXPECT_EQ(m.completed_at, field(d, 13)["value"].get<int64_t>());
  EXPECT_EQ(m.group_key, str_of(field(d, 14)));
  const json& headers = field(d, 15)["value"];
  ASSERT_EQ(m.headers.size(), headers.size());
  for (const auto& [k, v] : m.headers) EXPECT_EQ(headers.at(k).get<std::string>(), v);
  EXPECT_TRUE(m.unknown.empty());
}

void expect_server(const ServerInfo& s, const json& d, const std::string& where) {
  SCOPED_TRACE(where);
  EXPECT_EQ(s.host, str_of(field(d, 1)));
  EXPECT_EQ(s.pid, field(d, 2)["value"].get<int32_t>());
  EXPECT_EQ(s.server_id, str_of(field(d, 3)));
  EXPECT_EQ(s.concurrency, field(d, 4)["value"].get<int32_t>());
  const json& queues = field(d, 5)["value"];
  ASSERT_EQ(s.queues.size(), queues.size());
  for (const auto& [q, p] : s.queues) EXPECT_EQ(queues.at(q).get<int32_t>(), p);
  EXPECT_EQ(s.strict_priority, field(d, 6)["value"].get<bool>());
  EXPECT_EQ(s.status, str_of(field(d, 7)));
  EXPECT_EQ(s.start_time, ts_of(field(d, 8)));
  EXPECT_EQ(s.active_worker_count, field(d, 9)["value"].get<int32_t>());
}

void expect_worker(const WorkerInfo& w, const json& d, const std::string& where) {
  SCOPED_TRACE(where);
  EXPECT_EQ(w.host, str_of(field(d, 1)));
  EXPECT_EQ(w.pid, field(d, 2)["value"].get<int32_t>());
  EXPECT_EQ(w.server_id, str_of(field(d, 3)));
  EXPECT_EQ(w.task_id, str_of(field(d, 4)));
  EXPECT_EQ(w.task_type, str_of(field(d, 5)));
  EXPECT_EQ(w.task_payload, str_of(field(d, 6)));
  EXPECT_EQ(w.queue, str_of(field(d, 7)));
  EXPECT_EQ(w.start_time, ts_of(field(d, 8)));
  EXPECT_EQ(w.deadline, ts_of(field(d, 9)));
}

TEST(GoldenCodec, DecodesAndReencodesEveryGoldenValue) {
  const auto values = golden_values();
  size_t tasks = 0, servers = 0, workers = 0;
  for (const auto& g : values) {
    ASSERT_FALSE(g.decoded.contains("decode_error")) << g.where;
    if (g.message == "asynq.TaskMessage") {
      const TaskMessage m = decode_task_message(g.bytes);
      expect_task(m, g.decoded, g.where);
      const std::string again = encode(m);
      // Map entries come in random order from Go: bytes are comparable only with < 2 entries.
      if (m.headers.size() < 2) {
        EXPECT_EQ(again, g.bytes) << g.where;
      } else {
        EXPECT_EQ(again.size(), g.bytes.size()) << g.where;
        EXPECT_EQ(decode_task_message(again), m) << g.where;
      }
      ++tasks;
    } else if (g.message == "asynq.ServerInfo") {
      const ServerInfo s = decode_server_info(g.bytes);
      expect_server(s, g.decoded, g.where);
      const std::string again = encode(s);
      if (s.queues.size() < 2) {
        EXPECT_EQ(again, g.bytes) << g.where;
      } else {
        EXPECT_EQ(again.size(), g.bytes.size()) << g.where;
        EXPECT_EQ(decode_server_info(again), s) << g.where;
      }
      ++servers;
    } else if (g.message == "asynq.WorkerInfo") {
      const WorkerInfo w = decode_worker_info(g.bytes);
      expect_worker(w, g.decoded, g.where);
      EXPECT_EQ(encode(w), g.bytes) << g.where;
      ++workers;
    } else {
      ADD_FAILURE() << "unexpected message type " << g.message << " at " << g.where;
    }
  }
  // The vectors hold many of each; an empty walk would prove nothing.
  EXPECT_GT(tasks, 30u);
  EXPECT_GT(servers, 0u);
  EXPECT_GT(workers, 0u);
}

TEST(Codec, KeepsUnknownFieldsAndHeadersOnReencode) {
  TaskMessage m;
  m.type = "t";
  m.id = "id1";
  m.headers = {{"trace-id", "abc"}};
  std::string bytes = encode(m);
  // field 16 varint 7, field 20 length-delimited "xyz", field 21 fixed32, field 22 fixed64
  const std::string unknown = std::string("\x80\x01\x07", 3) + std::string("\xa2\x01\x03xyz", 6) +
                              std::string("\xad\x01\x01\x02\x03\x04", 6) +
                              std::string("\xb1\x01\x01\x02\x03\x04\x05\x06\x07\x08", 10);
  bytes += unknown;
  TaskMessage decoded = decode_task_message(bytes);
  EXPECT_EQ(decoded.unknown, unknown);
  EXPECT_EQ(decoded.headers, m.headers);
  decoded.retried = 3;
  decoded.error_msg = "boom";
  const TaskMessage again = decode_task_message(encode(decoded));
  EXPECT_EQ(again.unknown, unknown);
  EXPECT_EQ(again.headers, m.headers);
  EXPECT_EQ(again.retried, 3);
}

TEST(Codec, WorkerProgressFollowsAsynqsFieldsAndRoundTrips) {
  WorkerInfo w;
  w.host = "h";
  w.pid = 7;
  w.task_id = "id1";
  const std::string asynq_part = encode(w);
  w.progress_done = 3;
  w.progress_total = 300;
  w.progress_note = "ok";
  const std::string bytes = encode(w);
  // asynq's fields first and unchanged, then 100 (varint), 101 (varint), 102 (string).
  EXPECT_EQ(bytes, asynq_part + std::string("\xa0\x06\x03", 3) + std::string("\xa8\x06\xac\x02", 4) +
                       std::string("\xb2\x06\x02ok", 5));
  EXPECT_EQ(decode_worker_info(bytes), w);
  w.progress_done = 0;
  w.progress_total = 0;
  w.progress_note.clear();
  EXPECT_EQ(encode(w), asynq_part) << "no progress, no extra bytes";
}

TEST(Codec, NegativeInt32IsTenByteVarint) {
  TaskMessage m;
  m.retry = -1;
  const std::string bytes = encode(m);
  EXPECT_EQ(bytes, std::string("\x28\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11));
  EXPECT_EQ(decode_task_message(bytes).retry, -1);
}

TEST(Codec, EmptyMapValueIsWrittenLikeGo) {
  TaskMessage m;
  m.headers = {{"k", ""}};
  EXPECT_EQ(encode(m), std::string("\x7a\x05\x0a\x01k\x12\x00", 7));
}

TEST(Codec, RejectsMalformedInput) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {std::string("\x28", 1), "truncated varint"},
      {std::string("\x28\xff\xff", 3), "truncated varint"},
      {std::string("\x28\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12), "varint"},
      {std::string("\x0a\x05"
                   "ab",
                   4),
       "runs past the end"},
      {std::string("\x0a\xff\xff\xff\xff\x0f", 6), "runs past the end"},
      {std::string("\x08\x01", 2), "wire type"},                   // type (string) sent as varint
      {std::string("\x2a\x01x", 3), "wire type"},                  // retry (int32) sent as bytes
      {std::string("\x00\x01", 2), "field number"},                // field 0
      {std::string("\x83\x01", 2), "wire type"},                   // unknown group start
      {std::string("\x85\x01\x01", 3), "runs past"},               // fixed32 truncated
      {std::string("\x7a\x03\x0a\x05x", 5), "runs past the end"},  // header entry key too long
  };
  for (const auto& [bytes, what] : cases) {
    try {
      decode_task_message(bytes);
      ADD_FAILURE() << "accepted malformed input expecting: " << what;
    } catch (const DecodeError& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(decode_server_info(std::string("\x42\x02\x08", 3)), DecodeError);
  EXPECT_THROW(decode_worker_info(std::string("\x4a\x01", 2)), DecodeError);
}

TEST(Codec, SurvivesEveryTruncationOfARealMessage) {
  TaskMessage m;
  m.type = "email:send";
  m.payload = "{\"a\":1}";
  m.id = "abc";
  m.queue = "default";
  m.retry = 25;
  m.timeout = 1800;
  m.headers = {{"a", "b"}, {"c", "d"}};
  const std::string bytes = encode(m);
  for (size_t n = 0; n < bytes.size(); ++n) {
    try {
      (void)decode_task_message(std::string_view(bytes).substr(0, n));
    } catch (const DecodeError&) {
    }
  }
  EXPECT_EQ(decode_task_message(bytes), m);
}

TEST(Utf8, ValidTextIsUnchanged) {
  for (std::string_view s :
       {"", "plain", "caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xef\xbf\xbd"}) {
    EXPECT_TRUE(is_valid_utf8(s)) << s;
    EXPECT_EQ(sanitize_utf8(s), s);
  }
}

TEST(Utf8, InvalidSequencesBecomeReplacementCharacters) {
  const std::string r = "\xef\xbf\xbd";
  EXPECT_EQ(sanitize_utf8("a\xff"
                          "b"),
            "a" + r + "b");
  EXPECT_EQ(sanitize_utf8("\xc3"), r);                          // truncated 2-byte
  EXPECT_EQ(sanitize_utf8("\xe2\x82"), r);                      // truncated 3-byte: one U+FFFD
  EXPECT_EQ(sanitize_utf8("\xc0\xaf"), r + r);                  // overlong
  EXPECT_EQ(sanitize_utf8("\xed\xa0\x80"), r + r + r);          // surrogate
  EXPECT_EQ(sanitize_utf8("\xf4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\xed\xa0\x80"));
  EXPECT_TRUE(is_valid_utf8(sanitize_utf8("x\x80\xc3(\xf0\x9f\x98")));
}

TEST(Utf8, EncodeSanitisesStringsButNotBytes) {
  TaskMessage m;
  m.error_msg = "bad \xff byte";
  m.payload = "\xff";
  m.headers = {{"k\xff", "v\xfe"}};
  const TaskMessage back = decode_task_message(encode(m));
  EXPECT_EQ(back.error_msg, "bad \xef\xbf\xbd byte");
  EXPECT_EQ(back.payload, "\xff");
  EXPECT_EQ(back.headers[0].first, "k\xef\xbf\xbd");
  EXPECT_EQ(back.headers[0].second, "v\xef\xbf\xbd");
}

}  // namespace
}  // namespace wk::asynq
