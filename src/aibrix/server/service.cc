#include "aibrix/server/service.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>

#include "aibrix/common/logging.h"
#include "aibrix/common/net.h"
#include "aibrix/common/strings.h"
#include "aibrix/discovery/static_provider.h"
#include "aibrix/server/cache_api.h"
#include "fmt/format.h"
#include "prometheus/text_serializer.h"

namespace aibrix::server {

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
  return options;
}

ModelTokenizers MakeTokenizers(const ServiceConfig& config, const tokenizer::Tokenizer& local,
                               const store::Store& store) {
  if (config.tokenizer != "remote") return ModelTokenizers(local);
  tokenizer::RemoteTokenizerOptions remote;
  remote.timeout = std::chrono::milliseconds(config.tokenizer_timeout_ms);
  return ModelTokenizers(local, store, std::move(remote));
}

// A JSON array of non-negative integers below 2^32 as token ids; nullopt otherwise.
std::optional<std::vector<uint32_t>> TokenIds(const nlohmann::json& value) {
  if (!value.is_array()) return std::nullopt;
  std::vector<uint32_t> ids;
  ids.reserve(value.size());
  for (const nlohmann::json& id : value) {
    if (!id.is_number_unsigned() || id.get<uint64_t>() > UINT32_MAX) return std::nullopt;
    ids.push_back(static_cast<uint32_t>(id.get<uint64_t>()));
  }
  return ids;
}

}  // namespace

Service::Service(ServiceConfig config)
    : config_(std::move(config)),
      registry_(std::make_shared<prometheus::Registry>()),
      store_collector_(store_),
      exact_index_(ExactOptions(config_), registry_.get()),
      approx_index_(ApproxOptions(config_), registry_.get()),
      tokenizers_(MakeTokenizers(config_, local_tokenizer_, store_)),
      kv_manager_(&store_, &exact_index_, registry_.get(), KvOptions(config_)) {
  auto matcher = prefix::PrefixMatcher::Create(&exact_index_, &approx_index_);
  // Both indexes are built from the same block size and scheme, so this cannot fail.
  if (matcher.ok()) matcher_.emplace(std::move(*matcher));
  routing::RouterOptions router_options;
  router_options.seed = config_.routing_seed;
  router_options.imbalance_abs_count = static_cast<int32_t>(config_.imbalance_abs_count);
  router_options.std_dev_factor = config_.std_dev_factor;
  router_ = std::make_unique<routing::Router>(
      store_, routing::RouterDeps{matcher_ ? &*matcher_ : nullptr, &approx_index_}, router_options,
      registry_.get());
  GatewayOptions gateway_options;
  gateway_options.default_algorithm = config_.routing_algorithm;
  gateway_options.upstream_timeout = std::chrono::milliseconds(config_.upstream_timeout_ms);
  gateway_ = std::make_unique<Gateway>(store_, *router_, tokenizers_, tracker_, gateway_options,
                                       *registry_);
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
    wake.wait_for(lock, stop, std::chrono::seconds(1), [] { return false; });
    if (stop.stop_requested()) break;
    approx_index_.Sweep();
    exact_index_.UpdateGauges();
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
  if (config_.discovery != "static") {
    return absl::InvalidArgumentError(
        fmt::format("--discovery {}: only 'static' is supported by this build", config_.discovery));
  }
  if (!router_->Has(config_.routing_algorithm)) {
    return absl::InvalidArgumentError(fmt::format("--routing-algorithm {}: unknown (known: {})",
                                                  config_.routing_algorithm,
                                                  router_->NamesJoined()));
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

  store_.AddListener(&index_cleaner_);
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
  housekeeping_ = std::jthread([this](std::stop_token stop) { HousekeepingLoop(stop); });
  ready_.store(true);
  log->info("ready: {} pods, {} models ({} discovery)", store_.ListPods().size(),
            store_.ListModels().size(), discovery_->type());
  return absl::OkStatus();
}

void Service::Stop() {
  ready_.store(false);
  if (http_) http_->Stop();
  if (discovery_) discovery_->Stop();
  kv_manager_.Stop();
  store_.RemoveListener(&index_cleaner_);
  if (housekeeping_.joinable()) {
    housekeeping_.request_stop();
    housekeeping_.join();
  }
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
    for (const store::PodRef& pod : store_.ListPods()) pods.push_back(PodJson(*pod));
    SendJson(res, {{"pods", std::move(pods)}});
  });
  http_->Get(R"(/cache/pods/([^/]+)/([^/]+))", "/cache/pods/{ns}/{name}",
             [this](const Request& req, Response& res) {
               auto pod = store_.GetPod(req.matches[1].str(), req.matches[2].str());
               if (!pod.ok()) {
                 SendError(res, 404, common::AsStd(pod.status().message()), "not_found_error");
                 return;
               }
               SendJson(res, PodJson(**pod));
             });
  gateway_->Register(*http_);
  http_->Post("/cache/match", "/cache/match",
              [this](const Request& req, Response& res) { HandleMatch(req, res); });
  http_->Get("/cache/models", "/cache/models", [this](const Request&, Response& res) {
    store::SnapshotRef snap = store_.snapshot();
    std::vector<const store::ModelPods*> sorted;
    for (const auto& [name, model] : snap->models) sorted.push_back(model.get());
    std::sort(sorted.begin(), sorted.end(),
              [](const auto* a, const auto* b) { return a->model < b->model; });
    nlohmann::json models = nlohmann::json::array();
    for (const store::ModelPods* model : sorted) {
      nlohmann::json json = ModelToJson(*model);
      json["trace"] = tracker_.TraceJson(model->model);
      models.push_back(std::move(json));
    }
    SendJson(res, {{"models", std::move(models)}});
  });
}

nlohmann::json Service::PodJson(const store::Pod& pod) const {
  nlohmann::json json = PodToJson(pod);
  nlohmann::json index = nlohmann::json::object();
  if (auto stats = exact_index_.Stats(pod.key)) index["events"] = *stats;
  if (auto stats = approx_index_.Stats(pod.key)) index["routing"] = *stats;
  json["prefix_index"] = std::move(index);
  json["kv_events_subscribed"] = !kv_manager_.Endpoints(pod.key).empty();
  return json;
}

void Service::HandleMatch(const Request& req, Response& res) {
  auto body = ParseJsonBody(req, res);
  if (!body) return;
  if (!body->contains("model") || !(*body)["model"].is_string()) {
    SendError(res, 400, "'model' (string) is required");
    return;
  }
  const std::string model = (*body)["model"].get<std::string>();
  std::string lora;
  if (body->contains("lora") && !(*body)["lora"].is_null()) {
    if (!(*body)["lora"].is_string()) {
      SendError(res, 400, "'lora' must be a string");
      return;
    }
    lora = (*body)["lora"].get<std::string>();
  }
  std::vector<uint32_t> tokens;
  if (body->contains("token_ids")) {
    auto ids = TokenIds((*body)["token_ids"]);
    if (!ids) {
      SendError(res, 400, "'token_ids' must be an array of integers in [0, 2^32)");
      return;
    }
    tokens = std::move(*ids);
  } else if (body->contains("prompt") && (*body)["prompt"].is_string()) {
    auto ids = tokenizers_.Tokenize(model, (*body)["prompt"].get<std::string>());
    if (!ids.ok()) {
      SendError(res, 400, common::AsStd(ids.status().message()));
      return;
    }
    tokens = std::move(*ids);
  } else {
    SendError(res, 400, "one of 'token_ids' (array) or 'prompt' (string) is required");
    return;
  }
  if (!store_.HasModel(model)) {
    SendError(res, 404, fmt::format("model '{}' does not exist in the cache", model),
              "not_found_error");
    return;
  }
  SendJson(res, matcher_->Match(model, lora, tokens));
}

}  // namespace aibrix::server
