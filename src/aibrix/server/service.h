// aibrix::server::Service — owns every component of the aibrix-cache process and wires them
// together: Store <- discovery; engines' KV events -> EventManager -> ExactIndex; routing
// decisions -> ApproxIndex; both indexes -> PrefixMatcher -> /cache/match and the routers;
// the gateway (routing API, OpenAI proxy), the admin API, health and metrics on one HTTP
// server; Envoy's external processing (ext_proc) on a gRPC server of its own.
//
// Shutdown (SIGTERM): Drain() turns /readyz to 503 at once; Stop() then stops accepting
// after shutdown_delay_ms, lets in-flight requests and streams finish until
// shutdown_grace_ms, cuts the rest (their accounting settles) and stops every component.
//
// Thread safety: Start/Drain/Stop from one thread. Accessors are safe once Start returned.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <thread>

#include "absl/status/status.h"
#include "aibrix/discovery/provider.h"
#include "aibrix/extproc/server.h"
#include "aibrix/gateway/gateway.h"
#include "aibrix/gateway/model_tokenizers.h"
#include "aibrix/gateway/tokenizer_log.h"
#include "aibrix/http/server.h"
#include "aibrix/kvevents/manager.h"
#include "aibrix/metrics/reexport.h"
#include "aibrix/metrics/scraper.h"
#include "aibrix/prefix/approx_index.h"
#include "aibrix/prefix/exact_index.h"
#include "aibrix/prefix/match.h"
#include "aibrix/profile/profile_cache.h"
#include "aibrix/redis/profile_loader.h"
#include "aibrix/redis/replica_sync.h"
#include "aibrix/redis/trace_flusher.h"
#include "aibrix/routing/algorithm.h"
#include "aibrix/routing/pending_load.h"
#include "aibrix/server/admin_api.h"
#include "aibrix/server/config.h"
#include "aibrix/server/store_collector.h"
#include "aibrix/store/store.h"
#include "aibrix/tokenizer/byte_tokenizer.h"
#include "aibrix/tracking/request_tracker.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace aibrix::server {

// The aibrix-cache process's settings, applied by its main and by every benchmark that runs
// the Service in-process (so it costs there what it costs in the service): the heap on huge
// pages (common/huge_pages.h; may re-execute the program), malloc's thresholds
// (common/malloc_tuning.h) and gRPC's engine (extproc::TuneGrpcForProcess). Call first
// thing in main(), before any thread starts.
void ApplyProcessSettings(char** argv);

class Service {
 public:
  explicit Service(ServiceConfig config);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Validates the configuration, starts the HTTP server and discovery; reports ready once
  // discovery has synced (at once for a static file). Any error leaves nothing running.
  absl::Status Start();
  // Re-reads the discovery configuration (the static file) and applies what changed; on
  // error the previous state stays (SIGHUP). FailedPrecondition before Start.
  absl::Status ReloadDiscovery();
  // Reports not ready (/readyz 503) so load balancers stop sending; serving goes on.
  void Drain();
  // Drains, waits shutdown_delay_ms (when `graceful`), stops accepting, waits for in-flight
  // requests up to shutdown_grace_ms, cuts the rest, then stops discovery and KV sync.
  // Idempotent.
  enum class StopMode { kGraceful, kNow };
  void Stop(StopMode mode = StopMode::kNow);

  int http_port() const { return http_ ? http_->port() : 0; }
  // The ext_proc gRPC port; 0 when disabled.
  int extproc_port() const { return extproc_ ? extproc_->port() : 0; }
  // Started, not draining, and discovery has synced (/readyz).
  bool ready() const { return ready_.load() && discovery_ && discovery_->synced(); }
  store::Store& store() { return store_; }
  tracking::RequestTracker& tracker() { return tracker_; }
  profile::ProfileCache& profiles() { return profiles_; }
  gateway::Gateway& gateway() { return *gateway_; }
  const prefix::PrefixMatcher& matcher() const { return *matcher_; }
  // The Prometheus text exposition of every metric of the service.
  std::string RenderMetrics() const;

 private:
  void RegisterRoutes();
  // Drops a deleted pod from both indexes.
  class IndexCleaner : public store::PodListener {
   public:
    explicit IndexCleaner(Service& service) : service_(service) {}
    void OnPodChanged(const store::PodRef& before, const store::PodRef& after) override;

   private:
    Service& service_;
  };
  // Every second until stopped: sweeps expired routing-fed entries and /cache/route leases.
  void HousekeepingLoop(std::stop_token stop);
  // Builds and starts the Redis features the configuration asks for (docs/redis.md).
  absl::Status StartRedis();

  const ServiceConfig config_;
  std::shared_ptr<prometheus::Registry> registry_;
  store::Store store_;
  StoreCollector store_collector_;
  prefix::ExactIndex exact_index_;
  prefix::ApproxIndex approx_index_;
  std::optional<prefix::PrefixMatcher> matcher_;
  tokenizer::ByteTokenizer local_tokenizer_;
  gateway::ModelTokenizers tokenizers_;
  gateway::TokenizerLog tokenizer_log_{tokenizers_, store_};
  kvevents::EventManager kv_manager_;
  // aibrix_prefix_index_bytes{source="event_queues"}: the KV event path's queues, set at
  // scrape time (the index memory and the event path in one figure).
  prometheus::Gauge* event_queue_bytes_ = nullptr;
  tracking::RequestTracker tracker_{common::SystemClock::Instance()};
  // GPU profiles (filled from Redis) and the loads derived from them; the provider exists
  // when profile caching is on.
  profile::ProfileCache profiles_;
  std::unique_ptr<routing::PendingLoadProvider> load_provider_;
  std::unique_ptr<routing::Router> router_;
  std::unique_ptr<gateway::Gateway> gateway_;
  std::unique_ptr<AdminApi> admin_;
  // Engine metrics: scraped into the Store, re-exported on /metrics.
  metrics::Scraper scraper_;
  metrics::EngineMetricsExporter engine_metrics_;
  IndexCleaner index_cleaner_{*this};
  std::jthread housekeeping_;
  std::unique_ptr<discovery::Provider> discovery_;
  std::unique_ptr<http::Server> http_;
  // Redis features, each on its own thread; null when not configured.
  std::unique_ptr<redis::TraceFlusher> trace_flusher_;
  std::unique_ptr<redis::ProfileLoader> profile_loader_;
  std::unique_ptr<redis::ReplicaSync> replica_sync_;
  std::unique_ptr<extproc::Server> extproc_;
  std::atomic<bool> ready_{false};
};

}  // namespace aibrix::server
