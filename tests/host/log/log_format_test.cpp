#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "log/log.hpp"

namespace wk::log {
namespace {

// 2024-01-01T12:00:00.000Z
constexpr long long kNoon = 1704110400000LL;

TEST(LogFormat, LogfmtMatchesTheSeedsLines) {
  EXPECT_EQ(
      format_line(Format::logfmt, kNoon, Level::info, "Starting job worker",
                  {{"worker_name", "planning-worker-1"}}),
      "time=2024-01-01T12:00:00.000Z level=INFO msg=\"Starting job worker\" worker_name=planning-worker-1");
  EXPECT_EQ(format_line(Format::logfmt, kNoon + 1, Level::info, "Starting job server",
                        {{"redis_addr", "localhost:6379"}}),
            "time=2024-01-01T12:00:00.001Z level=INFO msg=\"Starting job server\" redis_addr=localhost:6379");
}

TEST(LogFormat, LogfmtQuotesAndEscapesValues) {
  const auto line = format_line(Format::logfmt, kNoon, Level::warn, "m",
                                {{"a", "two words"},
                                 {"b", "say \"hi\""},
                                 {"c", "x=y"},
                                 {"d", ""},
                                 {"e", "line\nbreak"},
                                 {"f", "back\\slash"},
                                 {"g", 42}});
  EXPECT_EQ(line,
            "time=2024-01-01T12:00:00.000Z level=WARN msg=\"m\" a=\"two words\" b=\"say \\\"hi\\\"\" "
            "c=\"x=y\" d=\"\" "
            "e=\"line\\nbreak\" f=\"back\\\\slash\" g=42");
}

TEST(LogFormat, LevelsAreUpperCase) {
  EXPECT_NE(format_line(Format::logfmt, kNoon, Level::debug, "x", {}).find(" level=DEBUG "),
            std::string::npos);
  EXPECT_NE(format_line(Format::logfmt, kNoon, Level::error, "x", {}).find(" level=ERROR "),
            std::string::npos);
}

TEST(LogFormat, JsonHasTheSameFieldsInOrder) {
  const auto line = format_line(Format::json, kNoon, Level::info, "Starting job worker",
                                {{"worker_name", "w \"1\""}, {"attempt", 2}});
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const auto j = nlohmann::ordered_json::parse(line);
  EXPECT_EQ(j.at("time"), "2024-01-01T12:00:00.000Z");
  EXPECT_EQ(j.at("level"), "INFO");
  EXPECT_EQ(j.at("msg"), "Starting job worker");
  EXPECT_EQ(j.at("worker_name"), "w \"1\"");
  EXPECT_EQ(j.at("attempt"), "2");
  EXPECT_EQ(j.begin().key(), "time");
}

TEST(LogFormat, ParsesLevelsAndFormats) {
  EXPECT_EQ(parse_level("WARNING"), Level::warn);
  EXPECT_EQ(parse_level("debug"), Level::debug);
  EXPECT_THROW(parse_level("verbose"), std::invalid_argument);
  EXPECT_EQ(parse_format("JSON"), Format::json);
  EXPECT_THROW(parse_format("xml"), std::invalid_argument);
}

TEST(Logger, BoundFieldsLevelsAndOverrides) {
  const auto logger = Logger::in_memory(Level::info, Format::logfmt);
  const auto task_logger = logger.with({{"task_id", "t1"}, {"queue", "default"}});
  task_logger.debug("hidden");
  task_logger.info("Processing", {{"queue", "critical"}});
  const auto lines = logger.lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("msg=\"Processing\" queue=critical task_id=t1"), std::string::npos) << lines[0];
  EXPECT_EQ(lines[0].find("queue=default"), std::string::npos) << lines[0];
  EXPECT_FALSE(logger.enabled(Level::debug));
  EXPECT_TRUE(logger.enabled(Level::warn));
}

}  // namespace
}  // namespace wk::log
