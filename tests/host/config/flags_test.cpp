#include <gtest/gtest.h>

#include "config/flags.hpp"

namespace wk::config {
namespace {

const LongOptions kOptions = {{"worker", true}, {"verbose", false}, {"plugins", true}, {"payload", true}};

TEST(GoFlags, SingleDashLongOptionsGetASecondDash) {
  const std::vector<std::string> in = {"-worker=w1", "-verbose", "-plugins", "/p", "exec"};
  const std::vector<std::string> want = {"--worker=w1", "--verbose", "--plugins", "/p", "exec"};
  EXPECT_EQ(normalize_go_flags(in, kOptions), want);
}

TEST(GoFlags, GnuStyleShortOptionsAndUnknownWordsAreUntouched) {
  const std::vector<std::string> in = {"--worker", "w1", "-v", "-xyz", "--verbose", "plain"};
  EXPECT_EQ(normalize_go_flags(in, kOptions), in);
}

TEST(GoFlags, ValuesAndPositionalsAfterDoubleDashAreUntouched) {
  const std::vector<std::string> in = {"-payload", "-verbose", "--", "-worker"};
  const std::vector<std::string> want = {"--payload", "-verbose", "--", "-worker"};
  EXPECT_EQ(normalize_go_flags(in, kOptions), want);
}

TEST(GoFlags, InlineValueDoesNotConsumeTheNextWord) {
  const std::vector<std::string> in = {"-worker=a", "-verbose"};
  const std::vector<std::string> want = {"--worker=a", "--verbose"};
  EXPECT_EQ(normalize_go_flags(in, kOptions), want);
}

TEST(GoFlags, AnEmptyInlineValueIsAnEmptyWordNotTheNextWord) {
  const std::vector<std::string> in = {"--worker=", "--plugins", "/p", "-worker=", "exec"};
  const std::vector<std::string> want = {"--worker", "", "--plugins", "/p", "--worker", "", "exec"};
  EXPECT_EQ(normalize_go_flags(in, kOptions), want);
}

}  // namespace
}  // namespace wk::config
