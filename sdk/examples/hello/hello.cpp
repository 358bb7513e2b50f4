// hello: the smallest useful worker plugin. Task type "hello:greet", payload {"name": "..."};
// it writes "<greeting>, <name>" as the task result and logs one line.
#include <wk_payload.hpp>
#include <wk_sdk.hpp>

#include <string>

namespace {

class Hello {
 public:
  // The constructor runs in the host's init(): read configuration here, once.
  explicit Hello(wk::Context& ctx) : greeting_(ctx.config_or("HELLO_GREETING", "hello")) {}

  wk::Outcome greet(wk::TaskContext& tc, const wk::Task& task) {
    // A payload that is not a JSON object with a string "name" throws wk::Permanent
    // ("bad_payload"): retrying cannot fix it, so the task is archived at once with the reason.
    const std::string name = wk::JsonPayload(task).required<std::string>("name");
    const std::string text = greeting_ + ", " + name;
    tc.write_result(text);
    tc.info("greeted", {{"name", name}, {"attempt", task.attempt}});
    return wk::Outcome::ok();
  }

 private:
  std::string greeting_;
};

}  // namespace

WK_PLUGIN_BEGIN(Hello, "dev.autodevs.example.hello", "1.0.0")
WK_HANDLER_OPT("hello:greet", &Hello::greet, wk::HandlerOptions().idempotent().describe("writes a greeting"))
WK_PLUGIN_END()
