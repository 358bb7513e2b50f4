#include "autodevs/text.hpp"

#include <cctype>
#include <cstdint>

namespace autodevs {
namespace {

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  std::size_t start = 0;
  while (start <= text.size()) {
    const auto end = text.find('\n', start);
    std::string_view line =
        text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return lines;
}

// Length of a bullet/number marker at the start of `line` (after indentation), including the
// following blank; 0 when the line is not a list item.
std::size_t list_marker_length(std::string_view line) {
  if (line.size() >= 2 && (line[0] == '-' || line[0] == '*' || line[0] == '+') &&
      (line[1] == ' ' || line[1] == '\t')) {
    return 2;
  }
  std::size_t digits = 0;
  while (digits < line.size() && digits < 9 && std::isdigit(static_cast<unsigned char>(line[digits])))
    ++digits;
  if (digits == 0 || digits + 1 >= line.size()) return 0;
  if ((line[digits] == '.' || line[digits] == ')') && (line[digits + 1] == ' ' || line[digits + 1] == '\t')) {
    return digits + 2;
  }
  return 0;
}

bool looks_like_diff(std::string_view body) {
  return body.find("diff --git ") != std::string_view::npos ||
         (body.find("--- ") != std::string_view::npos && body.find("+++ ") != std::string_view::npos &&
          body.find("@@") != std::string_view::npos);
}

std::string with_final_newline(std::string text) {
  if (!text.empty() && text.back() != '\n') text.push_back('\n');
  return text;
}

}  // namespace

std::string trim(std::string_view text) {
  std::size_t begin = 0;
  std::size_t end = text.size();
  while (begin < end && is_blank(text[begin])) ++begin;
  while (end > begin && is_blank(text[end - 1])) --end;
  return std::string(text.substr(begin, end - begin));
}

std::vector<std::string> split_command_words(std::string_view line) {
  std::vector<std::string> words;
  std::string current;
  bool in_word = false;
  std::size_t i = 0;
  while (i < line.size()) {
    const char c = line[i];
    if (c == ' ' || c == '\t' || c == '\n') {
      if (in_word) words.push_back(std::move(current));
      current.clear();
      in_word = false;
      ++i;
    } else if (c == '\'') {
      const auto close = line.find('\'', i + 1);
      if (close == std::string_view::npos) throw WordSplitError("unterminated single quote");
      current.append(line.substr(i + 1, close - i - 1));
      in_word = true;
      i = close + 1;
    } else if (c == '"') {
      in_word = true;
      ++i;
      bool closed = false;
      while (i < line.size()) {
        const char d = line[i];
        if (d == '"') {
          closed = true;
          ++i;
          break;
        }
        if (d == '\\' && i + 1 < line.size()) {
          const char next = line[i + 1];
          if (next == '"' || next == '\\' || next == '$' || next == '`') {
            current.push_back(next);
            i += 2;
            continue;
          }
          if (next == '\n') {  // line continuation
            i += 2;
            continue;
          }
        }
        current.push_back(d);
        ++i;
      }
      if (!closed) throw WordSplitError("unterminated double quote");
    } else if (c == '\\') {
      if (i + 1 >= line.size()) throw WordSplitError("trailing backslash");
      if (line[i + 1] != '\n') {
        current.push_back(line[i + 1]);
        in_word = true;
      }
      i += 2;
    } else {
      current.push_back(c);
      in_word = true;
      ++i;
    }
  }
  if (in_word) words.push_back(std::move(current));
  return words;
}

std::string summarize_title(std::string_view text, std::size_t max_chars) {
  std::string first = trim(text.substr(0, text.find('\n')));
  if (first.size() <= max_chars) return first;
  std::size_t cut = max_chars;
  // Never split a UTF-8 sequence: back up over continuation bytes.
  while (cut > 0 && (static_cast<unsigned char>(first[cut]) & 0xC0) == 0x80) --cut;
  first.resize(cut);
  return trim(first) + "...";
}

std::vector<PlannedStep> plan_steps_from_description(std::string_view title, std::string_view description) {
  std::vector<PlannedStep> steps;
  bool in_code_fence = false;
  for (std::string_view raw : split_lines(description)) {
    std::size_t indent = 0;
    while (indent < raw.size() && (raw[indent] == ' ' || raw[indent] == '\t')) ++indent;
    std::string_view line = raw.substr(indent);
    if (line.substr(0, 3) == "```") {  // list markers inside code blocks are code, not steps
      // An indented fence belongs to the step above it (a code sample for that step).
      in_code_fence = !in_code_fence;
      if (!steps.empty() && indent > 0) steps.back().instructions.append("\n").append(raw.substr(indent));
      continue;
    }
    const std::size_t marker = in_code_fence ? 0 : list_marker_length(line);
    if (marker > 0) {
      std::string body = trim(line.substr(marker));
      if (body.empty()) continue;
      steps.push_back({summarize_title(body), body});
    } else if (!steps.empty() && indent > 0 && !trim(line).empty()) {
      steps.back().instructions.append("\n").append(trim(line));
    }
  }
  if (!steps.empty()) return steps;

  const std::string title_text = trim(title);
  const std::string body = trim(description);
  PlannedStep only;
  only.title =
      !title_text.empty() ? summarize_title(title_text) : (!body.empty() ? summarize_title(body) : "Task");
  if (!title_text.empty() && !body.empty()) {
    only.instructions = title_text + "\n\n" + body;
  } else {
    only.instructions = !body.empty() ? body : only.title;
  }
  return {only};
}

std::optional<std::string> extract_unified_diff(std::string_view reply) {
  // Fenced blocks first: ```diff, ```patch, or an untagged fence whose body is a diff.
  std::size_t search = 0;
  while (true) {
    const auto open = reply.find("```", search);
    if (open == std::string_view::npos) break;
    const auto info_end = reply.find('\n', open);
    if (info_end == std::string_view::npos) break;
    const std::string info = trim(reply.substr(open + 3, info_end - open - 3));
    auto close = reply.find("\n```", info_end);
    const std::string_view body = reply.substr(
        info_end + 1, close == std::string_view::npos ? std::string_view::npos : close - info_end);
    if (info == "diff" || info == "patch" || (info.empty() && looks_like_diff(body)) || (info == "udiff")) {
      if (looks_like_diff(body)) return with_final_newline(std::string(body));
    }
    if (close == std::string_view::npos) break;
    search = close + 4;
  }
  // Raw: from the first line that starts a diff to the end.
  std::size_t pos = 0;
  while (pos < reply.size()) {
    const std::string_view rest = reply.substr(pos);
    if (rest.substr(0, 11) == "diff --git " || (rest.substr(0, 4) == "--- " && looks_like_diff(rest))) {
      return with_final_newline(std::string(rest));
    }
    const auto next = reply.find('\n', pos);
    if (next == std::string_view::npos) break;
    pos = next + 1;
  }
  return std::nullopt;
}

std::optional<std::string> find_commit_trailer(std::string_view message, std::string_view key) {
  std::optional<std::string> found;
  for (std::string_view line : split_lines(message)) {
    if (line.size() > key.size() + 1 && line.substr(0, key.size()) == key && line[key.size()] == ':') {
      found = trim(line.substr(key.size() + 1));
    }
  }
  return found;
}

std::string sanitize_utf8(std::string_view bytes) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(bytes.size());
  std::size_t i = 0;
  while (i < bytes.size()) {
    const auto lead = static_cast<unsigned char>(bytes[i]);
    if (lead == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    if (lead < 0x80) {
      out.push_back(static_cast<char>(lead));
      ++i;
      continue;
    }
    std::size_t length = 0;
    std::uint32_t code_point = 0;
    if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
      code_point = lead & 0x1F;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      code_point = lead & 0x0F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      code_point = lead & 0x07;
    }
    bool valid = length != 0 && i + length <= bytes.size();
    for (std::size_t k = 1; valid && k < length; ++k) {
      const auto continuation = static_cast<unsigned char>(bytes[i + k]);
      if ((continuation & 0xC0) != 0x80) valid = false;
      code_point = (code_point << 6) | (continuation & 0x3F);
    }
    // Reject overlong forms, surrogates and values past U+10FFFF.
    if (valid && ((length == 3 && code_point < 0x800) || (length == 4 && code_point < 0x10000) ||
                  (code_point >= 0xD800 && code_point <= 0xDFFF) || code_point > 0x10FFFF)) {
      valid = false;
    }
    if (valid) {
      out.append(bytes.substr(i, length));
      i += length;
    } else {
      out += kReplacement;
      ++i;
    }
  }
  return out;
}

}  // namespace autodevs
