// aibrix-cache: the service (default) and its operator tools (subcommands).
// Thin by design: parse flags, build the Service, wait for signals (SIGHUP: reload the
// discovery configuration; SIGINT/SIGTERM: stop).

#include <csignal>
#include <cstdio>

#include "CLI/CLI.hpp"
#include "aibrix/common/logging.h"
#include "aibrix/server/service.h"

namespace {

// Blocks the handled signals in every thread (threads inherit the mask), so that only the
// main thread receives them, through sigwait.
sigset_t BlockHandledSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

}  // namespace

int main(int argc, char** argv) {
  aibrix::server::ApplyProcessSettings(argv);  // server/service.h says what and why
  using aibrix::server::ServiceConfig;
  absl::StatusOr<ServiceConfig> from_env = ServiceConfig::FromEnvironment();
  if (!from_env.ok()) {
    std::fprintf(stderr, "aibrix-cache: %s\n", std::string(from_env.status().message()).c_str());
    return 2;
  }
  ServiceConfig config = std::move(*from_env);

  CLI::App app{"aibrix-cache: pod registry, KV-event prefix index and router for LLM inference"};
  app.option_defaults()->always_capture_default();
  app.add_option("--http-addr", config.http_addr, "HTTP listen address (API, proxy, /metrics)");
  app.add_option("--discovery", config.discovery,
                 "Pod discovery: static (a YAML file) or kubernetes (list/watch the API server)")
      ->check(CLI::IsMember({"static", "kubernetes"}));
  app.add_option("--static-config", config.static_config, "Static discovery YAML file")
      ->check(CLI::ExistingFile);
  app.add_flag("--static-config-watch,!--no-static-config-watch", config.static_config_watch,
               "Reload the static file when it changes (SIGHUP reloads it either way)");
  app.add_option("--pod-deployment-label", config.pod_deployment_label,
                 "Pod label naming its deployment (env AIBRIX_POD_DEPLOYMENT_LABEL)");
  app.add_option("--pod-fleet-label", config.pod_fleet_label,
                 "Pod label naming its Ray cluster fleet (env AIBRIX_POD_RAYCLUSTERFLEET_LABEL)");
  app.add_option("--kubeconfig", config.kubeconfig,
                 "Kubernetes discovery: kubeconfig file (its current context); default: the "
                 "in-cluster service account")
      ->check(CLI::ExistingFile);
  app.add_option("--namespace", config.k8s_namespace,
                 "Kubernetes discovery: watch pods and ModelAdapters of this namespace only "
                 "(default: all)");
  app.add_option("--label-selector", config.label_selector,
                 "Kubernetes discovery: watch only pods matching this label selector");
  app.add_option("--io-threads", config.io_threads, "HTTP I/O threads (0: one per core)")
      ->check(CLI::Range(0, 256));
  app.add_option("--max-body-bytes", config.max_body_bytes, "Largest request body (413)")
      ->check(CLI::PositiveNumber);
  app.add_option("--max-head-bytes", config.max_head_bytes, "Largest request head (431)")
      ->check(CLI::Range(1024, 1 << 24));
  app.add_option("--max-target-bytes", config.max_target_bytes, "Longest request target (414)")
      ->check(CLI::Range(64, 1 << 20));
  app.add_option("--max-connections", config.max_connections,
                 "Open client connections; past it a new one is answered 503 and closed")
      ->check(CLI::PositiveNumber);
  app.add_option("--head-timeout-ms", config.head_timeout_ms,
                 "Time for a whole request head, from its first byte (408)")
      ->check(CLI::PositiveNumber);
  app.add_option("--body-timeout-ms", config.body_timeout_ms,
                 "Longest wait for request body progress (408)")
      ->check(CLI::PositiveNumber);
  app.add_option("--idle-timeout-ms", config.idle_timeout_ms, "Keep-alive idle timeout")
      ->check(CLI::PositiveNumber);
  app.add_option("--write-timeout-ms", config.write_timeout_ms,
                 "A client taking none of the response for this long is cut")
      ->check(CLI::PositiveNumber);
  app.add_option("--shutdown-delay-ms", config.shutdown_delay_ms,
                 "After SIGTERM: /readyz 503 at once, accepting stops after this delay")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--shutdown-grace", config.shutdown_grace_ms,
                 "After SIGTERM: ms in-flight requests and streams get before they are cut")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--metric-refresh-ms", config.metric_refresh_ms,
                 "Engine metric scrape interval; 0 turns scraping off (env "
                 "AIBRIX_POD_METRIC_REFRESH_INTERVAL_MS)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--metric-max-age", config.metric_max_age_ms,
                 "ms after which a scraped engine metric is stale and routers ignore it")
      ->check(CLI::PositiveNumber);
  app.add_option("--metric-timeout-ms", config.metric_timeout_ms,
                 "Deadline of one engine /metrics fetch (connect plus the whole response)")
      ->check(CLI::PositiveNumber);
  app.add_option("--metric-max-body-bytes", config.metric_max_body_bytes,
                 "Largest engine /metrics body taken (larger: the scrape fails)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--kv-event-sync,!--no-kv-event-sync", config.kv_event_sync,
               "Subscribe to engines' KV events (env AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED)");
  app.add_option("--kv-replay-timeout-ms", config.kv_replay_timeout_ms,
                 "KV events: deadline of a replay request (env AIBRIX_ZMQ_REPLAY_TIMEOUT)")
      ->check(CLI::PositiveNumber);
  app.add_option("--kv-reconnect-ms", config.kv_reconnect_ms,
                 "KV events: first reconnection delay, doubling up to 30 s (env "
                 "AIBRIX_ZMQ_RECONNECT_INTERVAL)")
      ->check(CLI::PositiveNumber);
  app.add_option("--kv-io-threads", config.kv_io_threads,
                 "KV events: socket threads shared by every pod (each watches many pods)")
      ->check(CLI::Range(1, 64));
  app.add_option("--kv-apply-threads", config.kv_apply_threads,
                 "KV events: threads applying decoded batches to the prefix index")
      ->check(CLI::Range(1, 64));
  app.add_option("--kv-max-ranks", config.kv_max_ranks,
                 "KV events: engine ranks (pods x data-parallel ranks) the service subscribes "
                 "to at most; sizes libzmq's socket limit")
      ->check(CLI::Range(1, 100000));
  app.add_option("--kv-queue-bytes", config.kv_queue_bytes,
                 "KV events: decoded batches waiting to be applied, all pods (bytes)")
      ->check(CLI::PositiveNumber);
  app.add_option("--kv-pod-queue-bytes", config.kv_pod_queue_bytes,
                 "KV events: per pod, decoded batches waiting and live batches held during a "
                 "replay (bytes each); past it the pod is cleared and resynchronised")
      ->check(CLI::PositiveNumber);
  app.add_option("--kv-max-message-bytes", config.kv_max_message_bytes,
                 "KV events: largest message taken from an engine (ZMQ_MAXMSGSIZE)")
      ->check(CLI::PositiveNumber);
  app.add_option("--block-size", config.block_size,
                 "Prefix index block size in tokens (env AIBRIX_PREFIX_CACHE_BLOCK_SIZE)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--log-level", config.log_level, "trace, debug, info, warn, error, off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.add_option("--approx-blocks-per-pod", config.approx_blocks_per_pod,
                 "Routing-fed index capacity per pod (env AIBRIX_PREFIX_CACHE_BLOCK_NUMBER)")
      ->check(CLI::PositiveNumber);
  app.add_option("--approx-ttl-minutes", config.approx_ttl_minutes,
                 "Routing-fed index TTL (env AIBRIX_PREFIX_CACHE_EVICTION_DURATION_MINS)")
      ->check(CLI::PositiveNumber);
  app.add_option("--sweep-interval-s", config.sweep_interval_s,
                 "Seconds between sweeps of expired routing-fed entries and /cache/route leases "
                 "(env AIBRIX_PREFIX_CACHE_EVICTION_INTERVAL_SECONDS)")
      ->check(CLI::Range(1, 3600));
  app.add_option("--index-max-memberships", config.index_max_memberships,
                 "Event-fed index budget in (block, pod, tier) memberships")
      ->check(CLI::PositiveNumber);
  app.add_option("--index-max-memberships-per-pod", config.index_max_memberships_per_pod,
                 "Event-fed index cap per pod")
      ->check(CLI::PositiveNumber);
  app.add_option("--routing-algorithm", config.routing_algorithm,
                 "Algorithm when a request names none (header routing-strategy)");
  app.add_option("--upstream-timeout-ms", config.upstream_timeout_ms,
                 "Proxy: deadline for an engine's whole response")
      ->check(CLI::PositiveNumber);
  app.add_option("--upstream-connect-timeout-ms", config.upstream_connect_timeout_ms,
                 "Proxy: connect timeout")
      ->check(CLI::PositiveNumber);
  app.add_option("--upstream-first-byte-timeout-ms", config.upstream_first_byte_timeout_ms,
                 "Proxy: time until the engine's response head (504 when passed)")
      ->check(CLI::PositiveNumber);
  app.add_option("--upstream-idle-timeout-ms", config.upstream_idle_timeout_ms,
                 "Proxy: longest pause between response chunks (the stream is cut)")
      ->check(CLI::PositiveNumber);
  app.add_option("--route-ttl-ms", config.route_ttl_ms,
                 "/cache/route request ids without /cache/done are settled after this")
      ->check(CLI::PositiveNumber);
  app.add_option("--routing-seed", config.routing_seed,
                 "Seed of the routers' random source (0: random)");
  app.add_option("--tokenizer", config.tokenizer,
                 "Prompt tokenizer for routing: local (engine-sim's byte rules) or remote (vLLM "
                 "/tokenize of --tokenizer-endpoint or of each model's engines; env "
                 "AIBRIX_PREFIX_CACHE_USE_REMOTE_TOKENIZER=true). Default: remote with KV event "
                 "sync, else local")
      ->check(CLI::IsMember({"local", "remote"}));
  app.add_option("--tokenizer-endpoint", config.tokenizer_endpoint,
                 "Remote tokenizer: a vLLM server asked first for every model (env "
                 "AIBRIX_PREFIX_CACHE_REMOTE_TOKENIZER_ENDPOINT)");
  app.add_option("--tokenizer-endpoint-template", config.tokenizer_endpoint_template,
                 "Remote tokenizer: an engine's URL with %s for its IP (env "
                 "AIBRIX_VLLM_TOKENIZER_ENDPOINT_TEMPLATE; default http://IP:serving port)");
  app.add_option("--tokenizer-timeout-ms", config.tokenizer_timeout_ms,
                 "Remote tokenizer: time limit of one attempt (env "
                 "AIBRIX_TOKENIZER_REQUEST_TIMEOUT)")
      ->check(CLI::PositiveNumber);
  app.add_option("--max-tokenizers", config.max_tokenizers,
                 "Remote tokenizer: (endpoint, model) clients kept, least recently used dropped "
                 "first (env AIBRIX_MAX_TOKENIZERS_PER_POOL)")
      ->check(CLI::Range(1, 100000));
  app.add_option(
         "--tokenizer-ttl-s", config.tokenizer_ttl_s,
         "Remote tokenizer: a client unused this long is dropped (env AIBRIX_TOKENIZER_TTL)")
      ->check(CLI::PositiveNumber);
  app.add_option("--redis", config.redis_addr,
                 "Redis for request traces, GPU profiles and cross-replica running counts: "
                 "HOST:PORT or unix:/PATH (env REDIS_HOST/REDIS_PORT; password: REDIS_PASSWORD)");
  app.add_option("--redis-connect-timeout-ms", config.redis_connect_timeout_ms,
                 "Redis: connect timeout")
      ->check(CLI::PositiveNumber);
  app.add_option("--redis-timeout-ms", config.redis_timeout_ms,
                 "Redis: timeout of one command or pipeline")
      ->check(CLI::PositiveNumber);
  app.add_flag("--gpu-optimizer-tracing,!--no-gpu-optimizer-tracing", config.gpu_optimizer_tracing,
               "Write request traces to Redis every 10 s (env AIBRIX_GPU_OPTIMIZER_TRACING_FLAG)");
  app.add_flag("--gpu-profile-caching,!--no-gpu-profile-caching", config.gpu_profile_caching,
               "Load GPU profiles from Redis for the load-aware routers (env "
               "AIBRIX_MODEL_GPU_PROFILE_CACHING_FLAG)");
  app.add_option("--gpu-profile-refresh-ms", config.gpu_profile_refresh_ms,
                 "GPU profiles: Redis refresh interval")
      ->check(CLI::PositiveNumber);
  app.add_option("--replica-sync-ms", config.replica_sync_ms,
                 "Share running-request counts with other replicas through Redis at this "
                 "interval (0: off)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--gateway-id", config.gateway_id,
                 "This replica's id in Redis (env POD_NAME, else the host name)");
  app.add_option("--extproc-addr", config.extproc_addr,
                 "Envoy ext_proc gRPC listen address (h2c; ':PORT' = every interface; '' "
                 "disables it)");
  app.add_option("--extproc-dialect", config.extproc_dialect,
                 "ext_proc answers: aibrix (routing-strategy + target-pod, or model) or gie "
                 "(x-gateway-destination-endpoint + envoy.lb metadata)")
      ->check(CLI::IsMember({"aibrix", "gie"}));
  app.add_option("--extproc-default-strategy", config.extproc_default_strategy,
                 "ext_proc: algorithm when a request names none (env ROUTING_ALGORITHM; empty: "
                 "Envoy routes by the model header)");
  app.add_option("--extproc-threads", config.extproc_threads,
                 "ext_proc: gRPC completion queues, a thread each (0: one per core)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--extproc-spin-us", config.extproc_spin_us,
                 "ext_proc: a queue's thread polls this long after each event before it sleeps "
                 "(0: sleeps at once)")
      ->check(CLI::Range(0, 10000));
  app.add_option("--extproc-idle-timeout-ms", config.extproc_idle_timeout_ms,
                 "ext_proc: a stream without a message for this long is closed")
      ->check(CLI::PositiveNumber);
  app.add_option("--grpc-max-message-bytes", config.grpc_max_message_bytes,
                 "ext_proc: largest gRPC message taken (env AIBRIX_GRPC_MAX_MESSAGE_SIZE_BYTES; "
                 "at least --max-body-bytes + 64 KiB)")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  aibrix::common::SetLogLevel(config.log_level);
  auto log = aibrix::common::Logger("main");
  // A closed pipe (a log reader gone, a peer reset) must not kill the process.
  std::signal(SIGPIPE, SIG_IGN);
  sigset_t signals = BlockHandledSignals();

  aibrix::server::Service service(config);
  if (auto status = service.Start(); !status.ok()) {
    log->error("start-up failed: {}", status.ToString());
    return 1;
  }
  int signal = 0;
  while (sigwait(&signals, &signal) == 0 && signal == SIGHUP) {
    log->info("received SIGHUP, reloading the discovery configuration");
    if (auto status = service.ReloadDiscovery(); !status.ok()) {
      log->error("reload failed, the previous configuration stays: {}", status.ToString());
    }
  }
  log->info("received {}, shutting down", signal == SIGINT ? "SIGINT" : "SIGTERM");
  service.Stop(aibrix::server::Service::StopMode::kGraceful);
  log->info("stopped");
  return 0;
}
