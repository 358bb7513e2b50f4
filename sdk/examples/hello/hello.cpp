// hello: the smallest useful worker plugin. Task type "hello:greet", payload {"name": "..."};
// it writes "hello, <name>" as the task result and logs one line.
//
// Deliberately dependency-free: a real plugin would parse the payload with a JSON library.
#include <wk_sdk.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace {

// Reads the string value of a top-level `key` from a flat JSON object. Enough for this example's
// payload; it understands the JSON string escapes but not nesting.
std::optional<std::string> json_string_field(std::string_view json, std::string_view key) {
  const std::string quoted = "\"" + std::string(key) + "\"";
  std::size_t pos = json.find(quoted);
  if (pos == std::string_view::npos) return std::nullopt;
  pos += quoted.size();
  auto skip_space = [&] {
    while (pos < json.size() &&
           (json[pos] == ' ' || json[pos] == '\t' || json[pos] == '\n' || json[pos] == '\r')) {
      ++pos;
    }
  };
  skip_space();
  if (pos >= json.size() || json[pos] != ':') return std::nullopt;
  ++pos;
  skip_space();
  if (pos >= json.size() || json[pos] != '"') return std::nullopt;
  ++pos;
  std::string out;
  while (pos < json.size()) {
    const char c = json[pos++];
    if (c == '"') return out;
    if (c != '\\') {
      out.push_back(c);
      continue;
    }
    if (pos >= json.size()) return std::nullopt;
    const char e = json[pos++];
    switch (e) {
      case '"':
        out.push_back('"');
        break;
      case '\\':
        out.push_back('\\');
        break;
      case '/':
        out.push_back('/');
        break;
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      default:
        return std::nullopt;  // \uXXXX is left out of this example
    }
  }
  return std::nullopt;  // unterminated string
}

class Hello {
 public:
  // The constructor runs in the host's init(): read configuration here, once.
  explicit Hello(wk::Context& ctx) : greeting_(ctx.config_or("HELLO_GREETING", "hello")) {}

  wk::Outcome greet(wk::TaskContext& tc, const wk::Task& task) {
    const std::optional<std::string> name = json_string_field(task.payload, "name");
    if (!name) {
      // Retrying cannot fix a malformed payload: archive it at once, saying what is wrong.
      return wk::Outcome::fail("bad_payload", "payload must be a JSON object with a string field \"name\"");
    }
    const std::string text = greeting_ + ", " + *name;
    tc.write_result(text);
    tc.info("greeted", {{"name", *name}, {"attempt", task.attempt}});
    return wk::Outcome::ok();
  }

 private:
  std::string greeting_;
};

}  // namespace

WK_PLUGIN_BEGIN(Hello, "dev.autodevs.example.hello", "1.0.0")
WK_HANDLER_OPT("hello:greet", &Hello::greet, wk::HandlerOptions().idempotent().describe("writes a greeting"))
WK_PLUGIN_END()
