// runner::OutputRelay: what a runner writes becomes log lines, a line too long is cut into
// pieces, and a cut never splits a UTF-8 character.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "runner/output_relay.hpp"
#include "support/test_env.hpp"

namespace wk::runner {
namespace {

// The lines of `logger` (JSON) once `count` are there, or what there is after 10 s.
std::vector<std::string> await_lines(const log::Logger& logger, size_t count) {
  test::eventually([&] { return logger.lines().size() >= count; });
  return logger.lines();
}

TEST(OutputRelay, ALongLineIsCutBetweenCharactersNotThroughOne) {
  const auto logger = log::Logger::in_memory(log::Level::info, log::Format::json);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  posix::UniqueFd read_end(fds[0]);
  posix::UniqueFd write_end(fds[1]);
  OutputRelay relay;
  relay.add(std::move(read_end), logger, log::Level::info, "stdout");
  // 16 KiB - 1 bytes of ASCII, then "é" (two bytes) across the 16 KiB mark, then a newline.
  const std::string text = std::string(16 * 1024 - 1, 'a') + "\xC3\xA9" + "tail\n";
  ASSERT_EQ(::write(write_end.get(), text.data(), text.size()), static_cast<ssize_t>(text.size()));
  write_end.reset();
  const auto lines = await_lines(logger, 2);
  ASSERT_EQ(lines.size(), 2U);
  EXPECT_NE(lines[0].find(std::string(16 * 1024 - 1, 'a') + "\""), std::string::npos);  // the cut
  EXPECT_NE(lines[1].find("\"msg\":\"\xC3\xA9tail\""), std::string::npos) << lines[1];
}

}  // namespace
}  // namespace wk::runner
