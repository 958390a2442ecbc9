// Engine metric values held per pod (and per pod and model): a simple number, or a
// cumulative histogram with mean and percentile (spec §1.5), each stamped with the time it
// was scraped so readers can tell a fresh value from a stale one.
//
// Thread safety: plain values.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace aibrix::store {

using MetricLabels = std::map<std::string, std::string>;

struct SimpleMetric {
  double value = 0;
  MetricLabels labels;
};

struct HistogramMetric {
  double sum = 0;
  double count = 0;
  // (upper bound, cumulative count), sorted by bound, bounds unique; +Inf is
  // std::numeric_limits<double>::infinity(). A vector: a scrape writes a few hundred of these.
  std::vector<std::pair<double, double>> buckets;
  MetricLabels labels;

  // sum / count, 0 when count is 0.
  double Mean() const;
  // The p-th percentile (p in (0, 100]) by linear interpolation inside the first bucket whose
  // cumulative count reaches p% of the total; a +Inf bucket yields the previous upper bound.
  // Returns 0 for an empty histogram or p outside (0, 100].
  double Percentile(double p) const;
};

// True when a value scraped at `scraped_at` is at most `max_age` old at `now`; never for an
// unknown scrape time (the epoch).
inline bool ScrapedWithin(std::chrono::steady_clock::time_point scraped_at,
                          std::chrono::steady_clock::time_point now,
                          std::chrono::steady_clock::duration max_age) {
  return scraped_at != std::chrono::steady_clock::time_point{} && now - scraped_at <= max_age;
}

struct MetricValue {
  std::variant<SimpleMetric, HistogramMetric> value;
  // When the value was read from the engine (steady clock); the epoch when no time is known.
  std::chrono::steady_clock::time_point scraped_at{};

  // True when the value was scraped within `max_age` of `now` (never for an unknown time).
  bool FreshAt(std::chrono::steady_clock::time_point now,
               std::chrono::steady_clock::duration max_age) const {
    return ScrapedWithin(scraped_at, now, max_age);
  }

  // The simple value; 0 for a histogram.
  double Simple() const;
  const HistogramMetric* histogram() const { return std::get_if<HistogramMetric>(&value); }
};

}  // namespace aibrix::store
