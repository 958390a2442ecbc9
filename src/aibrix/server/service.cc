#include "aibrix/server/service.h"

#include <algorithm>

#include "aibrix/common/logging.h"
#include "aibrix/common/net.h"
#include "aibrix/common/strings.h"
#include "aibrix/discovery/static_provider.h"
#include "aibrix/server/cache_api.h"
#include "fmt/format.h"
#include "prometheus/text_serializer.h"

namespace aibrix::server {

Service::Service(ServiceConfig config)
    : config_(std::move(config)),
      registry_(std::make_shared<prometheus::Registry>()),
      store_collector_(store_) {}

Service::~Service() { Stop(); }

absl::Status Service::Start() {
  auto log = common::Logger("service");
  auto addr = common::ParseHostPort(config_.http_addr, 0, common::PortZero::kAllowed);
  if (!addr.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("--http-addr: {}", common::AsStd(addr.status().message())));
  }
  if (config_.discovery != "static") {
    return absl::InvalidArgumentError(
        fmt::format("--discovery {}: only 'static' is supported by this build", config_.discovery));
  }
  if (config_.static_config.empty()) {
    return absl::InvalidArgumentError("--static-config FILE is required with --discovery static");
  }
  auto provider = discovery::StaticProvider::FromFile(config_.static_config);
  if (!provider.ok()) return provider.status();
  discovery_ = std::move(*provider);

  HttpServerOptions options;
  options.host = addr->host;
  options.port = addr->port;
  options.max_body_bytes = config_.max_body_bytes;
  options.threads = config_.http_threads;
  http_ = std::make_unique<HttpServer>(options, *registry_);
  RegisterRoutes();
  if (auto st = http_->Start(); !st.ok()) {
    http_.reset();
    return st;
  }
  log->info("listening on http://{}", common::FormatHostPort(options.host, http_->port()));

  if (auto st = discovery_->Start(store_); !st.ok()) {
    Stop();
    return st;
  }
  ready_.store(true);
  log->info("ready: {} pods, {} models ({} discovery)", store_.ListPods().size(),
            store_.ListModels().size(), discovery_->type());
  return absl::OkStatus();
}

void Service::Stop() {
  ready_.store(false);
  if (discovery_) discovery_->Stop();
  if (http_) http_->Stop();
}

std::string Service::RenderMetrics() const {
  auto families = registry_->Collect();
  auto store_families = store_collector_.Collect();
  families.insert(families.end(), store_families.begin(), store_families.end());
  return prometheus::TextSerializer().Serialize(families);
}

void Service::RegisterRoutes() {
  http_->Get("/healthz", "/healthz", [](const Request&, Response& res) {
    SendJson(res, {{"status", "ok"}});
  });
  http_->Get("/readyz", "/readyz", [this](const Request&, Response& res) {
    if (ready()) {
      SendJson(res, {{"status", "ready"}});
    } else {
      SendError(res, 503, "discovery has not finished its first sync", "service_unavailable");
    }
  });
  http_->Get("/metrics", "/metrics", [this](const Request&, Response& res) {
    res.set_content(RenderMetrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  http_->Get("/cache/pods", "/cache/pods", [this](const Request&, Response& res) {
    nlohmann::json pods = nlohmann::json::array();
    for (const store::PodRef& pod : store_.ListPods()) pods.push_back(PodToJson(*pod));
    SendJson(res, {{"pods", std::move(pods)}});
  });
  http_->Get(R"(/cache/pods/([^/]+)/([^/]+))", "/cache/pods/{ns}/{name}",
             [this](const Request& req, Response& res) {
               auto pod = store_.GetPod(req.matches[1].str(), req.matches[2].str());
               if (!pod.ok()) {
                 SendError(res, 404, common::AsStd(pod.status().message()), "not_found_error");
                 return;
               }
               SendJson(res, PodToJson(**pod));
             });
  http_->Get("/cache/models", "/cache/models", [this](const Request&, Response& res) {
    store::SnapshotRef snap = store_.snapshot();
    std::vector<const store::ModelPods*> sorted;
    for (const auto& [name, model] : snap->models) sorted.push_back(model.get());
    std::sort(sorted.begin(), sorted.end(),
              [](const auto* a, const auto* b) { return a->model < b->model; });
    nlohmann::json models = nlohmann::json::array();
    for (const store::ModelPods* model : sorted) models.push_back(ModelToJson(*model));
    SendJson(res, {{"models", std::move(models)}});
  });
}

}  // namespace aibrix::server
