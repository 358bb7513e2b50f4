// Pins the x86_64 layout of every public struct of wk_abi.h, and checks that C99, C11, C17,
// C++11 and C++17 compilers see the same layout as this C++20 test. A change here is an ABI
// change: fields may only be appended (a new pin at the end of a struct), never moved.
#include <gtest/gtest.h>

#include <cstddef>
#include <string>
#include <vector>

#include "layout_probe.h"
#include "wk_abi.h"

namespace {

struct Pin {
  std::string name;
  std::size_t value;
};

// Generated once from the 1.0 header and reviewed: no implicit padding anywhere (-Wpadded).
const std::vector<Pin> kPinnedX86_64 = {
    {"sizeof(wk_str)", 16},
    {"wk_str.ptr", 0},
    {"wk_str.len", 8},
    {"sizeof(wk_bytes)", 16},
    {"wk_bytes.ptr", 0},
    {"wk_bytes.len", 8},
    {"sizeof(wk_kv)", 32},
    {"wk_kv.key", 0},
    {"wk_kv.value", 16},
    {"sizeof(wk_error)", 512},
    {"wk_error.struct_size", 0},
    {"wk_error.status", 4},
    {"wk_error.code", 8},
    {"wk_error.message", 40},
    {"sizeof(wk_pg_param)", 32},
    {"wk_pg_param.type_oid", 0},
    {"wk_pg_param.format", 4},
    {"wk_pg_param.is_null", 8},
    {"wk_pg_param.reserved", 12},
    {"wk_pg_param.value", 16},
    {"sizeof(wk_migration)", 48},
    {"wk_migration.struct_size", 0},
    {"wk_migration.reserved", 4},
    {"wk_migration.version", 8},
    {"wk_migration.name", 16},
    {"wk_migration.sql", 32},
    {"sizeof(wk_enqueue_req)", 144},
    {"wk_enqueue_req.struct_size", 0},
    {"wk_enqueue_req.flags", 4},
    {"wk_enqueue_req.type", 8},
    {"wk_enqueue_req.queue", 24},
    {"wk_enqueue_req.payload", 40},
    {"wk_enqueue_req.task_id", 56},
    {"wk_enqueue_req.headers", 72},
    {"wk_enqueue_req.header_count", 80},
    {"wk_enqueue_req.process_at_ms", 88},
    {"wk_enqueue_req.process_in_ms", 96},
    {"wk_enqueue_req.max_retry", 104},
    {"wk_enqueue_req.reserved", 108},
    {"wk_enqueue_req.timeout_ms", 112},
    {"wk_enqueue_req.deadline_ms", 120},
    {"wk_enqueue_req.unique_ttl_ms", 128},
    {"wk_enqueue_req.retention_ms", 136},
    {"sizeof(wk_task_id)", 128},
    {"wk_task_id.text", 0},
    {"sizeof(wk_progress)", 40},
    {"wk_progress.struct_size", 0},
    {"wk_progress.reserved", 4},
    {"wk_progress.done", 8},
    {"wk_progress.total", 16},
    {"wk_progress.note", 24},
    {"sizeof(wk_host_api)", 216},
    {"wk_host_api.struct_size", 0},
    {"wk_host_api.abi_major", 4},
    {"wk_host_api.abi_minor", 6},
    {"wk_host_api.host_name", 8},
    {"wk_host_api.host_version", 16},
    {"wk_host_api.get_extension", 24},
    {"wk_host_api.log_enabled", 32},
    {"wk_host_api.log", 40},
    {"wk_host_api.config_get", 48},
    {"wk_host_api.pg_query", 56},
    {"wk_host_api.pg_row_count", 64},
    {"wk_host_api.pg_column_count", 72},
    {"wk_host_api.pg_column_name", 80},
    {"wk_host_api.pg_column_type", 88},
    {"wk_host_api.pg_value", 96},
    {"wk_host_api.pg_rows_affected", 104},
    {"wk_host_api.pg_rows_free", 112},
    {"wk_host_api.pg_begin", 120},
    {"wk_host_api.pg_tx_query", 128},
    {"wk_host_api.pg_commit", 136},
    {"wk_host_api.pg_rollback", 144},
    {"wk_host_api.pg_tx_once", 152},
    {"wk_host_api.pg_migrate", 160},
    {"wk_host_api.enqueue", 168},
    {"wk_host_api.heartbeat", 176},
    {"wk_host_api.is_cancelled", 184},
    {"wk_host_api.wait_cancelled", 192},
    {"wk_host_api.remaining_ms", 200},
    {"wk_host_api.result_write", 208},
    {"sizeof(wk_failure)", 1104},
    {"wk_failure.struct_size", 0},
    {"wk_failure.reserved", 4},
    {"wk_failure.retry_after_ms", 8},
    {"wk_failure.code", 16},
    {"wk_failure.message", 80},
    {"sizeof(wk_task_view)", 112},
    {"wk_task_view.struct_size", 0},
    {"wk_task_view.attempt", 4},
    {"wk_task_view.retried", 8},
    {"wk_task_view.max_retry", 12},
    {"wk_task_view.id", 16},
    {"wk_task_view.type", 32},
    {"wk_task_view.queue", 48},
    {"wk_task_view.payload", 64},
    {"wk_task_view.headers", 80},
    {"wk_task_view.header_count", 88},
    {"wk_task_view.deadline_ms", 96},
    {"wk_task_view.started_at_ms", 104},
    {"sizeof(wk_handler_desc)", 48},
    {"wk_handler_desc.struct_size", 0},
    {"wk_handler_desc.flags", 4},
    {"wk_handler_desc.task_type", 8},
    {"wk_handler_desc.description", 16},
    {"wk_handler_desc.max_concurrency", 24},
    {"wk_handler_desc.default_timeout_ms", 28},
    {"wk_handler_desc.run", 32},
    {"wk_handler_desc.on_cancel", 40},
    {"sizeof(wk_plugin_entry)", 88},
    {"wk_plugin_entry.magic", 0},
    {"wk_plugin_entry.struct_size", 4},
    {"wk_plugin_entry.abi_major", 8},
    {"wk_plugin_entry.abi_minor", 10},
    {"wk_plugin_entry.min_host_minor", 12},
    {"wk_plugin_entry.reserved0", 14},
    {"wk_plugin_entry.flags", 16},
    {"wk_plugin_entry.reserved1", 20},
    {"wk_plugin_entry.plugin_id", 24},
    {"wk_plugin_entry.plugin_version", 32},
    {"wk_plugin_entry.build_info", 40},
    {"wk_plugin_entry.handlers", 48},
    {"wk_plugin_entry.handler_count", 56},
    {"wk_plugin_entry.handler_stride", 60},
    {"wk_plugin_entry.init", 64},
    {"wk_plugin_entry.shutdown", 72},
    {"wk_plugin_entry.get_extension", 80},
};

std::vector<Pin> computed() {
  return {
#define WK_LAYOUT_SIZE(T) {"sizeof(" #T ")", sizeof(T)},
#define WK_LAYOUT_FIELD(T, f) {#T "." #f, offsetof(T, f)},
#include "layout_list.inc"
#undef WK_LAYOUT_SIZE
#undef WK_LAYOUT_FIELD
  };
}

#if defined(__x86_64__)
TEST(SdkLayout, EveryStructMatchesThePinnedX86_64Layout) {
  const std::vector<Pin> now = computed();
  ASSERT_EQ(now.size(), kPinnedX86_64.size()) << "layout_list.inc and the pins disagree";
  for (std::size_t i = 0; i < now.size(); ++i) {
    EXPECT_EQ(now[i].name, kPinnedX86_64[i].name);
    EXPECT_EQ(now[i].value, kPinnedX86_64[i].value) << now[i].name;
  }
}
#endif

TEST(SdkLayout, TheOneZeroHostTableEndsWithResultWrite) {
  // The SDK refuses a host table shorter than this; the host must never shrink it.
  EXPECT_EQ(sizeof(wk_host_api), offsetof(wk_host_api, result_write) + sizeof(void*));
}

void expect_same_as_cxx20(const char* language, std::size_t (*probe)(const std::size_t**)) {
  const std::vector<Pin> now = computed();
  const std::size_t* values = nullptr;
  const std::size_t n = probe(&values);
  ASSERT_EQ(n, now.size()) << language;
  for (std::size_t i = 0; i < n; ++i) EXPECT_EQ(values[i], now[i].value) << language << ": " << now[i].name;
}

TEST(SdkLayout, C99SeesTheSameLayout) { expect_same_as_cxx20("C99", &wk_layout_probe_c99); }
TEST(SdkLayout, C11SeesTheSameLayout) { expect_same_as_cxx20("C11", &wk_layout_probe_c11); }
TEST(SdkLayout, C17SeesTheSameLayout) { expect_same_as_cxx20("C17", &wk_layout_probe_c17); }
TEST(SdkLayout, Cxx11SeesTheSameLayout) { expect_same_as_cxx20("C++11", &wk_layout_probe_cxx11); }
TEST(SdkLayout, Cxx17SeesTheSameLayout) { expect_same_as_cxx20("C++17", &wk_layout_probe_cxx17); }

}  // namespace
