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
  config.imbalance_abs_count = common::EnvPositiveInt(
      "AIBRIX_PREFIX_CACHE_POD_RUNNING_REQUEST_IMBALANCE_ABS_COUNT", config.imbalance_abs_count);
  const double factor =
      common::EnvFloat("AIBRIX_PREFIX_CACHE_STANDARD_DEVIATION_FACTOR", config.std_dev_factor);
  if (factor > 0) config.std_dev_factor = factor;
  config.vtc_fairness_weight =
      common::EnvFloat("AIBRIX_ROUTER_VTC_BASIC_FAIRNESS_WEIGHT", config.vtc_fairness_weight);
  config.vtc_utilization_weight =
      common::EnvFloat("AIBRIX_ROUTER_VTC_BASIC_UTILIZATION_WEIGHT", config.vtc_utilization_weight);
  config.vtc_max_pod_load =
      common::EnvFloat("AIBRIX_ROUTER_VTC_BASIC_MAX_POD_LOAD", config.vtc_max_pod_load);
  config.vtc_input_token_weight =
      common::EnvFloat("AIBRIX_ROUTER_VTC_BASIC_INPUT_TOKEN_WEIGHT", config.vtc_input_token_weight);
  config.vtc_output_token_weight = common::EnvFloat("AIBRIX_ROUTER_VTC_BASIC_OUTPUT_TOKEN_WEIGHT",
                                                    config.vtc_output_token_weight);
  config.vtc_window_minutes = static_cast<int>(common::EnvPositiveInt(
      "AIBRIX_ROUTER_VTC_TOKEN_TRACKER_WINDOW_MINUTES", config.vtc_window_minutes));
  if (common::EnvBool("AIBRIX_PREFIX_CACHE_USE_REMOTE_TOKENIZER", false)) {
    config.tokenizer = "remote";
  }
  return config;
}

}  // namespace aibrix::server
