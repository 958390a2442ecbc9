#include "aibrix/store/metric_value.h"

#include <limits>

#include "gtest/gtest.h"

namespace aibrix::store {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(MetricValueTest, SimpleValueOfHistogramIsZero) {
  MetricValue simple{SimpleMetric{4.5, {}}};
  EXPECT_EQ(simple.Simple(), 4.5);
  EXPECT_EQ(simple.histogram(), nullptr);
  MetricValue histogram{HistogramMetric{10, 4, {{1, 2}, {kInf, 4}}, {}}};
  EXPECT_EQ(histogram.Simple(), 0);
  ASSERT_NE(histogram.histogram(), nullptr);
}

TEST(MetricValueTest, HistogramMeanAndPercentiles) {
  HistogramMetric h{12.0, 6, {{0.1, 1}, {0.5, 4}, {1.0, 6}, {kInf, 6}}, {}};
  EXPECT_DOUBLE_EQ(h.Mean(), 2.0);
  // p50: target 3 falls in (0.1, 0.5] with 3 in bucket: 0.1 + 0.4 * (3-1)/3.
  EXPECT_NEAR(h.Percentile(50), 0.1 + 0.4 * 2.0 / 3.0, 1e-12);
  EXPECT_NEAR(h.Percentile(100), 1.0, 1e-12);
  EXPECT_NEAR(h.Percentile(10), 0.1 * 0.6, 1e-12);
  EXPECT_EQ(h.Percentile(0), 0);
  EXPECT_EQ(h.Percentile(101), 0);
}

TEST(MetricValueTest, InfBucketYieldsPreviousBound) {
  HistogramMetric h{100, 10, {{1, 5}, {kInf, 10}}, {}};
  EXPECT_EQ(h.Percentile(90), 1);
  HistogramMetric empty;
  EXPECT_EQ(empty.Mean(), 0);
  EXPECT_EQ(empty.Percentile(50), 0);
}

TEST(MetricValueTest, FirstBucketInterpolatesFromZero) {
  HistogramMetric h{1, 4, {{0.5, 4}, {1.0, 4}}, {}};
  EXPECT_DOUBLE_EQ(h.Percentile(50), 0.25);
  EXPECT_DOUBLE_EQ(h.Percentile(100), 0.5);
}

}  // namespace
}  // namespace aibrix::store
