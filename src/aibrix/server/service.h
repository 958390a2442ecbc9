// aibrix::server::Service — owns every component of the aibrix-cache process and wires them
// together: Store <- discovery; engines' KV events -> EventManager -> ExactIndex; routing
// decisions -> ApproxIndex; both indexes -> PrefixMatcher -> /cache/match and the routers;
// HTTP server and metrics registry on top.
//
// Thread safety: Start/Stop from one thread. Accessors are safe once Start returned.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <thread>

#include "absl/status/status.h"
#include "aibrix/discovery/provider.h"
#include "aibrix/kvevents/manager.h"
#include "aibrix/prefix/approx_index.h"
#include "aibrix/prefix/exact_index.h"
#include "aibrix/prefix/match.h"
#include "aibrix/routing/algorithm.h"
#include "aibrix/server/config.h"
#include "aibrix/server/gateway.h"
#include "aibrix/server/http_server.h"
#include "aibrix/server/model_tokenizers.h"
#include "aibrix/server/store_collector.h"
#include "aibrix/store/store.h"
#include "aibrix/tokenizer/byte_tokenizer.h"
#include "aibrix/tracking/request_tracker.h"
#include "prometheus/registry.h"

namespace aibrix::server {

class Service {
 public:
  explicit Service(ServiceConfig config);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Validates the configuration, starts the HTTP server, runs the first discovery sync and
  // then reports ready. Any error leaves nothing running.
  absl::Status Start();
  // Stops discovery and the HTTP server. Idempotent.
  void Stop();

  int http_port() const { return http_ ? http_->port() : 0; }
  bool ready() const { return ready_.load(); }
  store::Store& store() { return store_; }
  tracking::RequestTracker& tracker() { return tracker_; }
  const prefix::PrefixMatcher& matcher() const { return *matcher_; }
  // The Prometheus text exposition of every metric of the service.
  std::string RenderMetrics() const;

 private:
  void RegisterRoutes();
  void HandleMatch(const Request& req, Response& res);
  nlohmann::json PodJson(const store::Pod& pod) const;
  // Drops a deleted pod from both indexes.
  class IndexCleaner : public store::PodListener {
   public:
    explicit IndexCleaner(Service& service) : service_(service) {}
    void OnPodChanged(const store::PodRef& before, const store::PodRef& after) override;

   private:
    Service& service_;
  };
  // Sweeps expired routing-fed entries every second until stopped.
  void HousekeepingLoop(std::stop_token stop);

  const ServiceConfig config_;
  std::shared_ptr<prometheus::Registry> registry_;
  store::Store store_;
  StoreCollector store_collector_;
  prefix::ExactIndex exact_index_;
  prefix::ApproxIndex approx_index_;
  std::optional<prefix::PrefixMatcher> matcher_;
  tokenizer::ByteTokenizer local_tokenizer_;
  ModelTokenizers tokenizers_;
  kvevents::EventManager kv_manager_;
  tracking::RequestTracker tracker_{common::SystemClock::Instance()};
  std::unique_ptr<routing::Router> router_;
  std::unique_ptr<Gateway> gateway_;
  IndexCleaner index_cleaner_{*this};
  std::jthread housekeeping_;
  std::unique_ptr<discovery::Provider> discovery_;
  std::unique_ptr<HttpServer> http_;
  std::atomic<bool> ready_{false};
};

}  // namespace aibrix::server
