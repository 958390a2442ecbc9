#include "aibrix/store/metric_value.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace aibrix::store {

double HistogramMetric::Mean() const { return count == 0 ? 0 : sum / count; }

double HistogramMetric::Percentile(double p) const {
  if (buckets.empty() || !(p > 0) || p > 100) return 0;
  double total = count;
  for (const auto& [bound, cumulative] : buckets) total = std::max(total, cumulative);
  if (total <= 0) return 0;
  const double target = p / 100.0 * total;
  double previous_bound = 0;
  double previous_count = 0;
  for (const auto& [bound, cumulative] : buckets) {
    if (cumulative >= target) {
      if (std::isinf(bound)) return previous_bound;
      const double in_bucket = cumulative - previous_count;
      if (in_bucket <= 0) return bound;
      return previous_bound + (bound - previous_bound) * (target - previous_count) / in_bucket;
    }
    previous_bound = bound;
    previous_count = cumulative;
  }
  return previous_bound;
}

double MetricValue::Simple() const {
  if (const auto* simple = std::get_if<SimpleMetric>(&value)) return simple->value;
  return 0;
}

}  // namespace aibrix::store
