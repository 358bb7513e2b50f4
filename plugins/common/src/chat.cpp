#include "autodevs/chat.hpp"

#include <curl/curl.h>

#include <cctype>
#include <memory>

#include <nlohmann/json.hpp>

namespace autodevs {
namespace {

struct CurlEasyDeleter {
  void operator()(CURL* handle) const noexcept { curl_easy_cleanup(handle); }
};
struct CurlListDeleter {
  void operator()(curl_slist* list) const noexcept { curl_slist_free_all(list); }
};

struct TransferState {
  std::string body;
  std::size_t max_bytes = 0;
  bool too_large = false;
  std::optional<std::chrono::seconds> retry_after;
  const std::function<bool()>* cancel_requested = nullptr;
  bool cancelled = false;
};

std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
  auto* state = static_cast<TransferState*>(user);
  const std::size_t bytes = size * count;
  if (state->body.size() + bytes > state->max_bytes) {
    state->too_large = true;
    return 0;  // aborts the transfer
  }
  state->body.append(data, bytes);
  return bytes;
}

std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
  auto* state = static_cast<TransferState*>(user);
  const std::size_t bytes = size * count;
  std::string_view line(data, bytes);
  constexpr std::string_view name = "retry-after:";
  if (line.size() > name.size()) {
    bool matches = true;
    for (std::size_t i = 0; i < name.size(); ++i) {
      if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) {
        matches = false;
        break;
      }
    }
    if (matches) {
      // Only the delay-seconds form; an HTTP-date falls back to the default backoff.
      const std::string value = trim(line.substr(name.size()));
      if (!value.empty() && value.size() < 10 && value.find_first_not_of("0123456789") == std::string::npos) {
        state->retry_after = std::chrono::seconds(std::stoll(value));
      }
    }
  }
  return bytes;
}

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* state = static_cast<TransferState*>(user);
  if (state->cancel_requested != nullptr && *state->cancel_requested && (*state->cancel_requested)()) {
    state->cancelled = true;
    return 1;  // aborts the transfer
  }
  return 0;
}

std::string strip_code_fence(std::string_view content) {
  std::string text = trim(content);
  if (text.rfind("```", 0) == 0) {
    const auto first_newline = text.find('\n');
    const auto closing = text.rfind("```");
    if (first_newline != std::string::npos && closing != std::string::npos && closing > first_newline) {
      return trim(std::string_view(text).substr(first_newline + 1, closing - first_newline - 1));
    }
  }
  return text;
}

// Every occurrence of `secret` in `text` replaced: error texts quote reply bodies, and some
// OpenAI-compatible proxies echo the bearer token they refused.
std::string redact(std::string text, const std::string& secret) {
  if (secret.empty()) return text;
  constexpr std::string_view marker = "<redacted>";
  for (auto pos = text.find(secret); pos != std::string::npos; pos = text.find(secret, pos + marker.size())) {
    text.replace(pos, secret.size(), marker);
  }
  return text;
}

}  // namespace

HttpResponse http_post(const HttpPost& request) {
  std::unique_ptr<CURL, CurlEasyDeleter> curl(curl_easy_init());
  if (!curl) throw HttpTransportError("curl_easy_init failed");
  curl_slist* raw_headers = nullptr;
  for (const auto& header : request.headers) raw_headers = curl_slist_append(raw_headers, header.c_str());
  std::unique_ptr<curl_slist, CurlListDeleter> headers(raw_headers);

  TransferState state;
  state.max_bytes = request.max_response_bytes;
  state.cancel_requested = &request.cancel_requested;
  CURL* h = curl.get();
  curl_easy_setopt(h, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);  // worker threads: no SIGALRM-based DNS timeouts
  curl_easy_setopt(h, CURLOPT_POST, 1L);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, request.body.data());
  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(request.timeout.count()));
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 30'000L);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &state);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &state);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, &on_progress);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, &state);
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);

  const CURLcode rc = curl_easy_perform(h);
  if (state.cancelled) throw HttpCancelled();
  if (state.too_large)
    throw HttpTransportError("response larger than " + std::to_string(state.max_bytes) + " bytes");
  if (rc != CURLE_OK) throw HttpTransportError(std::string("HTTP request failed: ") + curl_easy_strerror(rc));
  HttpResponse response;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &response.status);
  response.body = std::move(state.body);
  response.retry_after = state.retry_after;
  return response;
}

std::string chat_completions_url(std::string_view base_url) {
  std::string base = trim(base_url);
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base + "/chat/completions";
}

std::string build_chat_request(const std::string& model, const std::vector<ChatMessage>& messages) {
  nlohmann::json body;
  body["model"] = model;
  body["temperature"] = 0;
  body["messages"] = nlohmann::json::array();
  for (const auto& message : messages)
    body["messages"].push_back({{"role", message.role}, {"content", message.content}});
  return body.dump();
}

std::string chat_reply_content(std::string_view response_body) {
  const auto parsed = nlohmann::json::parse(response_body, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    throw ChatError(ChatError::Kind::Retry, "chat completion reply is not a JSON object");
  }
  const auto choices = parsed.find("choices");
  if (choices == parsed.end() || !choices->is_array() || choices->empty()) {
    throw ChatError(ChatError::Kind::Retry, "chat completion reply has no choices");
  }
  const auto& first = (*choices)[0];
  if (!first.is_object() || !first.contains("message") || !first["message"].is_object() ||
      !first["message"].contains("content") || !first["message"]["content"].is_string()) {
    throw ChatError(ChatError::Kind::Retry, "chat completion reply has no message content");
  }
  return first["message"]["content"].get<std::string>();
}

std::string chat_content_or_throw(const HttpResponse& response) {
  if (response.status >= 200 && response.status < 300) return chat_reply_content(response.body);
  std::string detail = response.body.substr(0, 300);
  const std::string message = "chat completion returned HTTP " + std::to_string(response.status) +
                              (detail.empty() ? "" : ": " + detail);
  if (response.status == 429 || response.status >= 500) {
    throw ChatError(ChatError::Kind::Retry, message, response.retry_after, response.status == 429);
  }
  throw ChatError(ChatError::Kind::Permanent, message);
}

std::string chat_complete(const ChatEndpoint& endpoint, const std::vector<ChatMessage>& messages,
                          const std::function<bool()>& cancel_requested) {
  HttpPost post;
  post.url = chat_completions_url(endpoint.base_url);
  post.headers = {"Content-Type: application/json", "Accept: application/json"};
  if (!endpoint.api_key.empty()) post.headers.push_back("Authorization: Bearer " + endpoint.api_key);
  post.body = build_chat_request(endpoint.model, messages);
  post.timeout = endpoint.timeout;
  post.cancel_requested = cancel_requested;
  HttpResponse response;
  try {
    response = http_post(post);
  } catch (const HttpTransportError& e) {
    throw ChatError(ChatError::Kind::Retry, redact(e.what(), endpoint.api_key));
  }
  try {
    return chat_content_or_throw(response);
  } catch (const ChatError& e) {
    throw ChatError(e.kind(), redact(e.what(), endpoint.api_key), e.retry_after(), e.rate_limited());
  }
}

std::vector<PlannedStep> parse_planned_steps(std::string_view content, std::size_t max_steps) {
  const auto parsed = nlohmann::json::parse(strip_code_fence(content), nullptr, false);
  if (parsed.is_discarded()) throw ChatError(ChatError::Kind::Retry, "planner reply is not JSON");
  const nlohmann::json* list = &parsed;
  if (parsed.is_object()) {
    const auto it = parsed.find("steps");
    if (it == parsed.end()) throw ChatError(ChatError::Kind::Retry, "planner reply has no \"steps\"");
    list = &*it;
  }
  if (!list->is_array() || list->empty()) {
    throw ChatError(ChatError::Kind::Retry, "planner reply: \"steps\" must be a non-empty array");
  }
  if (list->size() > max_steps) {
    throw ChatError(ChatError::Kind::Retry,
                    "planner reply: more than " + std::to_string(max_steps) + " steps");
  }
  std::vector<PlannedStep> steps;
  for (std::size_t i = 0; i < list->size(); ++i) {
    const auto& item = (*list)[i];
    const std::string where = "planner reply: steps[" + std::to_string(i) + "]";
    PlannedStep step;
    if (item.is_string()) {
      step.instructions = trim(item.get<std::string>());
      step.title = summarize_title(step.instructions);
    } else if (item.is_object()) {
      const auto instructions = item.find("instructions");
      if (instructions == item.end() || !instructions->is_string()) {
        throw ChatError(ChatError::Kind::Retry, where + ".instructions must be a string");
      }
      step.instructions = trim(instructions->get<std::string>());
      const auto title = item.find("title");
      if (title != item.end() && !title->is_string()) {
        throw ChatError(ChatError::Kind::Retry, where + ".title must be a string");
      }
      step.title = summarize_title(title != item.end() ? title->get<std::string>() : step.instructions);
    } else {
      throw ChatError(ChatError::Kind::Retry, where + " must be an object");
    }
    if (step.instructions.empty()) throw ChatError(ChatError::Kind::Retry, where + ".instructions is empty");
    if (step.title.empty()) step.title = summarize_title(step.instructions);
    steps.push_back(std::move(step));
  }
  return steps;
}

}  // namespace autodevs
