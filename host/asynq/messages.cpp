#include "asynq/messages.hpp"

#include <string>

namespace wk::asynq {

namespace {

enum WireType : uint32_t {
  kVarint = 0,
  kFixed64 = 1,
  kLen = 2,
  kStartGroup = 3,
  kEndGroup = 4,
  kFixed32 = 5
};

// ---- UTF-8 ------------------------------------------------------------------------------------

// Length of the well-formed UTF-8 sequence at text[i], or, when it is ill-formed, minus the length
// of its maximal subpart (the bytes to replace by one U+FFFD; at least 1).
int utf8_sequence(std::string_view text, size_t i) noexcept {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  if (lead < 0x80) return 1;
  int need = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the first continuation byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 1;
  } else if (lead == 0xE0) {
    need = 2, lo = 0xA0;
  } else if ((lead >= 0xE1 && lead <= 0xEC) || lead == 0xEE || lead == 0xEF) {
    need = 2;
  } else if (lead == 0xED) {
    need = 2, hi = 0x9F;  // no surrogates
  } else if (lead == 0xF0) {
    need = 3, lo = 0x90;
  } else if (lead >= 0xF1 && lead <= 0xF3) {
    need = 3;
  } else if (lead == 0xF4) {
    need = 3, hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return -1;
  }
  for (int k = 1; k <= need; ++k) {
    if (i + static_cast<size_t>(k) >= text.size()) return -k;
    const unsigned char c = byte(i + static_cast<size_t>(k));
    const unsigned char min = k == 1 ? lo : 0x80, max = k == 1 ? hi : 0xBF;
    if (c < min || c > max) return -k;
  }
  return need + 1;
}

// ---- writer -----------------------------------------------------------------------------------

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void put_tag(std::string& out, uint32_t field, WireType wt) { put_varint(out, (uint64_t{field} << 3) | wt); }

size_t varint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) v >>= 7, ++n;
  return n;
}

// Writes a length-delimited field even when empty (map entries need that); strings are
// sanitised to UTF-8, bytes fields are not.
void put_len_always(std::string& out, uint32_t field, std::string_view value, bool is_string) {
  put_tag(out, field, kLen);
  if (is_string && !is_valid_utf8(value)) {
    const std::string clean = sanitize_utf8(value);
    put_varint(out, clean.size());
    out.append(clean);
    return;
  }
  put_varint(out, value.size());
  out.append(value);
}
void put_string(std::string& out, uint32_t field, std::string_view value) {
  if (!value.empty()) put_len_always(out, field, value, true);
}
void put_bytes(std::string& out, uint32_t field, std::string_view value) {
  if (!value.empty()) put_len_always(out, field, value, false);
}
void put_int64(std::string& out, uint32_t field, int64_t value) {
  if (value == 0) return;
  put_tag(out, field, kVarint);
  put_varint(out, static_cast<uint64_t>(value));
}
void put_uint64(std::string& out, uint32_t field, uint64_t value) {
  put_int64(out, field, static_cast<int64_t>(value));
}
// int32 negatives are sign-extended to 64 bits on the wire (10 bytes), as protobuf requires.
void put_int32(std::string& out, uint32_t field, int32_t value) { put_int64(out, field, value); }
void put_bool(std::string& out, uint32_t field, bool value) {
  if (!value) return;
  put_tag(out, field, kVarint);
  out.push_back(1);
}

void put_timestamp(std::string& out, uint32_t field, const std::optional<Timestamp>& ts) {
  if (!ts) return;
  std::string body;
  put_int64(body, 1, ts->seconds);
  put_int32(body, 2, ts->nanos);
  put_len_always(out, field, body, false);
}

// One map entry: key (1) and value (2) are both always written, as Go does.
void put_string_map_entry(std::string& out, uint32_t field, std::string_view key, std::string_view value) {
  const std::string clean_key = is_valid_utf8(key) ? std::string() : sanitize_utf8(key);
  const std::string clean_value = is_valid_utf8(value) ? std::string() : sanitize_utf8(value);
  const std::string_view k = clean_key.empty() ? key : std::string_view(clean_key);
  const std::string_view v = clean_value.empty() ? value : std::string_view(clean_value);
  const size_t size = 1 + varint_size(k.size()) + k.size() + 1 + varint_size(v.size()) + v.size();
  put_tag(out, field, kLen);
  put_varint(out, size);
  put_len_always(out, 1, k, false);
  put_len_always(out, 2, v, false);
}
void put_int32_map_entry(std::string& out, uint32_t field, std::string_view key, int32_t value) {
  std::string entry;
  put_len_always(entry, 1, key, true);
  put_tag(entry, 2, kVarint);
  put_varint(entry, static_cast<uint64_t>(int64_t{value}));
  put_len_always(out, field, entry, false);
}

// ---- reader -----------------------------------------------------------------------------------

class Reader {
 public:
  Reader(std::string_view data, const char* message) : data_(data), message_(message) {}
  bool done() const { return pos_ >= data_.size(); }
  size_t pos() const { return pos_; }

  uint64_t varint() {
    uint64_t result = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) fail("truncated varint");
      const auto b = static_cast<unsigned char>(data_[pos_++]);
      if (shift == 63 && b > 1) fail("varint overflows 64 bits");
      result |= uint64_t{b & 0x7Fu} << shift;
      if ((b & 0x80) == 0) return result;
    }
    fail("varint longer than 10 bytes");
  }
  // Returns {field, wire type}.
  std::pair<uint32_t, uint32_t> tag() {
    const uint64_t t = varint();
    const uint64_t field = t >> 3;
    if (field == 0 || field > 0x1FFFFFFF) fail("invalid field number " + std::to_string(field));
    return {static_cast<uint32_t>(field), static_cast<uint32_t>(t & 7)};
  }
  std::string_view bytes() {
    const uint64_t len = varint();
    if (len > data_.size() - pos_) {
      fail("length " + std::to_string(len) + " runs past the end (" + std::to_string(data_.size() - pos_) +
           " bytes left)");
    }
    std::string_view v = data_.substr(pos_, static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return v;
  }
  void skip(uint32_t wire_type) {
    switch (wire_type) {
      case kVarint:
        varint();
        return;
      case kFixed64:
        advance(8);
        return;
      case kLen:
        bytes();
        return;
      case kFixed32:
        advance(4);
        return;
      default:
        fail("unsupported wire type " + std::to_string(wire_type));
    }
  }
  std::string_view slice(size_t from) const { return data_.substr(from, pos_ - from); }

  [[noreturn]] void fail(const std::string& what) const {
    throw DecodeError(std::string("malformed ") + message_ + " at byte " + std::to_string(pos_) + ": " +
                      what);
  }
  void expect(uint32_t field, uint32_t got, uint32_t want) const {
    if (got != want) {
      fail("field " + std::to_string(field) + " has wire type " + std::to_string(got) + ", expected " +
           std::to_string(want));
    }
  }

 private:
  void advance(size_t n) {
    if (n > data_.size() - pos_) fail("fixed-size field runs past the end");
    pos_ += n;
  }
  std::string_view data_;
  const char* message_;
  size_t pos_ = 0;
};

int64_t read_int64(Reader& r, uint32_t field, uint32_t wt) {
  r.expect(field, wt, kVarint);
  return static_cast<int64_t>(r.varint());
}
int32_t read_int32(Reader& r, uint32_t field, uint32_t wt) {
  // Truncation to the low 32 bits is what protobuf does for int32.
  return static_cast<int32_t>(static_cast<uint32_t>(read_int64(r, field, wt) & 0xFFFFFFFF));
}
std::string read_len(Reader& r, uint32_t field, uint32_t wt) {
  r.expect(field, wt, kLen);
  return std::string(r.bytes());
}
// Unknown field: keep its raw bytes (tag included) so a re-encode writes them back.
void keep_unknown(Reader& r, size_t tag_start, uint32_t wt, std::string& unknown) {
  r.skip(wt);
  unknown.append(r.slice(tag_start));
}

void read_timestamp(Reader& outer, uint32_t field, uint32_t wt, std::optional<Timestamp>& ts) {
  outer.expect(field, wt, kLen);
  Reader r(outer.bytes(), "google.protobuf.Timestamp");
  if (!ts) ts.emplace();  // a repeated message field merges into the earlier one
  while (!r.done()) {
    const auto [f, w] = r.tag();
    if (f == 1) {
      ts->seconds = read_int64(r, f, w);
    } else if (f == 2) {
      ts->nanos = read_int32(r, f, w);
    } else {
      r.skip(w);
    }
  }
}

template <class Value, class ReadValue>
void read_map_entry(Reader& outer, uint32_t field, uint32_t wt,
                    std::vector<std::pair<std::string, Value>>& map, ReadValue read_value) {
  outer.expect(field, wt, kLen);
  Reader r(outer.bytes(), "map entry");
  std::string key;
  Value value{};
  while (!r.done()) {
    const auto [f, w] = r.tag();
    if (f == 1) {
      key = read_len(r, f, w);
    } else if (f == 2) {
      value = read_value(r, f, w);
    } else {
      r.skip(w);
    }
  }
  for (auto& entry : map) {
    if (entry.first == key) {  // a later entry for the same key wins
      entry.second = std::move(value);
      return;
    }
  }
  map.emplace_back(std::move(key), std::move(value));
}

}  // namespace

// ---- UTF-8 (public) -----------------------------------------------------------------------------

bool is_valid_utf8(std::string_view text) noexcept {
  for (size_t i = 0; i < text.size();) {
    // ASCII fast path
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      ++i;
      continue;
    }
    const int n = utf8_sequence(text, i);
    if (n < 0) return false;
    i += static_cast<size_t>(n);
  }
  return true;
}

std::string sanitize_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const int n = utf8_sequence(text, i);
    if (n > 0) {
      out.append(text.substr(i, static_cast<size_t>(n)));
      i += static_cast<size_t>(n);
    } else {
      out.append("\xEF\xBF\xBD");
      i += static_cast<size_t>(-n);
    }
  }
  return out;
}

// ---- TaskMessage --------------------------------------------------------------------------------

void encode(const TaskMessage& m, std::string& out) {
  out.clear();
  put_string(out, 1, m.type);
  put_bytes(out, 2, m.payload);
  put_string(out, 3, m.id);
  put_string(out, 4, m.queue);
  put_int32(out, 5, m.retry);
  put_int32(out, 6, m.retried);
  put_string(out, 7, m.error_msg);
  put_int64(out, 8, m.timeout);
  put_int64(out, 9, m.deadline);
  put_string(out, 10, m.unique_key);
  put_int64(out, 11, m.last_failed_at);
  put_int64(out, 12, m.retention);
  put_int64(out, 13, m.completed_at);
  put_string(out, 14, m.group_key);
  for (const auto& [k, v] : m.headers) put_string_map_entry(out, 15, k, v);
  out.append(m.unknown);
}

TaskMessage decode_task_message(std::string_view bytes) {
  TaskMessage m;
  Reader r(bytes, "asynq.TaskMessage");
  while (!r.done()) {
    const size_t start = r.pos();
    const auto [f, w] = r.tag();
    switch (f) {
      case 1:
        m.type = read_len(r, f, w);
        break;
      case 2:
        m.payload = read_len(r, f, w);
        break;
      case 3:
        m.id = read_len(r, f, w);
        break;
      case 4:
        m.queue = read_len(r, f, w);
        break;
      case 5:
        m.retry = read_int32(r, f, w);
        break;
      case 6:
        m.retried = read_int32(r, f, w);
        break;
      case 7:
        m.error_msg = read_len(r, f, w);
        break;
      case 8:
        m.timeout = read_int64(r, f, w);
        break;
      case 9:
        m.deadline = read_int64(r, f, w);
        break;
      case 10:
        m.unique_key = read_len(r, f, w);
        break;
      case 11:
        m.last_failed_at = read_int64(r, f, w);
        break;
      case 12:
        m.retention = read_int64(r, f, w);
        break;
      case 13:
        m.completed_at = read_int64(r, f, w);
        break;
      case 14:
        m.group_key = read_len(r, f, w);
        break;
      case 15:
        read_map_entry(r, f, w, m.headers, read_len);
        break;
      default:
        keep_unknown(r, start, w, m.unknown);
    }
  }
  return m;
}

// ---- ServerInfo ---------------------------------------------------------------------------------

void encode(const ServerInfo& s, std::string& out) {
  out.clear();
  put_string(out, 1, s.host);
  put_int32(out, 2, s.pid);
  put_string(out, 3, s.server_id);
  put_int32(out, 4, s.concurrency);
  for (const auto& [q, priority] : s.queues) put_int32_map_entry(out, 5, q, priority);
  put_bool(out, 6, s.strict_priority);
  put_string(out, 7, s.status);
  put_timestamp(out, 8, s.start_time);
  put_int32(out, 9, s.active_worker_count);
  out.append(s.unknown);
}

ServerInfo decode_server_info(std::string_view bytes) {
  ServerInfo s;
  Reader r(bytes, "asynq.ServerInfo");
  while (!r.done()) {
    const size_t start = r.pos();
    const auto [f, w] = r.tag();
    switch (f) {
      case 1:
        s.host = read_len(r, f, w);
        break;
      case 2:
        s.pid = read_int32(r, f, w);
        break;
      case 3:
        s.server_id = read_len(r, f, w);
        break;
      case 4:
        s.concurrency = read_int32(r, f, w);
        break;
      case 5:
        read_map_entry(r, f, w, s.queues, read_int32);
        break;
      case 6:
        s.strict_priority = read_int64(r, f, w) != 0;
        break;
      case 7:
        s.status = read_len(r, f, w);
        break;
      case 8:
        read_timestamp(r, f, w, s.start_time);
        break;
      case 9:
        s.active_worker_count = read_int32(r, f, w);
        break;
      default:
        keep_unknown(r, start, w, s.unknown);
    }
  }
  return s;
}

// ---- WorkerInfo ---------------------------------------------------------------------------------

void encode(const WorkerInfo& wi, std::string& out) {
  out.clear();
  put_string(out, 1, wi.host);
  put_int32(out, 2, wi.pid);
  put_string(out, 3, wi.server_id);
  put_string(out, 4, wi.task_id);
  put_string(out, 5, wi.task_type);
  put_bytes(out, 6, wi.task_payload);
  put_string(out, 7, wi.queue);
  put_timestamp(out, 8, wi.start_time);
  put_timestamp(out, 9, wi.deadline);
  put_uint64(out, 100, wi.progress_done);
  put_uint64(out, 101, wi.progress_total);
  put_string(out, 102, wi.progress_note);
  out.append(wi.unknown);
}

WorkerInfo decode_worker_info(std::string_view bytes) {
  WorkerInfo wi;
  Reader r(bytes, "asynq.WorkerInfo");
  while (!r.done()) {
    const size_t start = r.pos();
    const auto [f, w] = r.tag();
    switch (f) {
      case 1:
        wi.host = read_len(r, f, w);
        break;
      case 2:
        wi.pid = read_int32(r, f, w);
        break;
      case 3:
        wi.server_id = read_len(r, f, w);
        break;
      case 4:
        wi.task_id = read_len(r, f, w);
        break;
      case 5:
        wi.task_type = read_len(r, f, w);
        break;
      case 6:
        wi.task_payload = read_len(r, f, w);
        break;
      case 7:
        wi.queue = read_len(r, f, w);
        break;
      case 8:
        read_timestamp(r, f, w, wi.start_time);
        break;
      case 9:
        read_timestamp(r, f, w, wi.deadline);
        break;
      case 100:
        wi.progress_done = static_cast<uint64_t>(read_int64(r, f, w));
        break;
      case 101:
        wi.progress_total = static_cast<uint64_t>(read_int64(r, f, w));
        break;
      case 102:
        wi.progress_note = read_len(r, f, w);
        break;
      default:
        keep_unknown(r, start, w, wi.unknown);
    }
  }
  return wi;
}

std::string encode(const TaskMessage& msg) {
  std::string out;
  encode(msg, out);
  return out;
}
std::string encode(const ServerInfo& info) {
  std::string out;
  encode(info, out);
  return out;
}
std::string encode(const WorkerInfo& info) {
  std::string out;
  encode(info, out);
  return out;
}

}  // namespace wk::asynq
