#pragma once
// Pure text helpers shared by the plugins: command-line word splitting (for AI_COMMAND),
// the deterministic planner's step extraction, unified-diff extraction from a model reply,
// and commit-trailer lookup.
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace autodevs {

class WordSplitError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Splits a command line into argv the way a POSIX shell splits words, without any expansion:
// blanks separate words; '...' is literal; "..." allows \" \\ \$ \` and \newline escapes;
// a backslash outside quotes takes the next character literally. Variables, globs, pipes and
// redirections are NOT interpreted ("$HOME" stays "$HOME"). Throws WordSplitError on an
// unterminated quote or a trailing backslash.
std::vector<std::string> split_command_words(std::string_view command_line);

struct PlannedStep {
  std::string title;         // one line, at most ~120 characters
  std::string instructions;  // the full text the agent gets
};

// The deterministic planner: every line that starts (after indentation) with "- ", "* ",
// "1. " or "1) " becomes one step, in order; continuation lines (indented, non-bullet) are
// appended to the current step's instructions. Without any bullet line the whole description
// is one step. Title and description both empty -> one step titled "Task".
std::vector<PlannedStep> plan_steps_from_description(std::string_view title, std::string_view description);

// A short one-line title from a longer text: first line, trimmed, cut at max_chars on a
// UTF-8 boundary with "..." appended when cut.
std::string summarize_title(std::string_view text, std::size_t max_chars = 120);

// The unified diff in a model reply: the first ```diff / ```patch fence (or any fence whose
// body looks like a diff), else the reply itself from its first "diff --git" / "--- " line.
// std::nullopt when the reply holds no diff at all.
std::optional<std::string> extract_unified_diff(std::string_view reply);

// The value of the last "Key: value" trailer line in a commit message, if present.
std::optional<std::string> find_commit_trailer(std::string_view message, std::string_view key);

std::string trim(std::string_view text);

// Valid UTF-8 without NUL bytes (what a PostgreSQL text column accepts): invalid sequences and
// NULs become U+FFFD. Agent output is arbitrary bytes.
std::string sanitize_utf8(std::string_view bytes);

}  // namespace autodevs
