// aibrix::redis::FeatureMetrics — the series one Redis feature ("trace", "profile",
// "replica") exports, and its rate-limited log (docs/metrics.md, section Redis):
//   aibrix_redis_errors_total{feature, reason}   failures by reason (ErrorReason, or the
//                                                feature's own: "garbage", "too_large")
//   aibrix_redis_connected{feature}              1 while the feature's connection is up
//   aibrix_redis_connects_total{feature}         connects, the first one and reconnects
//   aibrix_redis_syncs_total{feature}            rounds that completed
//
// Thread safety: every method may be called from any thread (prometheus-cpp metrics are
// thread-safe, the log limiter is lock-free).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "aibrix/common/logging.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace aibrix::redis {

class Connection;

class FeatureMetrics {
 public:
  // Registers (or joins) the families in `registry`, which must outlive this object.
  FeatureMetrics(prometheus::Registry& registry, std::string feature);
  FeatureMetrics(const FeatureMetrics&) = delete;
  FeatureMetrics& operator=(const FeatureMetrics&) = delete;

  // Counts a failure under `reason` and logs `message` (at most 5 lines a second per feature).
  void Error(std::string_view reason, std::string_view message);
  // The same, with the reason of a Connection failure (ErrorReason).
  void Error(const absl::Status& status);
  // After a round: 1 completed round more when `ok`; the connection gauge and connect count.
  void Round(bool ok, const Connection& connection);

  // Current values, for tests and benchmarks.
  double errors(std::string_view reason) const;
  double syncs() const { return syncs_.Value(); }
  double connects() const { return connects_.Value(); }
  const std::string& feature() const { return feature_; }

 private:
  const std::string feature_;
  prometheus::Family<prometheus::Counter>& errors_;
  prometheus::Counter& syncs_;
  prometheus::Counter& connects_;
  prometheus::Gauge& connected_;
  common::RateLimiter log_limiter_;
};

}  // namespace aibrix::redis
