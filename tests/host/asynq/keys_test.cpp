#include <gtest/gtest.h>

#include "asynq/keys.hpp"

namespace wk::asynq {
namespace {

TEST(Keys, NamesFollowTheAsynqLayout) {
  EXPECT_EQ(task_key("default", "abc"), "asynq:{default}:t:abc");
  EXPECT_EQ(pending_key("q"), "asynq:{q}:pending");
  EXPECT_EQ(lease_key("q"), "asynq:{q}:lease");
  EXPECT_EQ(processed_key("q", "2026-11-28"), "asynq:{q}:processed:2026-11-28");
  EXPECT_EQ(failed_total_key("q"), "asynq:{q}:failed");
  EXPECT_EQ(unique_key("q", "cache:flush", ""), "asynq:{q}:unique:cache:flush:");
  EXPECT_EQ(group_key("q", "g1"), "asynq:{q}:g:g1");
  EXPECT_EQ(server_info_key("h", 12, "sid"), "asynq:servers:{h:12:sid}");
  EXPECT_EQ(workers_key("h", 12, "sid"), "asynq:workers:{h:12:sid}");
  EXPECT_EQ(utc_date(1795878132), "2026-11-28");
}

TEST(Keys, QueueNamesAreValidated) {
  EXPECT_NO_THROW(validate_queue_name("critical"));
  EXPECT_THROW(validate_queue_name(""), InvalidQueueName);
  EXPECT_THROW(validate_queue_name(" \t"), InvalidQueueName);
  EXPECT_THROW(validate_queue_name("a{b"), InvalidQueueName);
  EXPECT_THROW(validate_queue_name("a}b"), InvalidQueueName);
}

}  // namespace
}  // namespace wk::asynq
