#include "aibrix/server/config.h"

#include <cstdlib>

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
  // AIBrix's code reads ROUTING_ALGORITHM, its documentation names AIBRIX_ROUTING_ALGORITHM:
  // both are honoured (the first wins).
  for (const char* name : {"ROUTING_ALGORITHM", "AIBRIX_ROUTING_ALGORITHM"}) {
    if (auto algorithm = common::EnvString(name); algorithm && !algorithm->empty()) {
      config.extproc_default_strategy = *algorithm;
      break;
    }
  }
  if (auto token = common::EnvString("AIBRIX_AUTH_BEARER_TOKEN")) config.auth_bearer_token = *token;
  config.grpc_max_message_bytes =
      common::EnvPositiveInt("AIBRIX_GRPC_MAX_MESSAGE_SIZE_BYTES", config.grpc_max_message_bytes);
  return config;
}

}  // namespace aibrix::server
