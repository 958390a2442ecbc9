#include "aibrix/common/logging.h"

#include "gtest/gtest.h"

namespace aibrix::common {
namespace {

TEST(RateLimiterTest, AllowsBurstThenCountsSuppressed) {
  RateLimiter limiter(3, std::chrono::hours(1));
  EXPECT_TRUE(limiter.Allow());
  EXPECT_TRUE(limiter.Allow());
  EXPECT_TRUE(limiter.Allow());
  EXPECT_FALSE(limiter.Allow());
  EXPECT_FALSE(limiter.Allow());
}

TEST(RateLimiterTest, NewWindowReportsDropped) {
  RateLimiter limiter(1, std::chrono::nanoseconds(1));
  uint64_t dropped = 99;
  EXPECT_TRUE(limiter.Allow(&dropped));
  EXPECT_EQ(dropped, 0u);
}

TEST(LoggingTest, SameLoggerPerComponentAndLevelNames) {
  EXPECT_EQ(Logger("a").get(), Logger("a").get());
  EXPECT_TRUE(SetLogLevel("debug"));
  EXPECT_TRUE(SetLogLevel("off"));
  EXPECT_FALSE(SetLogLevel("loud"));
  EXPECT_TRUE(SetLogLevel("info"));
}

}  // namespace
}  // namespace aibrix::common
