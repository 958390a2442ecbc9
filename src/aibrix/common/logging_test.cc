#include "aibrix/common/logging.h"

#include <sstream>

#include "gtest/gtest.h"
#include "spdlog/sinks/ostream_sink.h"

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
  FakeClock clock;
  RateLimiter limiter(1, std::chrono::seconds(1), clock);
  uint64_t dropped = 99;
  EXPECT_TRUE(limiter.Allow(&dropped));
  EXPECT_EQ(dropped, 0u);
  EXPECT_FALSE(limiter.Allow());
  EXPECT_FALSE(limiter.Allow());
  clock.Advance(std::chrono::milliseconds(999));  // still the same window
  EXPECT_FALSE(limiter.Allow());
  clock.Advance(std::chrono::milliseconds(1));
  EXPECT_TRUE(limiter.Allow(&dropped));
  EXPECT_EQ(dropped, 3u);
  EXPECT_FALSE(limiter.Allow());
}

TEST(LoggingTest, SameLoggerPerComponentAndLevelNames) {
  EXPECT_EQ(Logger("a").get(), Logger("a").get());
  EXPECT_TRUE(SetLogLevel("debug"));
  EXPECT_TRUE(SetLogLevel("off"));
  EXPECT_FALSE(SetLogLevel("loud"));
  EXPECT_TRUE(SetLogLevel("info"));
}

TEST(LoggingTest, WarnLimitedLogsAllowedLinesWithTheSuppressedCount) {
  std::ostringstream out;
  Logger("warn-limited-test")
      ->sinks()
      .push_back(std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  FakeClock clock;
  RateLimiter limiter(1, std::chrono::milliseconds(200), clock);
  for (int i = 0; i < 3; ++i) WarnLimited(limiter, "warn-limited-test", "bad input {}", i);
  clock.Advance(std::chrono::milliseconds(250));
  WarnLimited(limiter, "warn-limited-test", "bad input {}", 3);
  const std::string log = out.str();
  EXPECT_NE(log.find("bad input 0 (0 similar lines suppressed)"), std::string::npos) << log;
  EXPECT_EQ(log.find("bad input 1"), std::string::npos) << log;
  EXPECT_EQ(log.find("bad input 2"), std::string::npos) << log;
  EXPECT_NE(log.find("bad input 3 (2 similar lines suppressed)"), std::string::npos) << log;
}

}  // namespace
}  // namespace aibrix::common
