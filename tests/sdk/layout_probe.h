/* The layout probes: one translation unit compiled per language standard, each reporting the
   sizeof/offsetof values of layout_list.inc as its compiler sees them. */
#ifndef WK_LAYOUT_PROBE_H
#define WK_LAYOUT_PROBE_H
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

size_t wk_layout_probe_c99(const size_t** values);
size_t wk_layout_probe_c11(const size_t** values);
size_t wk_layout_probe_c17(const size_t** values);
size_t wk_layout_probe_cxx11(const size_t** values);
size_t wk_layout_probe_cxx17(const size_t** values);

#ifdef __cplusplus
}
#endif
#endif
