// wk_payload.hpp: every kind of bad input is wk::Permanent("bad_payload") naming the field.
#include <gtest/gtest.h>
#include <wk_payload.hpp>

#include <cstdint>
#include <string>

namespace {

// The Permanent error `read` throws; fails the test when it throws nothing else.
template <class Fn>
wk::Permanent permanent_from(Fn&& read) {
  try {
    read();
  } catch (const wk::Permanent& e) {
    return e;
  }
  ADD_FAILURE() << "no wk::Permanent thrown";
  return wk::Permanent("", "");
}

void expect_bad(std::string_view payload, const std::string& message) {
  const wk::Permanent e = permanent_from([&] {
    const wk::JsonPayload p(payload);
    (void)p.required<std::string>("name");
    (void)p.optional<std::int32_t>("count");
    (void)p.optional<std::uint8_t>("small");
    (void)p.optional<bool>("flag");
  });
  EXPECT_EQ(e.code(), "bad_payload") << payload;
  EXPECT_EQ(std::string(e.what()), message) << payload;
}

TEST(SdkPayload, EachBadInputIsPermanentAndNamesTheField) {
  expect_bad("{", "invalid payload: payload: not valid JSON");
  expect_bad("[1,2]", "invalid payload: payload: must be a JSON object");
  expect_bad("{}", "invalid payload: name: is required");
  expect_bad(R"({"name":null})", "invalid payload: name: is required");
  expect_bad(R"({"name":5})", "invalid payload: name: must be a string");
  expect_bad(R"({"name":"x","count":"3"})", "invalid payload: count: must be an integer");
  expect_bad(R"({"name":"x","count":1.5})", "invalid payload: count: must be an integer");
  expect_bad(R"({"name":"x","count":4294967296})", "invalid payload: count: is out of range");
  expect_bad(R"({"name":"x","count":-2147483649})", "invalid payload: count: is out of range");
  expect_bad(R"({"name":"x","small":256})", "invalid payload: small: is out of range");
  expect_bad(R"({"name":"x","small":-1})", "invalid payload: small: must not be negative");
  expect_bad(R"({"name":"x","flag":1})", "invalid payload: flag: must be true or false");
}

TEST(SdkPayload, GoodInputReadsAndAbsentOptionalsAreEmpty) {
  const wk::JsonPayload p(R"({"name":"ada","count":-7,"small":255,"flag":true,"ratio":0.5})");
  EXPECT_EQ(p.required<std::string>("name"), "ada");
  EXPECT_EQ(p.optional<std::int32_t>("count"), -7);
  EXPECT_EQ(p.optional<std::uint8_t>("small"), 255);
  EXPECT_EQ(p.optional<bool>("flag"), true);
  EXPECT_EQ(p.optional<double>("ratio"), 0.5);
  EXPECT_FALSE(p.optional<std::string>("absent").has_value());
  EXPECT_TRUE(p.has("name"));
  EXPECT_FALSE(p.has("absent"));
  // No payload at all (asynq allows it) reads as an empty object.
  EXPECT_TRUE(wk::JsonPayload("").json().empty());
  EXPECT_TRUE(wk::JsonPayload(" \n").json().is_object());
}

struct Greeting {
  std::string name;
  int times = 1;
};
void from_json(const nlohmann::json& j, Greeting& g) {
  j.at("name").get_to(g.name);
  if (j.contains("times")) j.at("times").get_to(g.times);
  if (j.contains("times_text")) g.times = std::stoi(j.at("times_text").get<std::string>());  // throws
}

TEST(SdkPayload, PayloadAsTurnsConversionErrorsIntoBadPayload) {
  wk::Task task;
  task.payload = R"({"name":"ada","times":3})";
  const auto g = wk::payload_as<Greeting>(task);
  EXPECT_EQ(g.name, "ada");
  EXPECT_EQ(g.times, 3);
  task.payload = R"({"times":3})";
  const wk::Permanent e = permanent_from([&] { (void)wk::payload_as<Greeting>(task); });
  EXPECT_EQ(e.code(), "bad_payload");
  EXPECT_NE(std::string(e.what()).find("invalid payload: payload: "), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("name"), std::string::npos) << e.what();
  // A standard exception from the author's own from_json is bad input too, not a retry.
  task.payload = R"({"name":"ada","times_text":"many"})";
  EXPECT_EQ(permanent_from([&] { (void)wk::payload_as<Greeting>(task); }).code(), "bad_payload");
}

}  // namespace
