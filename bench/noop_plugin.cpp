// The bench's handler plugin: one task type, "noop", that does nothing. It is loaded by the real
// plugin host, so every task pays what a shipped plugin's does: the C ABI call, a task context
// in the handle table, the limiter.
#include <wk_sdk.hpp>

namespace {

class Noop {
 public:
  explicit Noop(wk::Context& /*ctx*/) {}
  wk::Outcome run(wk::TaskContext& /*tc*/, const wk::Task& /*task*/) { return wk::Outcome::ok(); }
};

}  // namespace

WK_PLUGIN_BEGIN(Noop, "bench.noop", "1.0.0")
WK_HANDLER("noop", &Noop::run)
WK_PLUGIN_END()
