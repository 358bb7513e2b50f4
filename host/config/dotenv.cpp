// `.env` parsing: the subset of dotenv syntax that shells and docker-compose agree on.
#include <algorithm>
#include <cctype>
#include <string>

#include "config/config.hpp"

namespace wk::config {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && (is_space(s.front()) || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (is_space(s.back()) || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

bool valid_key(std::string_view key) {
  if (key.empty() || std::isdigit(static_cast<unsigned char>(key.front())) != 0) return false;
  for (const char c : key) {
    if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '_') return false;
  }
  return true;
}

// Parses the value part of one line (already left-trimmed). Returns false on a syntax error.
bool parse_value(std::string_view raw, std::string& value, std::string& why) {
  value.clear();
  if (raw.empty()) return true;
  const char quote = raw.front();
  if (quote == '\'' || quote == '"') {
    size_t i = 1;
    for (; i < raw.size(); ++i) {
      const char c = raw[i];
      if (c == quote) break;
      if (quote == '"' && c == '\\' && i + 1 < raw.size()) {
        const char e = raw[++i];
        switch (e) {
          case 'n':
            value.push_back('\n');
            break;
          case 't':
            value.push_back('\t');
            break;
          case 'r':
            value.push_back('\r');
            break;
          default:
            value.push_back(e);
            break;  // \" \\ \$ and anything else: the character itself
        }
        continue;
      }
      value.push_back(c);
    }
    if (i >= raw.size()) {
      why = std::string("unterminated ") + (quote == '"' ? "double" : "single") + " quote";
      return false;
    }
    const auto rest = trim(raw.substr(i + 1));
    if (!rest.empty() && rest.front() != '#') {
      why = "unexpected text after the closing quote";
      return false;
    }
    return true;
  }
  // Unquoted: a `#` that follows whitespace starts a comment (so `a#b` keeps its `#`).
  size_t end = raw.size();
  for (size_t i = 1; i < raw.size(); ++i) {
    if (raw[i] == '#' && is_space(raw[i - 1])) {
      end = i;
      break;
    }
  }
  value = std::string(trim(raw.substr(0, end)));
  return true;
}

}  // namespace

Variables parse_dotenv(std::string_view text, const std::string& origin) {
  Variables out;
  size_t line_no = 0;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    const auto raw_line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++line_no;
    auto line = trim(raw_line);
    if (line.empty() || line.front() == '#') continue;
    if (line.substr(0, 7) == "export " || line.substr(0, 7) == "export\t") line = trim(line.substr(7));
    const auto eq = line.find('=');
    const auto where = origin + ":" + std::to_string(line_no);
    // A malformed line is never echoed, not even in part: `DB_PASSWORD s3cr3t==` would show
    // the secret as a "variable name". The file, the line and the column say where to look.
    if (eq == std::string_view::npos) {
      throw ConfigError(where, where + ": expected KEY=VALUE (the line is not shown: it may hold a secret)");
    }
    const std::string key(trim(line.substr(0, eq)));
    if (!valid_key(key)) {
      const auto bad = std::find_if(key.begin(), key.end(), [](char c) {
        return !(std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_');
      });
      const size_t column = static_cast<size_t>(raw_line.find(key) + (bad - key.begin())) + 1;
      throw ConfigError(where, where +
                                   ": the variable name before '=' must be letters, digits and _, "
                                   "not starting with a digit (column " +
                                   std::to_string(column) + "; the line is not shown: it may hold a secret)");
    }
    std::string value;
    std::string why;
    if (!parse_value(trim(line.substr(eq + 1)), value, why)) {
      throw ConfigError(key, std::string(where).append(": ").append(key).append(": ").append(why));
    }
    out[key] = std::move(value);
  }
  return out;
}

}  // namespace wk::config
