// Configuration of the aibrix-cache service: defaults, then the AIBrix environment variables
// that apply (spec §8), then command-line flags (main.cc), which win.
//
// Thread safety: a plain value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace aibrix::server {

struct ServiceConfig {
  std::string http_addr = "127.0.0.1:8090";
  std::string discovery = "static";  // only "static" is implemented so far
  std::string static_config;         // path of the static YAML file
  std::string log_level = "info";

  // The HTTP front door (http::ServerOptions): threads, limits and deadlines.
  int io_threads = 0;  // 0: the number of cores
  size_t max_body_bytes = 8 << 20;
  size_t max_head_bytes = 64 << 10;
  size_t max_target_bytes = 8 << 10;
  size_t max_connections = 20000;
  int head_timeout_ms = 10000;
  int body_timeout_ms = 10000;
  int idle_timeout_ms = 60000;
  int write_timeout_ms = 30000;
  // SIGTERM: /readyz turns 503 at once, accepting stops after shutdown_delay_ms, in-flight
  // requests and streams get until shutdown_grace_ms (Kubernetes allows 30 s).
  int shutdown_delay_ms = 2000;
  int shutdown_grace_ms = 25000;

  // AIBRIX_POD_METRIC_REFRESH_INTERVAL_MS: engine metric scrape interval.
  int metric_refresh_ms = 50;
  // A scraped engine metric older than this is stale: routers ignore it (and fall back as
  // when it is missing); aibrix_cache_stale_metrics counts such values.
  int metric_max_age_ms = 1000;
  // One scrape of one engine port: connect plus the whole response, and the largest body
  // taken (larger: the scrape fails, counted as body_too_large).
  int metric_timeout_ms = 3000;
  int64_t metric_max_body_bytes = int64_t{8} << 20;
  // AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED: subscribe to engines' KV events.
  bool kv_event_sync = false;
  // The KV event path's threads and memory (docs/kvevents.md): socket threads and appliers
  // shared by every pod; the engine ranks it is sized for (libzmq socket limit; the
  // descriptor limit is raised to match where allowed); byte budgets.
  int kv_io_threads = 1;
  int kv_apply_threads = 2;
  int kv_max_ranks = 1000;
  int64_t kv_queue_bytes = int64_t{512} << 20;
  int64_t kv_pod_queue_bytes = int64_t{64} << 20;
  int64_t kv_max_message_bytes = int64_t{64} << 20;
  // AIBRIX_PREFIX_CACHE_BLOCK_SIZE: prefix-index block size, in tokens (the reference counts
  // bytes of 4-byte token ids; we count tokens, vLLM's unit).
  int block_size = 16;
  // AIBRIX_PREFIX_CACHE_BLOCK_NUMBER: blocks the routing-fed index keeps per pod.
  int64_t approx_blocks_per_pod = 200000;
  // AIBRIX_PREFIX_CACHE_EVICTION_DURATION_MINS: TTL of routing-fed entries.
  int64_t approx_ttl_minutes = 20;
  // Routing: the algorithm used when a request names none, and the proxy's upstream limits.
  std::string routing_algorithm = "random";
  int upstream_connect_timeout_ms = 2000;
  int upstream_timeout_ms = 300000;  // the whole response
  int upstream_first_byte_timeout_ms = 300000;
  int upstream_idle_timeout_ms = 120000;  // between response chunks
  // /cache/route request ids not /cache/done'd within this time are settled (counted).
  int route_ttl_ms = 600000;
  // AIBRIX_PREFIX_CACHE_POD_RUNNING_REQUEST_IMBALANCE_ABS_COUNT / _STANDARD_DEVIATION_FACTOR.
  int64_t imbalance_abs_count = 8;
  double std_dev_factor = 1.0;
  uint64_t routing_seed = 0;  // 0: random
  // Prompt tokenizer for routing: "local" (engine-sim's byte rules) or "remote" (each
  // model's engines' vLLM /tokenize; AIBRIX_PREFIX_CACHE_USE_REMOTE_TOKENIZER=true).
  std::string tokenizer = "local";
  int tokenizer_timeout_ms = 5000;  // per remote attempt

  // Memory bounds of the event-fed index, in (block, pod, tier) memberships.
  int64_t index_max_memberships = 50'000'000;
  int64_t index_max_memberships_per_pod = 4'000'000;

  // The AIBrix environment variables applied over the defaults; invalid values keep the
  // default (the reference's parsing rules).
  static ServiceConfig FromEnvironment();
};

}  // namespace aibrix::server
