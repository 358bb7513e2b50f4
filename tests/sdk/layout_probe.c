/* Compiled once per C standard with -Wall -Wextra -pedantic -Werror -Wpadded: the header must be
   clean in each, and the reported layout must match the C++ view (layout_test.cpp). The
   function name comes from WK_LAYOUT_PROBE (a compile definition per target). */
#include "layout_probe.h"
#include "wk_abi.h"

static const size_t probe_values[] = {
#define WK_LAYOUT_SIZE(T) sizeof(T),
#define WK_LAYOUT_FIELD(T, f) offsetof(T, f),
#include "layout_list.inc"
};

/* Uses the feature-test macros too, so that they are compiled in this language. */
static int probe_has_result_write(const wk_host_api* api) {
  return WK_HAS_FN(wk_host_api, api, result_write);
}

size_t WK_LAYOUT_PROBE(const size_t** values) {
  *values = probe_values;
  (void)probe_has_result_write;
  return sizeof probe_values / sizeof probe_values[0];
}
