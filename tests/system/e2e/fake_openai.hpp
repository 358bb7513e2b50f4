#pragma once
// An OpenAI-compatible chat-completions endpoint on loopback for the e2e tests (cpp-httplib
// server in a thread). It answers planner requests with JSON steps and step requests with a
// unified diff that creates `step-<n>.txt`, and records every request with its arrival time.
// It can answer the first request(s) of a step with 429 + Retry-After.
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace httplib {
class Server;
}

namespace e2e {

struct ChatRequest {
  std::chrono::system_clock::time_point at;  // when the request arrived
  std::string kind;                          // "planner" or "step"
  int step = 0;                              // step number for kind "step"
  int status = 0;                            // the status answered
  std::string authorization;                 // the Authorization header
  std::string model;
};

class FakeOpenAi {
 public:
  struct Script {
    std::vector<std::string> planned_titles = {"Add the first file", "Add the second file"};
    int throttle_step = 0;  // this step's first `throttle_count` requests get 429
    int throttle_count = 0;
    int retry_after_seconds = 2;
  };

  explicit FakeOpenAi(Script script);
  ~FakeOpenAi();  // stops the server and joins its thread
  FakeOpenAi(const FakeOpenAi&) = delete;
  FakeOpenAi& operator=(const FakeOpenAi&) = delete;

  // "http://127.0.0.1:<port>/v1"
  std::string base_url() const;
  std::vector<ChatRequest> requests() const;

  // The diff the server returns for step n (what the worktree must contain afterwards).
  static std::string file_content(int step);

 private:
  Script script_;
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<ChatRequest> requests_;
};

}  // namespace e2e
