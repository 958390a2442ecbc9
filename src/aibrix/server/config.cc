#include "aibrix/server/config.h"

#include <cstdlib>

#include "aibrix/common/env.h"
#include "aibrix/common/net.h"
#include "aibrix/redis/replica_sync.h"

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
  config.imbalance_abs_count = common::EnvPositiveInt(
      "AIBRIX_PREFIX_CACHE_POD_RUNNING_REQUEST_IMBALANCE_ABS_COUNT", config.imbalance_abs_count);
  if (auto factor = common::EnvString("AIBRIX_PREFIX_CACHE_STANDARD_DEVIATION_FACTOR")) {
    char* end = nullptr;
    const double value = std::strtod(factor->c_str(), &end);
    if (end != factor->c_str() && *end == '\0' && value > 0) config.std_dev_factor = value;
  }
  if (common::EnvBool("AIBRIX_PREFIX_CACHE_USE_REMOTE_TOKENIZER", false)) {
    config.tokenizer = "remote";
  }
  if (auto host = common::EnvString("REDIS_HOST")) {
    const int64_t port = common::EnvPositiveInt("REDIS_PORT", 6379);
    config.redis_addr =
        host->starts_with("unix:")
            ? *host
            : common::FormatHostPort(*host, static_cast<uint16_t>(port <= 65535 ? port : 6379));
  }
  config.redis_password = common::EnvString("REDIS_PASSWORD").value_or("");
  config.gpu_optimizer_tracing =
      common::EnvBool("AIBRIX_GPU_OPTIMIZER_TRACING_FLAG", config.gpu_optimizer_tracing);
  // The seed spells it with a lower-case "Model"; the reference reads the upper-case name.
  config.gpu_profile_caching =
      common::EnvBool("AIBRIX_Model_GPU_PROFILE_CACHING_FLAG", config.gpu_profile_caching);
  config.gpu_profile_caching =
      common::EnvBool("AIBRIX_MODEL_GPU_PROFILE_CACHING_FLAG", config.gpu_profile_caching);
  config.gateway_id = redis::DefaultGatewayId();
  return config;
}

}  // namespace aibrix::server
