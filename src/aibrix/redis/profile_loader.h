// aibrix::redis::ProfileLoader — keeps the ProfileCache in step with the GPU profiles in Redis
// (spec §5): every 10 s, SCAN (never KEYS) `aibrix:profile_*`, GET the values in pipelines,
// parse each (profile::ParseGpuProfile) and ProfileCache::Refresh: new keys are added, a key
// is updated when its `created` is newer, keys deleted from Redis leave the cache.
//
// Bad values (not JSON, wrong shapes, over max_value_bytes, not a string) are skipped —
// counted as aibrix_redis_errors_total{feature="profile", reason="garbage"|"too_large"|
// "reply"} and logged at a limited rate — and the key keeps its last good profile. When Redis
// is down or slow the whole round fails (counted) and the cache stays as it was: routing goes
// on with the last known profiles.
//
// Thread safety: Start/Stop from one owner thread; LoadOnce runs on the loader's thread (or a
// test's, without Start).
#pragma once

#include <chrono>
#include <cstddef>

#include "absl/status/status.h"
#include "aibrix/profile/profile_cache.h"
#include "aibrix/redis/connection.h"
#include "aibrix/redis/feature_metrics.h"
#include "aibrix/redis/periodic.h"

namespace aibrix::redis {

struct ProfileLoaderOptions {
  ConnectionOptions connection;
  std::chrono::milliseconds period{10000};
  // Bounds on what one round reads.
  size_t max_keys = 10000;
  size_t max_value_bytes = size_t{4} << 20;
  // Keys per GET pipeline.
  size_t batch = 100;
};

class ProfileLoader {
 public:
  // `cache` and `registry` are borrowed and must outlive the loader.
  ProfileLoader(profile::ProfileCache& cache, ProfileLoaderOptions options,
                prometheus::Registry& registry);
  ~ProfileLoader() { Stop(); }
  ProfileLoader(const ProfileLoader&) = delete;
  ProfileLoader& operator=(const ProfileLoader&) = delete;

  // Loads once at once, then every period. Idempotent.
  void Start();
  void Stop();

  // One round. Errors: the Redis failure that stopped it (the cache is then unchanged).
  // Skipped values are not errors.
  absl::Status LoadOnce();

  const FeatureMetrics& metrics() const { return metrics_; }

 private:
  // Constant after construction.
  profile::ProfileCache& cache_;
  const ProfileLoaderOptions options_;

  // Used by the loading thread only.
  Connection connection_;
  FeatureMetrics metrics_;
  prometheus::Gauge& profiles_;
  prometheus::Family<prometheus::Counter>& changes_;
  bool first_round_ = true;
  PeriodicThread thread_;
};

}  // namespace aibrix::redis
