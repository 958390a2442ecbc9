// Configuration of the aibrix-cache service: defaults, then the AIBrix environment variables
// (spec §8, under AIBrix's spellings and the seed document's), then command-line flags
// (main.cc), which win. docs/service.md has the table of variables and flags.
//
// Thread safety: a plain value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace aibrix::server {

struct ServiceConfig {
  std::string http_addr = "127.0.0.1:8090";
  std::string discovery = "static";  // "static" or "kubernetes"
  std::string static_config;         // path of the static YAML file
  // Static discovery: reload the file when it changes (inotify on its directory); SIGHUP
  // reloads it either way.
  bool static_config_watch = true;
  // Kubernetes discovery: a kubeconfig file ("" = in-cluster service account), the
  // namespace to watch ("" = all), a label selector for pods ("" = all).
  std::string kubeconfig;
  std::string k8s_namespace;
  std::string label_selector;
  // AIBRIX_POD_DEPLOYMENT_LABEL / AIBRIX_POD_RAYCLUSTERFLEET_LABEL: the labels naming a
  // pod's deployment (spec §2.4).
  std::string pod_deployment_label = "app.kubernetes.io/name";
  std::string pod_fleet_label = "orchestration.aibrix.ai/raycluster-fleet-name";
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
  int metric_refresh_ms = 50;  // 0: engine metrics are not scraped
  // A scraped engine metric older than this is stale: routers ignore it (and fall back as
  // when it is missing); aibrix_cache_stale_metrics counts such values.
  int metric_max_age_ms = 1000;
  // One scrape of one engine port: connect plus the whole response, and the largest body
  // taken (larger: the scrape fails, counted as body_too_large).
  int metric_timeout_ms = 3000;
  int64_t metric_max_body_bytes = int64_t{8} << 20;
  // AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED (seed: AIBRIX_KV_EVENT_SYNC_ENABLED): subscribe
  // to engines' KV events.
  bool kv_event_sync = false;
  // AIBRIX_ZMQ_REPLAY_TIMEOUT / AIBRIX_ZMQ_RECONNECT_INTERVAL: a replay request's deadline and
  // the first reconnection delay of an engine's KV event sockets.
  int kv_replay_timeout_ms = 5000;
  int kv_reconnect_ms = 1000;
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
  // AIBRIX_PREFIX_CACHE_EVICTION_INTERVAL_SECONDS: how often expired routing-fed entries (and
  // /cache/route leases) are swept.
  int sweep_interval_s = 1;
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
  // vtc-basic (AIBRIX_ROUTER_VTC_BASIC_FAIRNESS_WEIGHT, _UTILIZATION_WEIGHT, _MAX_POD_LOAD,
  // _INPUT_TOKEN_WEIGHT, _OUTPUT_TOKEN_WEIGHT; AIBRIX_ROUTER_VTC_TOKEN_TRACKER_WINDOW_MINUTES).
  double vtc_fairness_weight = 0.5;
  double vtc_utilization_weight = 0.5;
  double vtc_max_pod_load = 100.0;
  double vtc_input_token_weight = 1.0;
  double vtc_output_token_weight = 2.0;
  int vtc_window_minutes = 60;
  // kv-aware: uncached prompt tokens one running request weighs as
  // (AIBRIX_ROUTER_KV_AWARE_LOAD_WEIGHT; ours, not AIBrix's).
  double kv_aware_load_weight = 256.0;
  // kv-aware: what one prompt token queued for prefill on a pod weighs, against one uncached
  // token of the request (AIBRIX_ROUTER_KV_AWARE_QUEUE_WEIGHT; ours).
  double kv_aware_queue_weight = 0.25;
  // Prompt tokenizer for routing: "local" (engine-sim's byte rules), "remote" (vLLM
  // /tokenize: tokenizer_endpoint if set, else each model's engines), or "" = remote when
  // KV event sync is on (token ids must be the engine's for its events to match), else local.
  // AIBRIX_PREFIX_CACHE_USE_REMOTE_TOKENIZER=true (seed: AIBRIX_USE_REMOTE_TOKENIZER) or
  // AIBRIX_PREFIX_CACHE_TOKENIZER_TYPE=remote: "remote".
  std::string tokenizer;
  // AIBRIX_PREFIX_CACHE_REMOTE_TOKENIZER_ENDPOINT (AIBrix's docs:
  // AIBRIX_REMOTE_TOKENIZER_ENDPOINT): a vLLM server asked first for every model; a model it does
  // not serve falls back to the model's engines.
  std::string tokenizer_endpoint;
  // AIBRIX_VLLM_TOKENIZER_ENDPOINT_TEMPLATE: an engine's tokenizer URL with "%s" for its IP;
  // "" = http://IP:its serving port.
  std::string tokenizer_endpoint_template;
  int tokenizer_timeout_ms = 5000;  // AIBRIX_TOKENIZER_REQUEST_TIMEOUT: per remote attempt
  int max_tokenizers = 100;         // AIBRIX_MAX_TOKENIZERS_PER_POOL: (endpoint, model) clients
  int tokenizer_ttl_s = 300;        // AIBRIX_TOKENIZER_TTL: a client unused this long is dropped

  // Redis (docs/redis.md): "" = none. --redis, else REDIS_HOST (and REDIS_PORT, default
  // 6379). "host:port", "[v6]:port" or "unix:/path".
  std::string redis_addr;
  // REDIS_PASSWORD (environment only, so it never shows in a process list): AUTH after
  // connecting.
  std::string redis_password;
  int redis_connect_timeout_ms = 1000;
  int redis_timeout_ms = 1000;  // per command or pipeline
  // AIBRIX_GPU_OPTIMIZER_TRACING_FLAG: write request traces to Redis every 10 s.
  bool gpu_optimizer_tracing = false;
  // AIBRIX_MODEL_GPU_PROFILE_CACHING_FLAG: load GPU profiles from Redis (with the load-aware
  // routers reading them), refreshed every gpu_profile_refresh_ms.
  bool gpu_profile_caching = true;
  int gpu_profile_refresh_ms = 10000;
  // Share running-request counts with the other gateway replicas through Redis every
  // replica_sync_ms (0: off).
  int replica_sync_ms = 100;
  // This replica's id in Redis keys: POD_NAME, else the host name.
  std::string gateway_id;
  // The request-trace interval (10 s, the GPU optimizer's; tests shorten it).
  int trace_period_s = 10;

  // Envoy external processing (docs/extproc.md): the gRPC listen address ("" disables it),
  // the dialect ("aibrix": routing-strategy + target-pod / model headers; "gie": the Gateway
  // API Inference Extension's x-gateway-destination-endpoint + envoy.lb metadata), the
  // algorithm when a request names none (ROUTING_ALGORITHM, or AIBRIX_ROUTING_ALGORITHM; empty:
  // AIBrix's default, Envoy routes by the model header), the bearer token requests must carry
  // (AIBRIX_AUTH_BEARER_TOKEN), the largest gRPC message taken
  // (AIBRIX_GRPC_MAX_MESSAGE_SIZE_BYTES; raised above max_body_bytes when lower) and how
  // long a stream may go without a message; the threads serving the streams (0: one per core).
  std::string extproc_addr = ":50052";
  std::string extproc_dialect = "aibrix";
  std::string extproc_default_strategy;
  std::string auth_bearer_token;
  int64_t grpc_max_message_bytes = 4 << 20;
  int extproc_idle_timeout_ms = 600000;
  int extproc_threads = 0;
  int extproc_spin_us = 50;  // a queue's thread polls this long after an event before sleeping

  // Memory bounds of the event-fed index, in (block, pod, tier) memberships.
  int64_t index_max_memberships = 50'000'000;
  int64_t index_max_memberships_per_pod = 4'000'000;

  // Environment variables that were set but change nothing here (superseded by another
  // mechanism, or inert as in AIBrix), one line each for the start-up log.
  std::vector<std::string> env_notes;

  // "remote" or "local": `tokenizer`, or its default (remote when kv_event_sync).
  std::string EffectiveTokenizer() const;

  // The defaults with the AIBrix environment variables applied. Unlike the reference (which
  // silently keeps the default), a malformed value, two spellings of one variable that
  // disagree, or a feature this build does not have (PROMETHEUS_ENDPOINT,
  // AIBRIX_STATESYNC_ENABLED=true, a tiktoken tokenizer) is an InvalidArgument naming every
  // such variable and why.
  static absl::StatusOr<ServiceConfig> FromEnvironment();
};

}  // namespace aibrix::server
