// The C++ flavour of layout_probe.c (C++11 and C++17 targets), -Wpadded and -Wold-style-cast on.
#include "layout_probe.h"
#include "wk_abi.h"

namespace {
const size_t probe_values[] = {
#define WK_LAYOUT_SIZE(T) sizeof(T),
#define WK_LAYOUT_FIELD(T, f) offsetof(T, f),
#include "layout_list.inc"
};
}  // namespace

extern "C" size_t WK_LAYOUT_PROBE(const size_t** values) {
  // Compiles WK_HAS_FN in this language (it used a C-style cast once).
  const wk_host_api* none = nullptr;
  static_cast<void>(WK_HAS_FN(wk_host_api, none, result_write));
  *values = probe_values;
  return sizeof probe_values / sizeof probe_values[0];
}
