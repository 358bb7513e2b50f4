#pragma once
// Go-style flags (`-worker=x -verbose`, as the seed's guide shows) next to GNU style
// (`--worker x --verbose`, `-v`). CLI11 reads a single dash as a cluster of short options, so
// the arguments are normalised first: a single-dash word whose name is a known long option
// gets a second dash. Everything else (short options, values, anything after `--`) is left
// alone, so a value such as `--payload -x` survives.
#include <map>
#include <string>
#include <vector>

namespace wk::config {

// Long option name (without dashes) -> whether it takes a value.
using LongOptions = std::map<std::string, bool>;

std::vector<std::string> normalize_go_flags(const std::vector<std::string>& args,
                                            const LongOptions& long_options);

}  // namespace wk::config
