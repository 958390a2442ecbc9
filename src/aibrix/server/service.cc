#include "aibrix/server/service.h"

#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <initializer_list>
#include <iterator>
#include <mutex>

#include "aibrix/common/huge_pages.h"
#include "aibrix/common/logging.h"
#include "aibrix/common/malloc_tuning.h"
#include "aibrix/common/net.h"
#include "aibrix/common/status_macros.h"
#include "aibrix/common/strings.h"
#include "aibrix/discovery/kubernetes_provider.h"
#include "aibrix/discovery/static_provider.h"
#include "fmt/format.h"
#include "prometheus/text_serializer.h"

namespace aibrix::server {

void ApplyProcessSettings(char** argv) {
  common::UseHugePagesForMalloc(argv);
  common::TuneMalloc();
  extproc::TuneGrpcForProcess();
}

namespace {

prefix::ExactIndexOptions ExactOptions(const ServiceConfig& config) {
  prefix::ExactIndexOptions options;
  options.block_size = config.block_size;
  options.max_memberships = static_cast<uint64_t>(config.index_max_memberships);
  options.max_memberships_per_pod = static_cast<uint64_t>(config.index_max_memberships_per_pod);
  return options;
}

prefix::ApproxIndexOptions ApproxOptions(const ServiceConfig& config) {
  prefix::ApproxIndexOptions options;
  options.block_size = config.block_size;
  options.max_blocks_per_pod = static_cast<uint64_t>(config.approx_blocks_per_pod);
  options.ttl = std::chrono::minutes(config.approx_ttl_minutes);
  return options;
}

kvevents::EventManagerOptions KvOptions(const ServiceConfig& config) {
  kvevents::EventManagerOptions options;
  options.enabled = config.kv_event_sync;
  options.ingest.io_threads = config.kv_io_threads;
  options.ingest.apply_threads = config.kv_apply_threads;
  options.ingest.max_ranks = config.kv_max_ranks;
  options.ingest.max_queued_bytes = static_cast<size_t>(config.kv_queue_bytes);
  options.subscriber.max_queued_bytes = static_cast<size_t>(config.kv_pod_queue_bytes);
  options.subscriber.max_held_bytes = static_cast<size_t>(config.kv_pod_queue_bytes);
  options.subscriber.max_message_bytes = static_cast<size_t>(config.kv_max_message_bytes);
  options.subscriber.replay_timeout = std::chrono::milliseconds(config.kv_replay_timeout_ms);
  options.subscriber.reconnect_initial = std::chrono::milliseconds(config.kv_reconnect_ms);
  options.subscriber.reconnect_max =
      std::max(options.subscriber.reconnect_max, options.subscriber.reconnect_initial);
  return options;
}

gateway::ModelTokenizers MakeTokenizers(const ServiceConfig& config,
                                        const tokenizer::Tokenizer& local,
                                        const store::Store& store, prometheus::Registry& registry) {
  if (config.EffectiveTokenizer() != "remote") return gateway::ModelTokenizers(local);
  gateway::RemoteTokenizersOptions remote;
  remote.call.timeout = std::chrono::milliseconds(config.tokenizer_timeout_ms);
  remote.endpoint = config.tokenizer_endpoint;
  remote.endpoint_template = config.tokenizer_endpoint_template;
  remote.max_tokenizers = static_cast<size_t>(config.max_tokenizers);
  remote.ttl = std::chrono::seconds(config.tokenizer_ttl_s);
  remote.registry = &registry;
  return gateway::ModelTokenizers(local, store, std::move(remote));
}

// The remote tokenizer's URLs, checked before anything starts.
absl::Status CheckTokenizerConfig(const ServiceConfig& config) {
  if (!config.tokenizer_endpoint.empty()) {
    tokenizer::RemoteTokenizerOptions probe;
    probe.endpoint = config.tokenizer_endpoint;
    if (auto created = tokenizer::RemoteTokenizer::Create(probe); !created.ok()) {
      return absl::InvalidArgumentError(
          fmt::format("--tokenizer-endpoint / AIBRIX_PREFIX_CACHE_REMOTE_TOKENIZER_ENDPOINT: {}",
                      common::AsStd(created.status().message())));
    }
  }
  if (const std::string& t = config.tokenizer_endpoint_template; !t.empty()) {
    const size_t at = t.find("%s");
    if (at == std::string::npos || t.find('%', at + 2) != std::string::npos) {
      return absl::InvalidArgumentError(
          fmt::format("--tokenizer-endpoint-template / AIBRIX_VLLM_TOKENIZER_ENDPOINT_TEMPLATE "
                      "{}: needs exactly one %s (the pod IP) and no other %",
                      t));
    }
  }
  return absl::OkStatus();
}

// Says which tokenizer routing uses and why; warns when KV event sync cannot match.
void LogTokenizerChoice(const ServiceConfig& config) {
  auto log = common::Logger("tokenizer");
  const std::string effective = config.EffectiveTokenizer();
  const char* why = !config.tokenizer.empty() ? "configured"
                    : config.kv_event_sync    ? "the default with KV event sync"
                                              : "the default without KV event sync";
  if (effective == "remote") {
    log->info("prompts are tokenized by vLLM /tokenize ({}): {}each model's vLLM engines", why,
              config.tokenizer_endpoint.empty()
                  ? std::string()
                  : fmt::format("{} first, then ", config.tokenizer_endpoint));
  } else if (config.kv_event_sync) {
    log->warn(
        "prompts are tokenized by the local byte tokenizer (--tokenizer local) while KV "
        "event sync is on: KV-aware routing only matches engines that tokenize the same "
        "way (engine-sim); real vLLM engines need --tokenizer remote");
  } else {
    log->info("prompts are tokenized by the local byte tokenizer ({})", why);
  }
  if (effective == "local" && !config.tokenizer_endpoint.empty()) {
    log->warn("the tokenizer endpoint {} is not used with --tokenizer local",
              config.tokenizer_endpoint);
  }
}

gateway::GatewayOptions GatewayOptionsFor(const ServiceConfig& config) {
  gateway::GatewayOptions options;
  options.default_algorithm = config.routing_algorithm;
  options.upstream.connect_timeout = std::chrono::milliseconds(config.upstream_connect_timeout_ms);
  options.upstream.first_byte_timeout =
      std::chrono::milliseconds(config.upstream_first_byte_timeout_ms);
  options.upstream.idle_timeout = std::chrono::milliseconds(config.upstream_idle_timeout_ms);
  options.upstream.total_timeout = std::chrono::milliseconds(config.upstream_timeout_ms);
  options.route_ttl = std::chrono::milliseconds(config.route_ttl_ms);
  return options;
}

discovery::KubernetesOptions KubernetesOptionsFor(const ServiceConfig& config) {
  discovery::KubernetesOptions options;
  options.kubeconfig = config.kubeconfig;
  options.ns = config.k8s_namespace;
  options.label_selector = config.label_selector;
  options.informer.decode.deployment_label = config.pod_deployment_label;
  options.informer.decode.fleet_label = config.pod_fleet_label;
  return options;
}

metrics::ScraperOptions ScraperOptionsFor(const ServiceConfig& config) {
  metrics::ScraperOptions options;
  options.interval = std::chrono::milliseconds(config.metric_refresh_ms);
  const auto deadline = std::chrono::milliseconds(config.metric_timeout_ms);
  options.connect_timeout = std::min(deadline, std::chrono::milliseconds(1000));
  options.read_timeout = deadline;
  options.max_body_bytes = static_cast<size_t>(config.metric_max_body_bytes);
  return options;
}

metrics::ExporterOptions ExporterOptionsFor(const ServiceConfig& config) {
  metrics::ExporterOptions options;
  options.max_age = std::chrono::milliseconds(config.metric_max_age_ms);
  options.gateway_pod = config.gateway_id.empty() ? redis::DefaultGatewayId() : config.gateway_id;
  return options;
}

http::ServerOptions HttpOptionsFor(const ServiceConfig& config, const common::HostPort& addr) {
  http::ServerOptions options;
  options.host = addr.host;
  options.port = addr.port;
  options.io_threads = config.io_threads;
  options.max_connections = config.max_connections;
  options.max_target_bytes = config.max_target_bytes;
  options.max_head_bytes = config.max_head_bytes;
  options.max_body_bytes = config.max_body_bytes;
  options.head_timeout = std::chrono::milliseconds(config.head_timeout_ms);
  options.body_timeout = std::chrono::milliseconds(config.body_timeout_ms);
  options.idle_timeout = std::chrono::milliseconds(config.idle_timeout_ms);
  options.write_timeout = std::chrono::milliseconds(config.write_timeout_ms);
  return options;
}

absl::StatusOr<extproc::ServerOptions> ExtProcOptionsFor(const ServiceConfig& config) {
  extproc::ServerOptions options;
  options.address = config.extproc_addr;
  if (config.extproc_dialect == "aibrix") {
    options.processor.dialect = extproc::Dialect::kAibrix;
  } else if (config.extproc_dialect == "gie") {
    options.processor.dialect = extproc::Dialect::kGie;
  } else {
    return absl::InvalidArgumentError(
        fmt::format("--extproc-dialect {}: 'aibrix' or 'gie'", config.extproc_dialect));
  }
  options.processor.default_strategy = config.extproc_default_strategy;
  options.processor.bearer_token = config.auth_bearer_token;
  options.processor.max_body_bytes = config.max_body_bytes;
  // A whole body of max_body_bytes plus the message's own fields must get through, so that
  // a larger body is answered 413 (AIBrix's equal 4 MiB limits refuse a maximal body).
  options.max_receive_bytes = std::max<size_t>(static_cast<size_t>(config.grpc_max_message_bytes),
                                               config.max_body_bytes + (64 << 10));
  options.idle_timeout = std::chrono::milliseconds(config.extproc_idle_timeout_ms);
  options.threads = config.extproc_threads;
  options.spin = std::chrono::microseconds(config.extproc_spin_us);
  return options;
}

}  // namespace

Service::Service(ServiceConfig config)
    : config_(std::move(config)),
      registry_(std::make_shared<prometheus::Registry>()),
      store_collector_(store_),
      exact_index_(ExactOptions(config_), registry_.get()),
      approx_index_(ApproxOptions(config_), registry_.get()),
      tokenizers_(MakeTokenizers(config_, local_tokenizer_, store_, *registry_)),
      kv_manager_(&store_, &exact_index_, registry_.get(), KvOptions(config_)),
      scraper_(store_, metrics::EngineMetricRegistry::Default(), ScraperOptionsFor(config_),
               *registry_),
      engine_metrics_(store_, metrics::EngineMetricRegistry::Default(),
                      ExporterOptionsFor(config_)) {
  auto matcher = prefix::PrefixMatcher::Create(&exact_index_, &approx_index_);
  // Both indexes are built from the same block size and scheme, so this cannot fail.
  if (matcher.ok()) matcher_.emplace(std::move(*matcher));
  routing::RouterOptions router_options;
  router_options.seed = config_.routing_seed;
  router_options.imbalance_abs_count = static_cast<int32_t>(config_.imbalance_abs_count);
  router_options.std_dev_factor = config_.std_dev_factor;
  router_options.metric_max_age = std::chrono::milliseconds(config_.metric_max_age_ms);
  router_options.exact_index_fed = config_.kv_event_sync;
  router_options.vtc_fairness_weight = config_.vtc_fairness_weight;
  router_options.kv_aware_decode_weight = config_.kv_aware_load_weight;
  router_options.kv_aware_queue_weight = config_.kv_aware_queue_weight;
  router_options.vtc_utilization_weight = config_.vtc_utilization_weight;
  router_options.vtc_max_pod_load = config_.vtc_max_pod_load;
  router_options.vtc_input_token_weight = config_.vtc_input_token_weight;
  router_options.vtc_output_token_weight = config_.vtc_output_token_weight;
  router_options.vtc_window_minutes = config_.vtc_window_minutes;
  if (config_.gpu_profile_caching) {
    load_provider_ = std::make_unique<routing::PendingLoadProvider>(profiles_, tracker_);
  }
  router_ = std::make_unique<routing::Router>(
      store_,
      routing::RouterDeps{matcher_ ? &*matcher_ : nullptr, &approx_index_, load_provider_.get()},
      router_options, registry_.get());
  gateway_ = std::make_unique<gateway::Gateway>(store_, *router_, tokenizers_, tracker_,
                                                GatewayOptionsFor(config_), *registry_);
  event_queue_bytes_ = &prometheus::BuildGauge()
                            .Name("aibrix_prefix_index_bytes")
                            .Help("Bytes used by the prefix index, counted from table capacities")
                            .Register(*registry_)
                            .Add({{"source", "event_queues"}});
  admin_ = std::make_unique<AdminApi>(AdminDeps{&store_, &exact_index_, &approx_index_,
                                                matcher_ ? &*matcher_ : nullptr, &tokenizers_,
                                                &kv_manager_, &tracker_, load_provider_.get()});
}

void Service::IndexCleaner::OnPodChanged(const store::PodRef& before, const store::PodRef& after) {
  if (after != nullptr || before == nullptr) return;
  service_.exact_index_.RemovePod(before->key);
  service_.approx_index_.RemovePod(before->key);
}

void Service::HousekeepingLoop(std::stop_token stop) {
  std::mutex mu;
  std::condition_variable_any wake;
  std::unique_lock<std::mutex> lock(mu);
  while (!stop.stop_requested()) {
    wake.wait_for(lock, stop, std::chrono::seconds(config_.sweep_interval_s), [] { return false; });
    if (stop.stop_requested()) break;
    approx_index_.Sweep();
    exact_index_.UpdateGauges();
    gateway_->Sweep();
    if (extproc_) {
      extproc_->SweepIdle();
      extproc_->SetServing(ready());  // follows discovery's first sync, like /readyz
    }
  }
}

Service::~Service() { Stop(); }

absl::Status Service::Start() {
  auto log = common::Logger("service");
  auto addr = common::ParseHostPort(config_.http_addr, 0, common::PortZero::kAllowed);
  if (!addr.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("--http-addr: {}", common::AsStd(addr.status().message())));
  }
  if (config_.discovery != "static" && config_.discovery != "kubernetes") {
    return absl::InvalidArgumentError(
        fmt::format("--discovery {}: 'static' or 'kubernetes'", config_.discovery));
  }
  if (!router_->Has(config_.routing_algorithm)) {
    return absl::InvalidArgumentError(fmt::format("--routing-algorithm {}: unknown (known: {})",
                                                  config_.routing_algorithm,
                                                  router_->NamesJoined()));
  }
  RETURN_IF_ERROR(CheckTokenizerConfig(config_));
  for (const std::string& note : config_.env_notes) log->info("environment: {}", note);
  LogTokenizerChoice(config_);
  if (config_.discovery == "kubernetes") {
    ASSIGN_OR_RETURN(discovery_, discovery::KubernetesProvider::Create(
                                     KubernetesOptionsFor(config_), *registry_));
  } else {
    if (config_.static_config.empty()) {
      return absl::InvalidArgumentError("--static-config FILE is required with --discovery static");
    }
    discovery::StaticProviderOptions static_options;
    static_options.watch = config_.static_config_watch;
    static_options.registry = registry_.get();
    ASSIGN_OR_RETURN(discovery_,
                     discovery::StaticProvider::FromFile(config_.static_config, static_options));
  }

  const http::ServerOptions options = HttpOptionsFor(config_, *addr);
  http_ = std::make_unique<http::Server>(options, *registry_);
  RegisterRoutes();
  if (auto st = http_->Start(); !st.ok()) {
    http_.reset();
    return st;
  }
  log->info("listening on http://{}", common::FormatHostPort(options.host, http_->port()));

  if (!config_.extproc_addr.empty()) {
    auto extproc_options = ExtProcOptionsFor(config_);
    if (!extproc_options.ok()) {
      Stop();
      return extproc_options.status();
    }
    if (!config_.extproc_default_strategy.empty() &&
        !router_->Has(config_.extproc_default_strategy)) {
      Stop();
      return absl::InvalidArgumentError(
          fmt::format("--extproc-default-strategy {}: unknown (known: {})",
                      config_.extproc_default_strategy, router_->NamesJoined()));
    }
    extproc_ = std::make_unique<extproc::Server>(std::move(*extproc_options), *gateway_, store_,
                                                 *registry_);
    if (auto st = extproc_->Start(); !st.ok()) {
      Stop();
      return st;
    }
  }

  store_.AddListener(&index_cleaner_);
  store_.AddListener(&tokenizer_log_);
  // The KV event manager subscribes to pods as discovery adds them; it never blocks the
  // discovery thread (sockets are handled on its own threads).
  if (auto st = kv_manager_.Start(); !st.ok()) {
    Stop();
    return st;
  }
  if (auto st = discovery_->Start(store_); !st.ok()) {
    Stop();
    return st;
  }
  if (auto st = StartRedis(); !st.ok()) {
    Stop();
    return st;
  }
  // Scrapes every ready pod from now on (pods discovery adds later are picked up by its
  // next tick; removed ones are released).
  if (auto st = config_.metric_refresh_ms > 0 ? scraper_.Start() : absl::OkStatus(); !st.ok()) {
    Stop();
    return st;
  }
  housekeeping_ = std::jthread([this](std::stop_token stop) { HousekeepingLoop(stop); });
  ready_.store(true);
  if (extproc_) extproc_->SetServing(ready());
  if (discovery_->synced()) {
    log->info("ready: {} pods, {} models ({} discovery)", store_.ListPods().size(),
              store_.ListModels().size(), discovery_->type());
  } else {
    log->info("started; /readyz answers 503 until {} discovery has synced", discovery_->type());
  }
  return absl::OkStatus();
}

absl::Status Service::ReloadDiscovery() {
  if (!discovery_ || !ready_.load()) {
    return absl::FailedPreconditionError("discovery is not running");
  }
  return discovery_->Reload();
}

absl::Status Service::StartRedis() {
  if (config_.redis_addr.empty()) {
    if (config_.gpu_optimizer_tracing) {
      common::Logger("service")->warn("request tracing is on but no --redis: traces stay local");
    }
    return absl::OkStatus();
  }
  auto address = redis::ParseAddress(config_.redis_addr);
  if (!address.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("--redis: {}", common::AsStd(address.status().message())));
  }
  redis::ConnectionOptions connection;
  connection.address = *address;
  connection.password = config_.redis_password;
  connection.connect_timeout = std::chrono::milliseconds(config_.redis_connect_timeout_ms);
  connection.command_timeout = std::chrono::milliseconds(config_.redis_timeout_ms);
  std::vector<std::string> features;
  if (config_.gpu_optimizer_tracing) {
    redis::TraceFlusherOptions options;
    options.connection = connection;
    options.period = std::chrono::seconds(config_.trace_period_s);
    trace_flusher_ = std::make_unique<redis::TraceFlusher>(
        tracker_, common::SystemClock::Instance(), options, *registry_);
    trace_flusher_->Start();
    features.push_back("request traces");
  }
  if (config_.gpu_profile_caching) {
    redis::ProfileLoaderOptions options;
    options.connection = connection;
    options.period = std::chrono::milliseconds(config_.gpu_profile_refresh_ms);
    profile_loader_ = std::make_unique<redis::ProfileLoader>(profiles_, options, *registry_);
    profile_loader_->Start();
    features.push_back("GPU profiles");
  }
  if (config_.replica_sync_ms > 0) {
    redis::ReplicaSyncOptions options;
    options.connection = connection;
    options.gateway_id =
        config_.gateway_id.empty() ? redis::DefaultGatewayId() : config_.gateway_id;
    options.period = std::chrono::milliseconds(config_.replica_sync_ms);
    // Keys outlive a few missed rounds (the reference: 500 ms at 100 ms); counts turn stale
    // after ten.
    options.key_ttl = std::max(options.key_ttl, 5 * options.period);
    options.stale_after = std::max(options.stale_after, 10 * options.period);
    replica_sync_ = std::make_unique<redis::ReplicaSync>(store_, options, *registry_);
    replica_sync_->Start();
    features.push_back(fmt::format("replica running counts (gateway id {})", options.gateway_id));
  }
  common::Logger("service")->info(
      "redis {}: {}", address->ToString(),
      features.empty() ? "no feature enabled" : fmt::format("{}", fmt::join(features, ", ")));
  return absl::OkStatus();
}

void Service::Drain() {
  if (extproc_) extproc_->SetServing(false);
  if (ready_.exchange(false)) common::Logger("service")->info("draining: /readyz answers 503");
}

void Service::Stop(StopMode mode) {
  Drain();
  if (http_) {
    if (mode == StopMode::kGraceful) {
      std::this_thread::sleep_for(std::chrono::milliseconds(config_.shutdown_delay_ms));
      http_->BeginShutdown();
      common::Logger("service")->info("stopped accepting; {} requests in flight",
                                      http_->in_flight());
    }
    http_->Stop(mode == StopMode::kGraceful ? std::chrono::milliseconds(config_.shutdown_grace_ms)
                                            : std::chrono::milliseconds(0));
  }
  // Redis threads stop before the store's writers go.
  if (trace_flusher_) trace_flusher_->Stop();
  if (profile_loader_) profile_loader_->Stop();
  if (replica_sync_) replica_sync_->Stop();
  if (extproc_) {
    // Its streams had the HTTP server's grace period to finish too; what is left is cut.
    extproc_->Stop(mode == StopMode::kGraceful ? std::chrono::milliseconds(1000)
                                               : std::chrono::milliseconds(0));
  }
  if (discovery_) discovery_->Stop();
  scraper_.Stop();
  kv_manager_.Stop();
  store_.RemoveListener(&index_cleaner_);
  store_.RemoveListener(&tokenizer_log_);
  if (housekeeping_.joinable()) {
    housekeeping_.request_stop();
    housekeeping_.join();
  }
}

std::string Service::RenderMetrics() const {
  event_queue_bytes_->Set(static_cast<double>(kv_manager_.queued_bytes()));
  exact_index_.UpdateGauges();  // per-model gauges are computed at scrape time
  auto families = registry_->Collect();
  for (const prometheus::Collectable* collector :
       std::initializer_list<const prometheus::Collectable*>{&store_collector_, &engine_metrics_}) {
    auto more = collector->Collect();
    families.insert(families.end(), std::make_move_iterator(more.begin()),
                    std::make_move_iterator(more.end()));
  }
  return prometheus::TextSerializer().Serialize(families);
}

void Service::RegisterRoutes() {
  http_->Route("GET", "/healthz", [](const http::Request&, http::Response& res) {
    res.SetBody(R"({"status":"ok"})", "application/json");
  });
  http_->Route("GET", "/readyz", [this](const http::Request&, http::Response& res) {
    if (ready()) {
      res.SetBody(R"({"status":"ready"})", "application/json");
    } else {
      http::SendError(res, 503, "not ready: starting, or draining for shutdown");
    }
  });
  http_->Route("GET", "/metrics", [this](const http::Request&, http::Response& res) {
    res.SetBody(RenderMetrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  gateway_->Register(*http_);
  admin_->Register(*http_);
}

}  // namespace aibrix::server
