#include "aibrix/redis/feature_metrics.h"

#include "aibrix/common/strings.h"
#include "aibrix/redis/connection.h"

namespace aibrix::redis {

FeatureMetrics::FeatureMetrics(prometheus::Registry& registry, std::string feature)
    : feature_(std::move(feature)),
      errors_(prometheus::BuildCounter()
                  .Name("aibrix_redis_errors_total")
                  .Help("Redis failures by feature and reason; the feature degrades, routing "
                        "goes on")
                  .Register(registry)),
      syncs_(prometheus::BuildCounter()
                 .Name("aibrix_redis_syncs_total")
                 .Help("Redis rounds (trace flushes, profile refreshes, replica syncs) completed")
                 .Register(registry)
                 .Add({{"feature", feature_}})),
      connects_(prometheus::BuildCounter()
                    .Name("aibrix_redis_connects_total")
                    .Help("Connections to Redis made by a feature (the first and reconnects)")
                    .Register(registry)
                    .Add({{"feature", feature_}})),
      connected_(prometheus::BuildGauge()
                     .Name("aibrix_redis_connected")
                     .Help("1 while a feature's Redis connection is up")
                     .Register(registry)
                     .Add({{"feature", feature_}})) {}

void FeatureMetrics::Error(std::string_view reason, std::string_view message) {
  errors_.Add({{"feature", feature_}, {"reason", std::string(reason)}}).Increment();
  common::WarnLimited(log_limiter_, "redis", "{} ({}): {}", feature_, reason, message);
}

void FeatureMetrics::Error(const absl::Status& status) {
  Error(ErrorReason(status), common::AsStd(status.message()));
}

void FeatureMetrics::Round(bool ok, const Connection& connection) {
  if (ok) syncs_.Increment();
  connected_.Set(connection.connected() ? 1 : 0);
  const double connects = static_cast<double>(connection.connects());
  if (connects > connects_.Value()) connects_.Increment(connects - connects_.Value());
}

double FeatureMetrics::errors(std::string_view reason) const {
  return errors_.Add({{"feature", feature_}, {"reason", std::string(reason)}}).Value();
}

}  // namespace aibrix::redis
