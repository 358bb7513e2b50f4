// WORKER_LIMITS parsing and pattern matching (docs/queue-engine.md, "Flow control").
#include "task/limits.hpp"

#include <gtest/gtest.h>

namespace wk::task {
namespace {

TEST(TypeLimits, ParsesEveryKeyAndRateUnit) {
  const auto limits =
      parse_type_limits(" ai:execute fleet=3 rate=60/m burst=5 ;worktree:* concurrency=2; x rate=20/s ");
  ASSERT_EQ(limits.size(), 3u);
  EXPECT_EQ(limits[0].pattern, "ai:execute");
  EXPECT_EQ(limits[0].fleet, 3u);
  EXPECT_DOUBLE_EQ(limits[0].rate, 1.0);
  EXPECT_EQ(limits[0].burst, 5u);
  EXPECT_EQ(limits[0].text(), "ai:execute fleet=3 rate=60/m burst=5");
  EXPECT_EQ(limits[1].pattern, "worktree:*");
  EXPECT_EQ(limits[1].concurrency, 2u);
  EXPECT_FALSE(limits[1].fleet_wide());
  EXPECT_DOUBLE_EQ(limits[2].rate, 20.0);
  EXPECT_EQ(limits[2].effective_burst(), 1u);
  EXPECT_DOUBLE_EQ(parse_type_limits("a rate=3600/h")[0].rate, 1.0);
  EXPECT_TRUE(parse_type_limits("").empty());
  EXPECT_TRUE(parse_type_limits(" ; ").empty());
}

TEST(TypeLimits, PatternsMatchExactTypesPrefixesAndEverything) {
  TypeLimit exact{"ai:execute", 1, 0, 0, 0, ""};
  EXPECT_TRUE(exact.matches("ai:execute"));
  EXPECT_FALSE(exact.matches("ai:execute2"));
  EXPECT_FALSE(exact.matches("ai"));
  TypeLimit prefix{"ai:*", 1, 0, 0, 0, ""};
  EXPECT_TRUE(prefix.matches("ai:execute"));
  EXPECT_TRUE(prefix.matches("ai:"));
  EXPECT_FALSE(prefix.matches("ai"));
  EXPECT_FALSE(prefix.matches("git:clone"));
  TypeLimit all{"*", 1, 0, 0, 0, ""};
  EXPECT_TRUE(all.matches("anything"));
}

TEST(TypeLimits, RefusesWhatWouldBeMisread) {
  const auto refused = [](const char* text) {
    try {
      parse_type_limits(text);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(refused("ai:execute").find("sets no limit"), std::string::npos);
  EXPECT_NE(refused("ai:execute fleet=0").find("from 1"), std::string::npos);
  EXPECT_NE(refused("ai:execute fleet=three").find("whole number"), std::string::npos);
  EXPECT_NE(refused("ai:execute rate=20").find("per unit"), std::string::npos);
  EXPECT_NE(refused("ai:execute rate=20/d").find("per unit"), std::string::npos);
  EXPECT_NE(refused("ai:execute concurrency=1 burst=2").find("goes with rate"), std::string::npos);
  EXPECT_NE(refused("ai:execute speed=2").find("concurrency, fleet, rate and burst"), std::string::npos);
  EXPECT_NE(refused("ai:execute fleet").find("key=value"), std::string::npos);
  EXPECT_NE(refused("a*b fleet=1").find("prefix ending in *"), std::string::npos);
  EXPECT_NE(refused("a fleet=1; a rate=1/s").find("limited twice"), std::string::npos);
}

}  // namespace
}  // namespace wk::task
