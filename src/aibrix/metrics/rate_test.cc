#include "aibrix/metrics/rate.h"

#include <gtest/gtest.h>

#include "aibrix/common/clock.h"

namespace aibrix::metrics {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(CounterRateTest, NeedsHistoryThenGivesPerSecondIncrease) {
  common::FakeClock clock;
  CounterRate rate;  // 1 s spacing, 10 s window, 1 s minimum
  rate.Observe(clock.Now(), 100);
  EXPECT_EQ(rate.Rate(), std::nullopt);
  clock.Advance(milliseconds(500));
  rate.Observe(clock.Now(), 150);
  EXPECT_EQ(rate.Rate(), std::nullopt);  // only 0.5 s of history
  clock.Advance(milliseconds(1500));
  rate.Observe(clock.Now(), 300);
  ASSERT_TRUE(rate.Rate().has_value());
  EXPECT_DOUBLE_EQ(*rate.Rate(), 100.0);  // 200 tokens over 2 s
}

TEST(CounterRateTest, CounterResetCountsTheNewValueNotANegativeDelta) {
  common::FakeClock clock;
  CounterRate rate;
  rate.Observe(clock.Now(), 1000);
  clock.Advance(seconds(1));
  rate.Observe(clock.Now(), 1100);  // +100
  clock.Advance(seconds(1));
  rate.Observe(clock.Now(), 40);  // engine restarted: +40
  clock.Advance(seconds(1));
  rate.Observe(clock.Now(), 100);  // +60
  ASSERT_TRUE(rate.Rate().has_value());
  EXPECT_DOUBLE_EQ(*rate.Rate(), 200.0 / 3);
  EXPECT_GT(*rate.Rate(), 0);
}

TEST(CounterRateTest, TheWindowSlides) {
  common::FakeClock clock;
  CounterRate rate;
  double value = 0;
  for (int i = 0; i < 30; ++i) {  // 10/s for 30 s
    rate.Observe(clock.Now(), value);
    clock.Advance(seconds(1));
    value += 10;
  }
  for (int i = 0; i < 15; ++i) {  // then 50/s
    rate.Observe(clock.Now(), value);
    clock.Advance(seconds(1));
    value += 50;
  }
  ASSERT_TRUE(rate.Rate().has_value());
  EXPECT_DOUBLE_EQ(*rate.Rate(), 50.0);  // only the last 10 s count
}

TEST(CounterRateTest, DrainRateOptionsBaseNearOneMinuteAgo) {
  common::FakeClock clock;
  CounterRateOptions options;
  options.min_spacing = seconds(5);
  options.window = seconds(60);
  options.max_age = std::chrono::minutes(3);
  options.max_snapshots = 36;
  options.min_elapsed = seconds(10);
  CounterRate rate(options);
  rate.Observe(clock.Now(), 0);
  clock.Advance(seconds(5));
  rate.Observe(clock.Now(), 5);
  EXPECT_EQ(rate.Rate(), std::nullopt);  // 5 s < 10 s
  for (int i = 0; i < 40; ++i) {         // one request per second, sampled every 2 s
    clock.Advance(seconds(2));
    rate.Observe(clock.Now(), 5 + 2.0 * (i + 1));
  }
  ASSERT_TRUE(rate.Rate().has_value());
  EXPECT_NEAR(*rate.Rate(), 1.0, 1e-9);
}

}  // namespace
}  // namespace aibrix::metrics
