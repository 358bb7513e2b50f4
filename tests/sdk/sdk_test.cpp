// Behaviour of wk_sdk.hpp against an in-process fake host: the trampolines' exception mapping,
// the registration macros' tables, and every C++ wrapper's translation to and from the C ABI.
// Built twice, as C++17 and as C++20.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "wk_sdk.hpp"

namespace {

using namespace std::chrono_literals;

std::string to_string(wk_str s) { return std::string(wk::view(s)); }
std::string to_string(wk_bytes b) { return std::string(wk::view(b)); }

// ------------------------------------------------------------------------------------------------
// The fake host. Its ctx handle is the FakeHost itself; rows and transactions are heap objects.

struct FakeHost;

struct FakeRows {
  FakeHost* host = nullptr;
  std::vector<std::string> names;
  std::vector<std::uint32_t> types;
  std::vector<std::vector<std::optional<std::string>>> cells;
  std::uint64_t affected = 0;
};

struct FakeTx {
  FakeHost* host = nullptr;
};

struct RecordedParam {
  std::uint32_t oid;
  std::int32_t format;
  bool null;
  std::string value;
};

struct RecordedQuery {
  std::string sql;
  std::vector<RecordedParam> params;
  std::size_t stride;
  std::uint32_t flags;
  bool in_transaction;
};

struct RecordedEnqueue {
  std::uint32_t flags;
  std::string type, queue, payload, task_id;
  std::vector<std::pair<std::string, std::string>> headers;
  std::int64_t process_at_ms, process_in_ms, timeout_ms, deadline_ms, unique_ttl_ms, retention_ms;
  std::int32_t max_retry;
};

struct RecordedLog {
  std::int32_t level;
  std::string message;
  std::vector<std::pair<std::string, std::string>> fields;
};

struct FakeHost {
  wk_host_api api;
  std::map<std::string, std::string> config;
  std::int32_t min_log_level = WK_LOG_TRACE;
  std::vector<RecordedLog> logs;
  // What the next query returns.
  FakeRows next_rows;
  wk_status query_status = WK_OK;
  std::string query_error_code;
  std::vector<RecordedQuery> queries;
  int rows_alive = 0;
  int rows_freed = 0;
  int begins = 0, commits = 0, rollbacks = 0;
  bool once_first = true;
  std::vector<std::string> once_keys;
  std::vector<std::pair<std::int64_t, std::string>> migrations;
  std::vector<RecordedEnqueue> enqueued;
  std::int32_t cancel_reason = WK_CANCEL_NONE;
  wk_status heartbeat_status = WK_OK;
  std::vector<std::tuple<std::uint64_t, std::uint64_t, std::string>> heartbeats;
  std::int64_t last_wait_ms = -1;
  std::string result;

  FakeHost() {
    std::memset(&api, 0, sizeof api);
    api.struct_size = sizeof api;
    api.abi_major = WK_ABI_MAJOR;
    api.abi_minor = WK_ABI_MINOR;
    api.host_name = "fake";
    api.host_version = "0";
    api.log_enabled = [](wk_ctx* c, std::int32_t level) -> std::int32_t {
      return level >= self(c)->min_log_level;
    };
    api.log = [](wk_ctx* c, std::int32_t level, wk_str message, const wk_kv* fields, std::size_t n) {
      RecordedLog l{level, to_string(message), {}};
      for (std::size_t i = 0; i < n; ++i)
        l.fields.emplace_back(to_string(fields[i].key), to_string(fields[i].value));
      self(c)->logs.push_back(l);
    };
    api.config_get = [](wk_ctx* c, wk_str key, wk_str* out) -> wk_status {
      auto it = self(c)->config.find(to_string(key));
      if (it == self(c)->config.end()) return WK_E_NOT_FOUND;
      *out = wk_str{it->second.c_str(), it->second.size()};
      return WK_OK;
    };
    api.pg_query = [](wk_ctx* c, wk_str sql, const wk_pg_param* p, std::size_t n, std::size_t stride,
                      std::uint32_t flags, wk_pg_rows** out, wk_error* err) -> wk_status {
      return self(c)->query(sql, p, n, stride, flags, out, err, false);
    };
    api.pg_row_count = [](const wk_pg_rows* r) -> std::size_t { return rows(r)->cells.size(); };
    api.pg_column_count = [](const wk_pg_rows* r) -> std::size_t { return rows(r)->names.size(); };
    api.pg_column_name = [](const wk_pg_rows* r, std::size_t c) -> wk_str {
      return c < rows(r)->names.size() ? wk::str(rows(r)->names[c]) : wk_str{nullptr, 0};
    };
    api.pg_column_type = [](const wk_pg_rows* r, std::size_t c) -> std::uint32_t {
      return c < rows(r)->types.size() ? rows(r)->types[c] : 0;
    };
    api.pg_value = [](const wk_pg_rows* r, std::size_t row, std::size_t col, wk_bytes* out,
                      std::int32_t* is_null) -> wk_status {
      const FakeRows* fr = rows(r);
      if (row >= fr->cells.size() || col >= fr->cells[row].size()) return WK_E_INVALID;
      const auto& cell = fr->cells[row][col];
      *is_null = cell ? 0 : 1;
      *out = cell ? wk::bytes(*cell) : wk_bytes{nullptr, 0};
      return WK_OK;
    };
    api.pg_rows_affected = [](const wk_pg_rows* r) -> std::uint64_t { return rows(r)->affected; };
    api.pg_rows_free = [](wk_pg_rows* r) {
      if (r == nullptr) return;
      FakeRows* fr = reinterpret_cast<FakeRows*>(r);
      --fr->host->rows_alive;
      ++fr->host->rows_freed;
      delete fr;
    };
    api.pg_begin = [](wk_ctx* c, wk_pg_tx** out, wk_error*) -> wk_status {
      ++self(c)->begins;
      *out = reinterpret_cast<wk_pg_tx*>(new FakeTx{self(c)});
      return WK_OK;
    };
    api.pg_tx_query = [](wk_pg_tx* tx, wk_str sql, const wk_pg_param* p, std::size_t n, std::size_t stride,
                         std::uint32_t flags, wk_pg_rows** out, wk_error* err) -> wk_status {
      return reinterpret_cast<FakeTx*>(tx)->host->query(sql, p, n, stride, flags, out, err, true);
    };
    api.pg_commit = [](wk_pg_tx* tx, wk_error*) -> wk_status {
      FakeTx* t = reinterpret_cast<FakeTx*>(tx);
      ++t->host->commits;
      delete t;
      return WK_OK;
    };
    api.pg_rollback = [](wk_pg_tx* tx) {
      if (tx == nullptr) return;
      FakeTx* t = reinterpret_cast<FakeTx*>(tx);
      ++t->host->rollbacks;
      delete t;
    };
    api.pg_tx_once = [](wk_pg_tx* tx, wk_str key, std::int32_t* first, wk_error*) -> wk_status {
      FakeHost* h = reinterpret_cast<FakeTx*>(tx)->host;
      h->once_keys.push_back(to_string(key));
      *first = h->once_first ? 1 : 0;
      return WK_OK;
    };
    api.pg_migrate = [](wk_ctx* c, const wk_migration* m, std::size_t n, std::size_t stride,
                        wk_error*) -> wk_status {
      for (std::size_t i = 0; i < n; ++i) {
        const auto* mi = reinterpret_cast<const wk_migration*>(reinterpret_cast<const char*>(m) + i * stride);
        self(c)->migrations.emplace_back(mi->version, to_string(mi->sql));
      }
      return WK_OK;
    };
    api.enqueue = [](wk_ctx* c, const wk_enqueue_req* r, wk_task_id* id, wk_error*) -> wk_status {
      RecordedEnqueue e{r->flags,
                        to_string(r->type),
                        to_string(r->queue),
                        to_string(r->payload),
                        to_string(r->task_id),
                        {},
                        r->process_at_ms,
                        r->process_in_ms,
                        r->timeout_ms,
                        r->deadline_ms,
                        r->unique_ttl_ms,
                        r->retention_ms,
                        r->max_retry};
      for (std::size_t i = 0; i < r->header_count; ++i) {
        e.headers.emplace_back(to_string(r->headers[i].key), to_string(r->headers[i].value));
      }
      self(c)->enqueued.push_back(e);
      std::snprintf(id->text, sizeof id->text, "%s", e.task_id.empty() ? "generated-id" : e.task_id.c_str());
      return WK_OK;
    };
    api.heartbeat = [](wk_ctx* c, const wk_progress* p) -> wk_status {
      self(c)->heartbeats.emplace_back(p->done, p->total, to_string(p->note));
      return self(c)->heartbeat_status;
    };
    api.is_cancelled = [](wk_ctx* c) -> std::int32_t { return self(c)->cancel_reason; };
    api.wait_cancelled = [](wk_ctx* c, std::int64_t ms) -> std::int32_t {
      self(c)->last_wait_ms = ms;
      return self(c)->cancel_reason;
    };
    api.remaining_ms = [](wk_ctx*) -> std::int64_t { return 1234; };
    api.result_write = [](wk_ctx* c, wk_bytes data, std::uint32_t) -> wk_status {
      self(c)->result = to_string(data);
      return WK_OK;
    };
  }
  FakeHost(const FakeHost&) = delete;
  FakeHost& operator=(const FakeHost&) = delete;

  wk_ctx* ctx() { return reinterpret_cast<wk_ctx*>(this); }

  wk_status query(wk_str sql, const wk_pg_param* p, std::size_t n, std::size_t stride, std::uint32_t flags,
                  wk_pg_rows** out, wk_error* err, bool in_tx) {
    RecordedQuery q{to_string(sql), {}, stride, flags, in_tx};
    for (std::size_t i = 0; i < n; ++i) {
      const auto* pi = reinterpret_cast<const wk_pg_param*>(reinterpret_cast<const char*>(p) + i * stride);
      q.params.push_back(
          {pi->type_oid, pi->format, pi->is_null != 0, pi->is_null ? "" : to_string(pi->value)});
    }
    queries.push_back(q);
    if (query_status != WK_OK) {
      err->status = query_status;
      std::snprintf(err->code, sizeof err->code, "%s", query_error_code.c_str());
      std::snprintf(err->message, sizeof err->message, "fake failure");
      return query_status;
    }
    auto* r = new FakeRows(next_rows);
    r->host = this;
    ++rows_alive;
    *out = reinterpret_cast<wk_pg_rows*>(r);
    return WK_OK;
  }

  static FakeHost* self(wk_ctx* c) { return reinterpret_cast<FakeHost*>(c); }
  static const FakeRows* rows(const wk_pg_rows* r) { return reinterpret_cast<const FakeRows*>(r); }
};

// ------------------------------------------------------------------------------------------------
// The plugin under test, registered with the real macros (this executable is the "plugin").

class Probe {
 public:
  explicit Probe(wk::Context& ctx) : ctx_(ctx) {
    if (ctx.config("PROBE_FAIL_INIT")) throw wk::HostError(WK_E_UNAVAILABLE, "pg.down", "database away");
    if (ctx.config("PROBE_THROW_INT")) throw 7;
    ctx.migrate({{1, "init", "create table a (id int)"}, {2, "more", "alter table a add b int"}});
    greeting_ = std::string(ctx.config_or("PROBE_GREETING", "hi"));
  }
  Probe(const Probe&) = delete;
  Probe& operator=(const Probe&) = delete;
  ~Probe() { ctx_.info("probe shutting down"); }

  wk::Outcome behave(wk::TaskContext& tc, const wk::Task& task) {
    const std::string_view p = task.payload;
    if (p == "ok") {
      tc.write_result(greeting_);
      return wk::Outcome::ok();
    }
    if (p == "retry_later") throw wk::RetryLater(1500ms, "slow down");
    if (p == "permanent") throw wk::Permanent("bad_payload", "field x is missing");
    if (p == "query") {
      tc.query("select 1");
      return wk::Outcome::ok();
    }
    if (p == "heartbeat") {
      tc.heartbeat(1, 2, "half");
      return wk::Outcome::ok();
    }
    if (p == "std") throw std::runtime_error("boom");
    if (p == "int") throw 42;
    if (p == "bad_alloc") throw std::bad_alloc();
    if (p == "cancel_check") {
      tc.throw_if_cancelled();
      return wk::Outcome::ok();
    }
    if (p == "cancelled") return wk::Outcome::cancelled();
    if (p == "fail_long") return wk::Outcome::fail(std::string(100, 'c'), std::string(5000, 'm'));
    if (p == "retry_after") return wk::Outcome::retry_after(3s, "later");
    if (p == "retry") return wk::Outcome::retry("again");
    return wk::Outcome::fail("unknown_case", std::string(p));
  }
  void quiet(wk::TaskContext&, const wk::Task&) {}
  wk::Outcome constant(wk::TaskContext&, const wk::Task&) const { return wk::Outcome::ok(); }

 private:
  wk::Context ctx_;
  std::string greeting_;
};

}  // namespace

WK_PLUGIN_BEGIN_OPT(Probe, "dev.autodevs.test.sdk_probe", "0.0.1", wk::PluginOptions().unload_safe())
WK_HANDLER("probe:behave", &Probe::behave)
WK_HANDLER_OPT(
    "probe:quiet", &Probe::quiet,
    wk::HandlerOptions().concurrency(3).timeout(5000).idempotent().long_running().describe("quiet"))
WK_HANDLER("probe:const", &Probe::constant)
WK_PLUGIN_END()

namespace {

const wk_handler_desc* find_handler(const wk_plugin_entry* e, std::string_view type) {
  for (std::uint32_t i = 0; i < e->handler_count; ++i) {
    const auto* h = reinterpret_cast<const wk_handler_desc*>(reinterpret_cast<const char*>(e->handlers) +
                                                             std::size_t{i} * e->handler_stride);
    if (type == h->task_type) return h;
  }
  return nullptr;
}

wk_error make_error() {
  wk_error e;
  std::memset(&e, 0, sizeof e);
  e.struct_size = sizeof e;
  return e;
}

struct Failure {
  wk_failure f;
  Failure() {
    std::memset(&f, 0, sizeof f);
    f.struct_size = sizeof f;
  }
};

TEST(SdkEntry, DescribesThePluginAndItsHandlers) {
  const wk_plugin_entry* e = wk_plugin_entry_v1();
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e, wk_plugin_entry_v1()) << "the getter returns the same static data every time";
  EXPECT_EQ(e->magic, WK_ENTRY_MAGIC);
  EXPECT_EQ(e->struct_size, sizeof(wk_plugin_entry));
  EXPECT_EQ(e->abi_major, WK_ABI_MAJOR);
  EXPECT_EQ(e->abi_minor, WK_ABI_MINOR);
  EXPECT_EQ(e->min_host_minor, 0);
  EXPECT_EQ(e->flags, WK_PLUGIN_UNLOAD_SAFE);
  EXPECT_STREQ(e->plugin_id, "dev.autodevs.test.sdk_probe");
  EXPECT_STREQ(e->plugin_version, "0.0.1");
  EXPECT_NE(std::string(e->build_info).find("wk-sdk-cpp 1.1"), std::string::npos);
  EXPECT_EQ(e->handler_count, 3u);
  EXPECT_EQ(e->handler_stride, sizeof(wk_handler_desc));
  EXPECT_NE(e->init, nullptr);
  EXPECT_NE(e->shutdown, nullptr);

  const wk_handler_desc* quiet = find_handler(e, "probe:quiet");
  ASSERT_NE(quiet, nullptr);
  EXPECT_EQ(quiet->struct_size, sizeof(wk_handler_desc));
  EXPECT_EQ(quiet->flags, WK_HANDLER_IDEMPOTENT | WK_HANDLER_LONG_RUNNING);
  EXPECT_EQ(quiet->max_concurrency, 3u);
  EXPECT_EQ(quiet->default_timeout_ms, 5000u);
  EXPECT_STREQ(quiet->description, "quiet");
  EXPECT_NE(quiet->run, nullptr);
  EXPECT_EQ(quiet->on_cancel, nullptr);
  const wk_handler_desc* behave = find_handler(e, "probe:behave");
  ASSERT_NE(behave, nullptr);
  EXPECT_EQ(behave->flags, 0u);
  EXPECT_EQ(behave->max_concurrency, 0u);
}

class SdkPlugin : public ::testing::Test {
 protected:
  void SetUp() override {
    wk_error err = make_error();
    ASSERT_EQ(entry_->init(&host_.api, host_.ctx(), &state_, &err), WK_OK) << err.message;
    ASSERT_NE(state_, nullptr);
  }
  void TearDown() override {
    if (state_ != nullptr) entry_->shutdown(state_);
  }

  wk_disposition run(std::string_view type, std::string_view payload, Failure& failure) {
    const wk_handler_desc* h = find_handler(entry_, type);
    EXPECT_NE(h, nullptr) << type;
    if (h == nullptr) return WK_DISP_UNSET;
    wk_task_view v;
    std::memset(&v, 0, sizeof v);
    v.struct_size = sizeof v;
    v.attempt = 1;
    v.max_retry = 25;
    v.id = wk::str("task-1");
    v.type = wk::str(type);
    v.queue = wk::str("default");
    v.payload = wk::bytes(payload);
    return h->run(state_, host_.ctx(), &v, &failure.f);
  }

  FakeHost host_;
  const wk_plugin_entry* entry_ = wk_plugin_entry_v1();
  wk_plugin_state* state_ = nullptr;
};

TEST_F(SdkPlugin, InitRunsTheConstructorWithTheHostServices) {
  ASSERT_EQ(host_.migrations.size(), 2u);
  EXPECT_EQ(host_.migrations[0], std::make_pair(std::int64_t{1}, std::string("create table a (id int)")));
  EXPECT_EQ(host_.migrations[1].first, 2);
}

TEST_F(SdkPlugin, ShutdownDestroysThePluginObject) {
  entry_->shutdown(std::exchange(state_, nullptr));
  ASSERT_FALSE(host_.logs.empty());
  EXPECT_EQ(host_.logs.back().message, "probe shutting down");
}

struct DispositionCase {
  const char* payload;
  wk_disposition disposition;
  const char* code;
  std::int64_t retry_after_ms;
};

TEST_F(SdkPlugin, MapsOutcomesAndExceptionsToDispositions) {
  const DispositionCase cases[] = {
      {"ok", WK_DISP_SUCCEEDED, "", 0},
      {"retry_later", WK_DISP_RETRY_AFTER, "retry_later", 1500},
      {"permanent", WK_DISP_FAIL_NO_RETRY, "bad_payload", 0},
      {"std", WK_DISP_RETRY, "unhandled_exception", 0},
      {"int", WK_DISP_RETRY, "unhandled_exception", 0},
      {"bad_alloc", WK_DISP_RETRY, "out_of_memory", 0},
      {"cancelled", WK_DISP_CANCELLED, "cancelled", 0},
      {"retry_after", WK_DISP_RETRY_AFTER, "retry_after", 3000},
      {"retry", WK_DISP_RETRY, "retry", 0},
      {"something else", WK_DISP_FAIL_NO_RETRY, "unknown_case", 0},
  };
  for (const auto& c : cases) {
    Failure f;
    EXPECT_EQ(run("probe:behave", c.payload, f), c.disposition) << c.payload;
    EXPECT_STREQ(f.f.code, c.code) << c.payload;
    EXPECT_EQ(f.f.retry_after_ms, c.retry_after_ms) << c.payload;
  }
  Failure f;
  run("probe:behave", "std", f);
  EXPECT_STREQ(f.f.message, "boom");
  EXPECT_EQ(host_.result, "hi");
}

TEST_F(SdkPlugin, HostErrorsBecomeRetryOrCancelled) {
  struct HostCase {
    wk_status status;
    wk_disposition disposition;
    const char* code;
  };
  const HostCase cases[] = {
      {WK_E_UNAVAILABLE, WK_DISP_RETRY, "pg.pool_timeout"},
      {WK_E_DB, WK_DISP_RETRY, "pg.pool_timeout"},
      {WK_E_CANCELLED, WK_DISP_CANCELLED, "cancelled"},
      {WK_E_DEADLINE, WK_DISP_RETRY, "deadline_exceeded"},
  };
  for (const auto& c : cases) {
    host_.query_status = c.status;
    host_.query_error_code = "pg.pool_timeout";
    Failure f;
    EXPECT_EQ(run("probe:behave", "query", f), c.disposition) << c.status;
    EXPECT_STREQ(f.f.code, c.code) << c.status;
    EXPECT_NE(std::string(f.f.message).find("fake failure"), std::string::npos) << f.f.message;
  }
  EXPECT_EQ(host_.rows_alive, 0);

  host_.heartbeat_status = WK_E_CANCELLED;
  host_.cancel_reason = WK_CANCEL_SHUTDOWN;
  Failure f;
  EXPECT_EQ(run("probe:behave", "heartbeat", f), WK_DISP_CANCELLED);
  EXPECT_EQ(run("probe:behave", "cancel_check", f), WK_DISP_CANCELLED);
}

TEST_F(SdkPlugin, FailureTextIsTruncatedAndTerminated) {
  Failure f;
  std::memset(f.f.code, 'x', sizeof f.f.code);
  std::memset(f.f.message, 'x', sizeof f.f.message);
  ASSERT_EQ(run("probe:behave", "fail_long", f), WK_DISP_FAIL_NO_RETRY);
  EXPECT_EQ(std::strlen(f.f.code), sizeof f.f.code - 1);
  EXPECT_EQ(std::strlen(f.f.message), sizeof f.f.message - 1);
  EXPECT_EQ(f.f.message[0], 'm');
}

TEST_F(SdkPlugin, VoidAndConstHandlersSucceed) {
  Failure f;
  EXPECT_EQ(run("probe:quiet", "", f), WK_DISP_SUCCEEDED);
  EXPECT_EQ(run("probe:const", "", f), WK_DISP_SUCCEEDED);
}

TEST_F(SdkPlugin, RunWithoutATaskRetriesInsteadOfCrashing) {
  Failure f;
  EXPECT_EQ(find_handler(entry_, "probe:behave")->run(state_, host_.ctx(), nullptr, &f.f), WK_DISP_RETRY);
  EXPECT_STREQ(f.f.code, "plugin.bad_call");
}

TEST(SdkInit, ReportsAHostErrorFromTheConstructor) {
  FakeHost host;
  host.config["PROBE_FAIL_INIT"] = "1";
  wk_error err = make_error();
  wk_plugin_state* state = reinterpret_cast<wk_plugin_state*>(&host);
  EXPECT_EQ(wk_plugin_entry_v1()->init(&host.api, host.ctx(), &state, &err), WK_E_UNAVAILABLE);
  EXPECT_EQ(state, nullptr);
  EXPECT_EQ(err.status, WK_E_UNAVAILABLE);
  EXPECT_STREQ(err.code, "pg.down");
  EXPECT_STREQ(err.message, "database away");
}

TEST(SdkInit, ReportsANonStandardExceptionFromTheConstructor) {
  FakeHost host;
  host.config["PROBE_THROW_INT"] = "1";
  wk_error err = make_error();
  wk_plugin_state* state = nullptr;
  EXPECT_EQ(wk_plugin_entry_v1()->init(&host.api, host.ctx(), &state, &err), WK_E_INTERNAL);
  EXPECT_EQ(state, nullptr);
  EXPECT_STREQ(err.code, "plugin.init");
}

TEST(SdkInit, RefusesAHostWithoutAUsableTable) {
  FakeHost host;
  wk_plugin_state* state = nullptr;
  wk_error err = make_error();
  EXPECT_EQ(wk_plugin_entry_v1()->init(nullptr, host.ctx(), &state, &err), WK_E_UNSUPPORTED);
  host.api.abi_major = 2;
  EXPECT_EQ(wk_plugin_entry_v1()->init(&host.api, host.ctx(), &state, &err), WK_E_UNSUPPORTED);
  host.api.abi_major = WK_ABI_MAJOR;
  host.api.struct_size = offsetof(wk_host_api, result_write);
  EXPECT_EQ(wk_plugin_entry_v1()->init(&host.api, host.ctx(), &state, &err), WK_E_UNSUPPORTED);
  EXPECT_EQ(state, nullptr);
  EXPECT_TRUE(host.migrations.empty()) << "the constructor must not run";
  // A NULL error pointer is tolerated.
  EXPECT_EQ(wk_plugin_entry_v1()->init(nullptr, host.ctx(), &state, nullptr), WK_E_UNSUPPORTED);
}

// ------------------------------------------------------------------------------------------------
// The wrappers, used directly.

TEST(SdkRows, TypedGettersDecodeTextResults) {
  FakeHost host;
  host.next_rows.names = {"n", "x", "b", "raw", "esc", "nothing"};
  host.next_rows.types = {20, 701, 16, 17, 17, 25};
  host.next_rows.cells = {{"42", "1.5", "t", "\\x68690aff", "a\\\\b\\001", std::nullopt},
                          {"-7", "NaN", "false", "\\x", "", "text"}};
  host.next_rows.affected = 2;
  wk::Context ctx(&host.api, host.ctx());
  {
    wk::Rows rows = ctx.query("select ...");
    ASSERT_EQ(rows.size(), 2u);
    EXPECT_EQ(rows.columns(), 6u);
    EXPECT_EQ(rows.column_name(3), "raw");
    EXPECT_EQ(rows.column_type(1), wk::pg_oid::kFloat8);
    EXPECT_EQ(rows.column_index("esc"), std::optional<std::size_t>(4));
    EXPECT_EQ(rows.column_index("missing"), std::nullopt);
    EXPECT_EQ(rows.rows_affected(), 2u);
    EXPECT_EQ(rows.int64(0, 0), 42);
    EXPECT_EQ(rows.int64(1, 0), -7);
    EXPECT_EQ(rows.float64(0, 1), 1.5);
    EXPECT_TRUE(std::isnan(*rows.float64(1, 1)));
    EXPECT_EQ(rows.boolean(0, 2), true);
    EXPECT_EQ(rows.boolean(1, 2), false);
    EXPECT_EQ(rows.bytes(0, 3), std::string("hi\n\xff"));
    EXPECT_EQ(rows.bytes(1, 3), std::string());
    EXPECT_EQ(rows.bytes(0, 4), std::string("a\\b\x01"));
    EXPECT_TRUE(rows.is_null(0, 5));
    EXPECT_EQ(rows.text(0, 5), std::nullopt);
    EXPECT_EQ(rows.int64(0, 5), std::nullopt);
    EXPECT_EQ(rows.text(1, 5), std::optional<std::string_view>("text"));
    EXPECT_EQ(host.rows_alive, 1);
  }
  EXPECT_EQ(host.rows_alive, 0);
  EXPECT_EQ(host.rows_freed, 1);
}

TEST(SdkRows, TypedGettersDecodeBinaryResults) {
  FakeHost host;
  const std::string int4("\xff\xff\xff\xfe", 4);                    // -2
  const std::string int8("\x00\x00\x00\x01\x00\x00\x00\x00", 8);    // 2^32
  const std::string float8("\x3f\xf8\x00\x00\x00\x00\x00\x00", 8);  // 1.5
  const std::string boolean("\x01", 1);
  host.next_rows.names = {"a", "b", "c", "d", "e"};
  host.next_rows.cells = {{int4, int8, float8, boolean, std::string("\x00\x01", 2)}};
  wk::Context ctx(&host.api, host.ctx());
  wk::Rows rows = ctx.query("select ...", {}, wk::kBinaryResults);
  EXPECT_EQ(host.queries.back().flags, WK_PG_BINARY_RESULTS);
  EXPECT_EQ(rows.int64(0, 0), -2);
  EXPECT_EQ(rows.int64(0, 1), std::int64_t{1} << 32);
  EXPECT_EQ(rows.float64(0, 2), 1.5);
  EXPECT_EQ(rows.boolean(0, 3), true);
  EXPECT_EQ(rows.bytes(0, 4), std::string("\x00\x01", 2));
}

TEST(SdkRows, MalformedValuesAndBadCellsThrowHostError) {
  FakeHost host;
  host.next_rows.names = {"a", "b", "c"};
  host.next_rows.cells = {{"4x", "\\9", "\\x0g"}};
  wk::Context ctx(&host.api, host.ctx());
  wk::Rows rows = ctx.query("select ...");
  try {
    (void)rows.int64(0, 0);
    FAIL() << "no exception";
  } catch (const wk::HostError& e) {
    EXPECT_EQ(e.status(), WK_E_INVALID);
    EXPECT_EQ(e.code(), "pg.decode");
  }
  EXPECT_THROW((void)rows.boolean(0, 0), wk::HostError);
  EXPECT_EQ(rows.bytes(0, 0), std::string("4x")) << "escape format without escapes is the text itself";
  EXPECT_THROW((void)rows.bytes(0, 1), wk::HostError) << "escape format with a bad escape";
  EXPECT_THROW((void)rows.bytes(0, 2), wk::HostError) << "hex format with a bad digit";
  EXPECT_THROW((void)rows.float64(0, 0), wk::HostError);
  EXPECT_THROW((void)rows.text(5, 0), wk::HostError);
}

TEST(SdkRows, MovingTransfersOwnershipAndFreesOnce) {
  FakeHost host;
  wk::Context ctx(&host.api, host.ctx());
  {
    wk::Rows a = ctx.query("select 1");
    wk::Rows b = std::move(a);
    wk::Rows c;
    c = std::move(b);
    EXPECT_EQ(host.rows_alive, 1);
  }
  EXPECT_EQ(host.rows_freed, 1);
}

TEST(SdkParams, MapOntoTheCLayout) {
  FakeHost host;
  wk::Context ctx(&host.api, host.ctx());
  const std::string blob("\x00\x01\x02", 3);
  ctx.query("insert ...",
            {wk::Param::text("abc"), wk::Param::int64(-9000000000), wk::Param::null(), wk::Param::bytes(blob),
             wk::Param::boolean(true), wk::Param::float64(0.25), wk::Param::text("{}", 3802)});
  ASSERT_EQ(host.queries.size(), 1u);
  const RecordedQuery& q = host.queries[0];
  EXPECT_EQ(q.sql, "insert ...");
  EXPECT_EQ(q.stride, sizeof(wk_pg_param));
  EXPECT_FALSE(q.in_transaction);
  ASSERT_EQ(q.params.size(), 7u);
  EXPECT_EQ(q.params[0].value, "abc");
  EXPECT_EQ(q.params[0].oid, 0u);
  EXPECT_EQ(q.params[0].format, 0);
  EXPECT_EQ(q.params[1].value, "-9000000000");
  EXPECT_EQ(q.params[1].oid, wk::pg_oid::kInt8);
  EXPECT_TRUE(q.params[2].null);
  EXPECT_EQ(q.params[3].value, blob);
  EXPECT_EQ(q.params[3].format, 1);
  EXPECT_EQ(q.params[3].oid, wk::pg_oid::kBytea);
  EXPECT_EQ(q.params[4].value, "t");
  EXPECT_EQ(q.params[5].value, "0.25");
  EXPECT_EQ(q.params[6].oid, 3802u);

  // More parameters than the on-stack array holds.
  std::vector<wk::Param> many;
  for (int i = 0; i < 40; ++i) many.push_back(wk::Param::int64(i));
  ctx.query("select ...", many);
  ASSERT_EQ(host.queries.back().params.size(), 40u);
  EXPECT_EQ(host.queries.back().params[39].value, "39");
}

TEST(SdkTransaction, RollsBackUnlessCommitted) {
  FakeHost host;
  wk::Context ctx(&host.api, host.ctx());
  {
    wk::Transaction tx = ctx.begin();
    tx.query("update ...", {wk::Param::int64(1)});
    EXPECT_TRUE(host.queries.back().in_transaction);
  }
  EXPECT_EQ(host.rollbacks, 1);
  EXPECT_EQ(host.commits, 0);

  try {
    wk::Transaction tx = ctx.begin();
    throw std::runtime_error("handler failed mid-way");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(host.rollbacks, 2);

  {
    wk::Transaction tx = ctx.begin();
    EXPECT_TRUE(tx.once("task-1:step"));
    tx.commit();
    EXPECT_FALSE(tx.open());
    EXPECT_THROW(tx.query("select 1"), wk::HostError);
  }
  EXPECT_EQ(host.commits, 1);
  EXPECT_EQ(host.rollbacks, 2);
  EXPECT_EQ(host.once_keys, std::vector<std::string>{"task-1:step"});

  host.once_first = false;
  wk::Transaction tx = ctx.begin();
  EXPECT_FALSE(tx.once("task-1:step"));
  wk::Transaction moved = std::move(tx);
  EXPECT_FALSE(tx.open());  // NOLINT(bugprone-use-after-move): checking the moved-from state
  EXPECT_TRUE(moved.open());
}

TEST(SdkEnqueue, OptionsMapOntoTheRequest) {
  FakeHost host;
  wk::Context ctx(&host.api, host.ctx());
  const auto at = std::chrono::system_clock::time_point(std::chrono::milliseconds(1700000000000));
  const std::string id = ctx.enqueue("worktree:create", R"({"task_id":"t1"})",
                                     wk::EnqueueOptions()
                                         .queue("critical")
                                         .process_at(at)
                                         .max_retry(0)
                                         .timeout(90s)
                                         .deadline(at + 1h)
                                         .unique(10min)
                                         .task_id("wt-t1")
                                         .retention(24h)
                                         .header("trace", "abc")
                                         .immediate());
  EXPECT_EQ(id, "wt-t1");
  ASSERT_EQ(host.enqueued.size(), 1u);
  const RecordedEnqueue& e = host.enqueued[0];
  EXPECT_EQ(e.flags, WK_ENQ_IMMEDIATE | WK_ENQ_HAS_MAX_RETRY);
  EXPECT_EQ(e.type, "worktree:create");
  EXPECT_EQ(e.queue, "critical");
  EXPECT_EQ(e.payload, R"({"task_id":"t1"})");
  EXPECT_EQ(e.task_id, "wt-t1");
  EXPECT_EQ(e.process_at_ms, 1700000000000);
  EXPECT_EQ(e.process_in_ms, 0);
  EXPECT_EQ(e.max_retry, 0);
  EXPECT_EQ(e.timeout_ms, 90000);
  EXPECT_EQ(e.deadline_ms, 1700000000000 + 3600000);
  EXPECT_EQ(e.unique_ttl_ms, 600000);
  EXPECT_EQ(e.retention_ms, 86400000);
  ASSERT_EQ(e.headers.size(), 1u);
  EXPECT_EQ(e.headers[0], std::make_pair(std::string("trace"), std::string("abc")));

  // Defaults: staged, asynq's default retry count, no options set.
  EXPECT_EQ(ctx.enqueue("ai:execute", "{}", wk::EnqueueOptions().process_in(5s)), "generated-id");
  const RecordedEnqueue& d = host.enqueued[1];
  EXPECT_EQ(d.flags, 0u);
  EXPECT_EQ(d.queue, "");
  EXPECT_EQ(d.process_in_ms, 5000);
  EXPECT_EQ(d.unique_ttl_ms, 0);
  EXPECT_TRUE(d.headers.empty());
}

// on_this_host(): the 1.1 flag; a 1.0 host would ignore it, so the C++ layer refuses instead.
TEST(SdkEnqueue, OnThisHostIsAFlagAndNeedsA11Host) {
  FakeHost host;
  wk::Context ctx(&host.api, host.ctx());
  ctx.enqueue("ai:execute", "{}", wk::EnqueueOptions().queue("default").on_this_host());
  ASSERT_EQ(host.enqueued.size(), 1u);
  EXPECT_EQ(host.enqueued[0].flags, WK_ENQ_ON_THIS_HOST);
  host.api.abi_minor = 0;
  try {
    ctx.enqueue("ai:execute", "{}", wk::EnqueueOptions().on_this_host());
    ADD_FAILURE() << "a 1.0 host took an on-this-host enqueue";
  } catch (const wk::HostError& e) {
    EXPECT_EQ(e.status(), WK_E_UNSUPPORTED);
  }
  EXPECT_EQ(host.enqueued.size(), 1u);
  EXPECT_EQ(wk::host_queue("m1"), "host:m1");
  EXPECT_TRUE(wk::is_host_queue("host:m1"));
  EXPECT_FALSE(wk::is_host_queue("default"));
}

TEST(SdkLog, SendsFieldsAndRespectsTheLevel) {
  FakeHost host;
  host.min_log_level = WK_LOG_INFO;
  wk::Context ctx(&host.api, host.ctx());
  const std::string name = "ci";
  ctx.debug("dropped", {{"x", 1}});
  ctx.info("greeted", {{"name", name}, {"attempt", 3u}, {"ok", true}, {"ratio", 0.5}, {"note", "n"}});
  ASSERT_EQ(host.logs.size(), 1u);
  EXPECT_EQ(host.logs[0].level, WK_LOG_INFO);
  EXPECT_EQ(host.logs[0].message, "greeted");
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"name", "ci"}, {"attempt", "3"}, {"ok", "true"}, {"ratio", "0.5"}, {"note", "n"}};
  EXPECT_EQ(host.logs[0].fields, expected);
}

TEST(SdkConfig, ReadsValuesAndDefaults) {
  FakeHost host;
  host.config["AI_MODEL"] = "m1";
  wk::Context ctx(&host.api, host.ctx());
  EXPECT_EQ(ctx.config("AI_MODEL"), std::optional<std::string_view>("m1"));
  EXPECT_EQ(ctx.config("NOPE"), std::nullopt);
  EXPECT_EQ(ctx.config_or("NOPE", "fallback"), "fallback");
}

TEST(SdkTaskContext, ExposesCancellationDeadlineHeartbeatAndResult) {
  FakeHost host;
  wk::TaskContext tc(&host.api, host.ctx());
  EXPECT_FALSE(tc.cancelled());
  EXPECT_EQ(tc.remaining(), 1234ms);
  EXPECT_EQ(tc.wait_cancelled(250ms), WK_CANCEL_NONE);
  EXPECT_EQ(host.last_wait_ms, 250);
  tc.heartbeat(3, 10, "step 3");
  ASSERT_EQ(host.heartbeats.size(), 1u);
  EXPECT_EQ(host.heartbeats[0], std::make_tuple(std::uint64_t{3}, std::uint64_t{10}, std::string("step 3")));
  tc.write_result("done");
  EXPECT_EQ(host.result, "done");

  host.cancel_reason = WK_CANCEL_DEADLINE;
  EXPECT_TRUE(tc.cancelled());
  EXPECT_EQ(tc.reason(), WK_CANCEL_DEADLINE);
  try {
    tc.throw_if_cancelled();
    FAIL() << "no exception";
  } catch (const wk::Cancelled& e) {
    EXPECT_EQ(e.reason(), WK_CANCEL_DEADLINE);
  }
}

TEST(SdkTask, ReadsOnlyTheFieldsTheHostProvides) {
  const wk_kv headers[] = {{wk::str("trace"), wk::str("abc")}, {wk::str("tenant"), wk::str("7")}};
  wk_task_view v;
  std::memset(&v, 0, sizeof v);
  v.struct_size = sizeof v;
  v.attempt = 3;
  v.retried = 2;
  v.max_retry = 2;
  v.id = wk::str("id-1");
  v.type = wk::str("t:x");
  v.queue = wk::str("q");
  v.payload = wk::bytes("{}");
  v.headers = headers;
  v.header_count = 2;
  v.deadline_ms = 1700000000000;
  v.started_at_ms = 1600000000000;
  wk::Task t = wk::Task::from(v);
  EXPECT_EQ(t.id, "id-1");
  EXPECT_EQ(t.type, "t:x");
  EXPECT_EQ(t.queue, "q");
  EXPECT_EQ(t.payload, "{}");
  EXPECT_EQ(t.attempt, 3u);
  EXPECT_TRUE(t.last_attempt());
  EXPECT_EQ(t.headers.size(), 2u);
  EXPECT_EQ(t.headers.get("tenant"), std::optional<std::string_view>("7"));
  EXPECT_EQ(t.headers.get("missing"), std::nullopt);
  EXPECT_EQ(t.headers[0].first, "trace");
  ASSERT_TRUE(t.deadline().has_value());
  EXPECT_EQ(t.started_at_ms, 1600000000000);

  // A host whose view ends after the payload: later fields keep their defaults.
  v.struct_size = static_cast<std::uint32_t>(offsetof(wk_task_view, headers));
  t = wk::Task::from(v);
  EXPECT_EQ(t.payload, "{}");
  EXPECT_TRUE(t.headers.empty());
  EXPECT_EQ(t.deadline_ms, 0);
  EXPECT_FALSE(t.deadline().has_value());
}

TEST(SdkHostFunctions, MissingFunctionsThrowUnsupported) {
  FakeHost host;
  host.api.enqueue = nullptr;
  wk::Context ctx(&host.api, host.ctx());
  try {
    ctx.enqueue("t", "{}");
    FAIL() << "no exception";
  } catch (const wk::HostError& e) {
    EXPECT_EQ(e.status(), WK_E_UNSUPPORTED);
  }
  // A table too short to hold the function counts as missing, whatever lies beyond it.
  host.api.struct_size = static_cast<std::uint32_t>(offsetof(wk_host_api, pg_migrate));
  EXPECT_THROW(ctx.migrate({{1, "a", "select 1"}}), wk::HostError);
  EXPECT_TRUE(host.migrations.empty());
}

}  // namespace
