#include <gtest/gtest.h>

#include <chrono>

#include "config/config.hpp"

namespace wk::config {
namespace {

using namespace std::chrono_literals;

TEST(Duration, ParsesGoStyleText) {
  EXPECT_EQ(parse_duration("30s"), 30s);
  EXPECT_EQ(parse_duration("5m"), 5min);
  EXPECT_EQ(parse_duration("24h"), 24h);
  EXPECT_EQ(parse_duration("1h30m"), 90min);
  EXPECT_EQ(parse_duration("2h45m10s"), 2h + 45min + 10s);
  EXPECT_EQ(parse_duration("500ms"), 500ms);
  EXPECT_EQ(parse_duration("1.5h"), 90min);
  EXPECT_EQ(parse_duration("250us"), 250us);
  EXPECT_EQ(parse_duration("250\xC2\xB5s"), 250us);
  EXPECT_EQ(parse_duration("7ns"), 7ns);
  EXPECT_EQ(parse_duration("0"), 0ns);
  EXPECT_EQ(parse_duration("+1s"), 1s);
  EXPECT_EQ(parse_duration("1m500ms"), 60500ms);
}

TEST(Duration, RejectsMalformedText) {
  for (const char* bad :
       {"", "30", "s", "5x", "-5s", "1h30", "1.s.", "abc", "10 s", "1e3s", "99999999999h"}) {
    EXPECT_THROW(parse_duration(bad), std::invalid_argument) << bad;
  }
}

TEST(Duration, FormatsCompactly) {
  EXPECT_EQ(format_duration(30s), "30s");
  EXPECT_EQ(format_duration(5min), "5m");
  EXPECT_EQ(format_duration(90min), "1h30m");
  EXPECT_EQ(format_duration(500ms), "500ms");
  EXPECT_EQ(format_duration(1500ms), "1.5s");
  EXPECT_EQ(format_duration(0ms), "0s");
}

}  // namespace
}  // namespace wk::config

namespace wk::config {
namespace {

TEST(Rfc3339, ParsesUtcOffsetsAndFractions) {
  using namespace std::chrono;
  const auto noon = sys_days(year(2024) / 1 / 1) + 12h;
  EXPECT_EQ(parse_rfc3339("2024-01-01T12:00:00Z"), noon);
  EXPECT_EQ(parse_rfc3339("2024-01-01t12:00:00z"), noon);
  EXPECT_EQ(parse_rfc3339("2024-01-01T14:30:00+02:30"), noon);
  EXPECT_EQ(parse_rfc3339("2024-01-01T07:00:00-05:00"), noon);
  EXPECT_EQ(parse_rfc3339("2024-01-01T12:00:00.250Z"), noon + 250ms);
}

TEST(Rfc3339, RejectsMalformedText) {
  for (const char* bad :
       {"", "2024-01-01", "2024-01-01T12:00:00", "2024-02-30T00:00:00Z", "2024-01-01T25:00:00Z",
        "2024-01-01T12:00:00Zjunk", "2024-01-01T12:00:00+0200", "tomorrow"}) {
    EXPECT_THROW(parse_rfc3339(bad), std::invalid_argument) << bad;
  }
}

}  // namespace
}  // namespace wk::config
