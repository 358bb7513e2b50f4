#include "fake_openai.hpp"

#include <httplib.h>

#include <regex>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace e2e {

namespace {

std::string reply(const std::string& content) {
  const nlohmann::json body = {{"id", "chatcmpl-test"},
                               {"object", "chat.completion"},
                               {"choices",
                                {{{"index", 0},
                                  {"message", {{"role", "assistant"}, {"content", content}}},
                                  {"finish_reason", "stop"}}}}};
  return body.dump();
}

std::string diff_for(int step) {
  const std::string name = "step-" + std::to_string(step) + ".txt";
  return "Here is the change.\n\n```diff\n"
         "diff --git a/" +
         name + " b/" + name +
         "\n"
         "new file mode 100644\n"
         "--- /dev/null\n"
         "+++ b/" +
         name +
         "\n"
         "@@ -0,0 +1 @@\n"
         "+" +
         FakeOpenAi::file_content(step) +
         "\n"
         "```\n";
}

}  // namespace

std::string FakeOpenAi::file_content(int step) {
  return "written by the model for step " + std::to_string(step);
}

FakeOpenAi::FakeOpenAi(Script script)
    : script_(std::move(script)), server_(std::make_unique<httplib::Server>()) {
  server_->Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    ChatRequest seen;
    seen.at = std::chrono::system_clock::now();
    seen.authorization = req.get_header_value("Authorization");
    const auto body = nlohmann::json::parse(req.body, nullptr, false);
    std::string system;
    std::string user;
    if (!body.is_discarded() && body.is_object()) {
      seen.model = body.value("model", "");
      for (const auto& m : body.value("messages", nlohmann::json::array())) {
        if (m.value("role", "") == "system") system = m.value("content", "");
        if (m.value("role", "") == "user") user = m.value("content", "");
      }
    }
    std::smatch match;
    static const std::regex step_re("Step ([0-9]+) of ([0-9]+):");
    if (system.find("planner") != std::string::npos) {
      seen.kind = "planner";
    } else if (std::regex_search(user, match, step_re)) {
      seen.kind = "step";
      seen.step = std::stoi(match[1].str());
    }

    std::lock_guard lock(mu_);
    int earlier = 0;
    for (const auto& r : requests_) earlier += (r.kind == "step" && r.step == seen.step) ? 1 : 0;
    if (seen.kind == "planner") {
      nlohmann::json steps = nlohmann::json::array();
      for (std::size_t i = 0; i < script_.planned_titles.size(); ++i) {
        steps.push_back({{"title", script_.planned_titles[i]},
                         {"instructions", "Create step-" + std::to_string(i + 1) + ".txt"}});
      }
      seen.status = 200;
      res.set_content(reply(nlohmann::json{{"steps", steps}}.dump()), "application/json");
    } else if (seen.kind == "step" && seen.step == script_.throttle_step &&
               earlier < script_.throttle_count) {
      seen.status = 429;
      res.status = 429;
      res.set_header("Retry-After", std::to_string(script_.retry_after_seconds));
      res.set_content(R"({"error":{"message":"Rate limit reached","type":"rate_limit_exceeded"}})",
                      "application/json");
    } else if (seen.kind == "step") {
      seen.status = 200;
      res.set_content(reply(diff_for(seen.step)), "application/json");
    } else {
      seen.status = 400;
      res.status = 400;
      res.set_content(R"({"error":{"message":"unexpected request"}})", "application/json");
    }
    requests_.push_back(seen);
  });
  port_ = server_->bind_to_any_port("127.0.0.1");
  if (port_ <= 0) throw std::runtime_error("fake OpenAI server: cannot bind a loopback port");
  // The socket already listens: a request that arrives before the accept loop runs waits in the
  // backlog.
  thread_ = std::thread([this] { server_->listen_after_bind(); });
}

FakeOpenAi::~FakeOpenAi() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

std::string FakeOpenAi::base_url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }

std::vector<ChatRequest> FakeOpenAi::requests() const {
  std::lock_guard lock(mu_);
  return requests_;
}

}  // namespace e2e
