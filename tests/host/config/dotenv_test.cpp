#include <gtest/gtest.h>

#include "config/config.hpp"

namespace wk::config {
namespace {

TEST(Dotenv, ParsesAssignmentsCommentsQuotesAndExport) {
  const auto s = parse_dotenv(
      "# a comment\n"
      "\n"
      "REDIS_HOST=redis.local\n"
      "export REDIS_PORT=6380\n"
      "  DB_NAME = spaced  \n"
      "AI_COMMAND='claude -p \"$X\"'\n"
      "DB_PASSWORD=\"p\\\"w\\\\d\\n\"  # trailing comment\n"
      "WORKER_QUEUES=a=1,b=2 # comment after a value\n"
      "WORKER_NAME=a#b\n"
      "EMPTY=\n"
      "CRLF=yes\r\n");
  EXPECT_EQ(s.at("REDIS_HOST"), "redis.local");
  EXPECT_EQ(s.at("REDIS_PORT"), "6380");
  EXPECT_EQ(s.at("DB_NAME"), "spaced");
  EXPECT_EQ(s.at("AI_COMMAND"), "claude -p \"$X\"");
  EXPECT_EQ(s.at("DB_PASSWORD"), "p\"w\\d\n");
  EXPECT_EQ(s.at("WORKER_QUEUES"), "a=1,b=2");
  EXPECT_EQ(s.at("WORKER_NAME"), "a#b");
  EXPECT_EQ(s.at("EMPTY"), "");
  EXPECT_EQ(s.at("CRLF"), "yes");
  EXPECT_EQ(s.size(), 9u);
}

TEST(Dotenv, LaterAssignmentWins) { EXPECT_EQ(parse_dotenv("A=1\nA=2\n").at("A"), "2"); }

TEST(Dotenv, MalformedLineNamesFileAndLine) {
  try {
    parse_dotenv("A=1\nthis is not an assignment\n", "/etc/worker.env");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("/etc/worker.env:2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_dotenv("A=\"unterminated\n"), ConfigError);
  EXPECT_THROW(parse_dotenv("1A=x\n"), ConfigError);
  EXPECT_THROW(parse_dotenv("A B=x\n"), ConfigError);
  EXPECT_THROW(parse_dotenv("A='x' junk\n"), ConfigError);
}

// A malformed line that holds a password must never show it, whole or in part.
TEST(Dotenv, AMalformedLineNeverEchoesItsValue) {
  for (const std::string line : {"DB_PASSWORD s3cr3t==", "DB_PASSWORD s3cr3t", "DB_PASSWORD:s3cr3t=x",
                                 "s3cr3t", "DB_PASSWORD=\"s3cr3t", "DB_PASSWORD='s3cr3t' junk"}) {
    try {
      parse_dotenv("A=1\n" + line + "\n", "/etc/worker.env");
      ADD_FAILURE() << "no error for " << line;
    } catch (const ConfigError& e) {
      const std::string what = e.what();
      EXPECT_EQ(what.find("s3cr3t"), std::string::npos) << what;
      EXPECT_EQ(e.variable().find("s3cr3t"), std::string::npos) << e.variable();
      EXPECT_NE(what.find("/etc/worker.env:2"), std::string::npos) << what;
    }
  }
}

}  // namespace
}  // namespace wk::config
