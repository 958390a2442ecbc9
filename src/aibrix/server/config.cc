#include "aibrix/server/config.h"

#include "aibrix/common/env.h"

namespace aibrix::server {

ServiceConfig ServiceConfig::FromEnvironment() {
  ServiceConfig config;
  config.metric_refresh_ms = static_cast<int>(
      common::EnvPositiveInt("AIBRIX_POD_METRIC_REFRESH_INTERVAL_MS", config.metric_refresh_ms));
  config.kv_event_sync =
      common::EnvBool("AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED", config.kv_event_sync);
  config.block_size =
      static_cast<int>(common::EnvPositiveInt("AIBRIX_PREFIX_CACHE_BLOCK_SIZE", config.block_size));
  config.approx_blocks_per_pod =
      common::EnvPositiveInt("AIBRIX_PREFIX_CACHE_BLOCK_NUMBER", config.approx_blocks_per_pod);
  config.approx_ttl_minutes = common::EnvPositiveInt("AIBRIX_PREFIX_CACHE_EVICTION_DURATION_MINS",
                                                     config.approx_ttl_minutes);
  return config;
}

}  // namespace aibrix::server
