// aibrix::server::Service — owns every component of the aibrix-cache process (Store,
// discovery, HTTP server, metrics registry) and wires them together.
//
// Thread safety: Start/Stop from one thread. Accessors are safe once Start returned.
#pragma once

#include <atomic>
#include <memory>

#include "absl/status/status.h"
#include "aibrix/discovery/provider.h"
#include "aibrix/server/config.h"
#include "aibrix/server/http_server.h"
#include "aibrix/server/store_collector.h"
#include "aibrix/store/store.h"
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
  // The Prometheus text exposition of every metric of the service.
  std::string RenderMetrics() const;

 private:
  void RegisterRoutes();

  const ServiceConfig config_;
  std::shared_ptr<prometheus::Registry> registry_;
  store::Store store_;
  StoreCollector store_collector_;
  std::unique_ptr<discovery::Provider> discovery_;
  std::unique_ptr<HttpServer> http_;
  std::atomic<bool> ready_{false};
};

}  // namespace aibrix::server
