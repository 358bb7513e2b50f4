#include "config/flags.hpp"

#include <string_view>

namespace wk::config {

namespace {

// The option name of a dashed word: "-worker=x" -> "worker", "--verbose" -> "verbose".
std::string_view option_name(std::string_view word, size_t dashes) {
  std::string_view name = word.substr(dashes);
  if (const auto eq = name.find('='); eq != std::string_view::npos) name = name.substr(0, eq);
  return name;
}

}  // namespace

std::vector<std::string> normalize_go_flags(const std::vector<std::string>& args,
                                            const LongOptions& long_options) {
  std::vector<std::string> out;
  out.reserve(args.size());
  bool next_is_value = false;  // the previous word was a long option awaiting its value
  bool rest_positional = false;
  for (const auto& arg : args) {
    if (rest_positional || next_is_value) {
      out.push_back(arg);
      next_is_value = false;
      continue;
    }
    if (arg == "--") {
      rest_positional = true;
      out.push_back(arg);
      continue;
    }
    const std::string_view word(arg);
    const bool gnu_long = word.size() > 2 && word.substr(0, 2) == "--";
    const bool go_long = !gnu_long && word.size() > 2 && word[0] == '-' && word[1] != '-';
    if (!gnu_long && !go_long) {
      out.push_back(arg);
      continue;
    }
    const size_t dashes = gnu_long ? 2 : 1;
    const auto name = option_name(word, dashes);
    const auto known = long_options.find(std::string(name));
    if (known == long_options.end()) {
      // Unknown: leave it for CLI11 to reject (or to read as short options).
      out.push_back(arg);
      continue;
    }
    const size_t eq = word.find('=');
    const bool has_inline_value = eq != std::string_view::npos;
    next_is_value = known->second && !has_inline_value;
    if (has_inline_value && eq + 1 == word.size()) {
      // `--name=` sets an empty value (e.g. --metrics-addr= disables the endpoint); CLI11 would
      // take the next word as the value instead, so the empty value goes as a word of its own.
      out.push_back((go_long ? "-" + arg : arg).substr(0, (go_long ? 1 : 0) + eq));
      out.emplace_back();
      continue;
    }
    out.push_back(go_long ? "-" + arg : arg);
  }
  return out;
}

}  // namespace wk::config
