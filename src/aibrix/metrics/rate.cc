#include "aibrix/metrics/rate.h"

#include <cmath>

namespace aibrix::metrics {

void CounterRate::Observe(TimePoint now, double value) {
  if (std::isnan(value)) return;
  if (last_value_) total_ += value >= *last_value_ ? value - *last_value_ : value;
  last_value_ = value;
  last_at_ = now;
  if (snapshots_.empty() || now - snapshots_.back().at >= options_.min_spacing) {
    snapshots_.push_back({now, total_});
  }
  while (snapshots_.size() > 1 && (snapshots_.size() > options_.max_snapshots ||
                                   now - snapshots_.front().at > options_.max_age)) {
    snapshots_.pop_front();
  }
}

std::optional<double> CounterRate::Rate() const {
  if (!last_value_) return std::nullopt;
  const TimePoint target = last_at_ - options_.window;
  const Snapshot* base = nullptr;
  for (const Snapshot& snapshot : snapshots_) {
    if (snapshot.at >= last_at_) break;
    if (base == nullptr ||
        std::abs((snapshot.at - target).count()) < std::abs((base->at - target).count())) {
      base = &snapshot;
    }
  }
  if (base == nullptr) return std::nullopt;
  const auto elapsed = last_at_ - base->at;
  if (elapsed < options_.min_elapsed) return std::nullopt;
  return (total_ - base->total) / std::chrono::duration<double>(elapsed).count();
}

}  // namespace aibrix::metrics
