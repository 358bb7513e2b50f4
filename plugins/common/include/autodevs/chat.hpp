#pragma once
// A minimal OpenAI-compatible chat-completions client over libcurl (OpenAI, vLLM, Ollama,
// llama.cpp server): POST {base}/chat/completions, classify failures for the retry policy.
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "autodevs/text.hpp"

namespace autodevs {

struct HttpResponse {
  long status = 0;
  std::string body;
  std::optional<std::chrono::seconds> retry_after;  // from a numeric Retry-After header
};

struct HttpPost {
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string body;
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  std::size_t max_response_bytes = 8 << 20;
  std::function<bool()> cancel_requested;
};

// Transport failure (DNS, connect, TLS, timeout): worth retrying.
class HttpTransportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// cancel_requested() returned true mid-transfer.
class HttpCancelled : public std::runtime_error {
 public:
  HttpCancelled() : std::runtime_error("request cancelled") {}
};

HttpResponse http_post(const HttpPost& request);

struct ChatEndpoint {
  std::string base_url;  // e.g. https://api.openai.com/v1
  std::string model;
  std::string api_key;  // sent as a bearer token; never logged
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
};

struct ChatMessage {
  std::string role;
  std::string content;
};

// Why a chat call failed, in terms of what the task should do next.
class ChatError : public std::runtime_error {
 public:
  enum class Kind { Retry, Permanent };
  ChatError(Kind kind, const std::string& message, std::optional<std::chrono::seconds> retry_after = {},
            bool rate_limited = false)
      : std::runtime_error(message), kind_(kind), retry_after_(retry_after), rate_limited_(rate_limited) {}
  Kind kind() const noexcept { return kind_; }
  std::optional<std::chrono::seconds> retry_after() const noexcept { return retry_after_; }
  // The provider answered 429: its quota, shared by every worker, not this request, is the cause.
  bool rate_limited() const noexcept { return rate_limited_; }

 private:
  Kind kind_;
  std::optional<std::chrono::seconds> retry_after_;
  bool rate_limited_ = false;
};

std::string chat_completions_url(std::string_view base_url);
std::string build_chat_request(const std::string& model, const std::vector<ChatMessage>& messages);
// The first choice's message content. Throws ChatError(Retry) when the body is not the
// expected shape (a proxy error page, a truncated reply).
std::string chat_reply_content(std::string_view response_body);
// Classifies the HTTP status: 2xx -> content; 429/5xx -> ChatError(Retry, Retry-After);
// other statuses -> ChatError(Permanent).
std::string chat_content_or_throw(const HttpResponse& response);

// One round trip. Throws ChatError (transport failures are Retry) or HttpCancelled.
std::string chat_complete(const ChatEndpoint& endpoint, const std::vector<ChatMessage>& messages,
                          const std::function<bool()>& cancel_requested);

// Steps from a planner reply: {"steps":[{"title":..,"instructions":..}, ...]} or a bare array,
// optionally inside a ``` fence. Throws ChatError(Retry) naming what is wrong.
std::vector<PlannedStep> parse_planned_steps(std::string_view content, std::size_t max_steps = 50);

}  // namespace autodevs
