#include "aibrix/server/admin_api.h"

#include <algorithm>

#include "aibrix/common/strings.h"
#include "aibrix/gateway/gateway.h"
#include "aibrix/gateway/request_body.h"
#include "aibrix/server/cache_api.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace aibrix::server {

void AdminApi::Register(http::Server& http) {
  http.Route("GET", "/cache/pods",
             [this](const http::Request&, http::Response& res) { HandlePods(res); });
  http.Route("GET", "/cache/pods/{namespace}/{name}",
             [this](const http::Request& req, http::Response& res) { HandlePod(req, res); });
  http.Route("GET", "/cache/models",
             [this](const http::Request&, http::Response& res) { HandleModels(res); });
  http.Route(
      "POST", "/cache/match",
      [this](const http::Request& req, http::Response& res) { HandleMatch(req, res); },
      deps_.tokenizers->remote() ? http::Execution::kWorker : http::Execution::kInline);
}

nlohmann::json AdminApi::PodJson(const store::Pod& pod) const {
  nlohmann::json json = PodToJson(pod);
  nlohmann::json index = nlohmann::json::object();
  if (auto stats = deps_.exact_index->Stats(pod.key)) index["events"] = *stats;
  if (auto stats = deps_.approx_index->Stats(pod.key)) index["routing"] = *stats;
  json["prefix_index"] = std::move(index);
  json["kv_events_subscribed"] = !deps_.kv_manager->Endpoints(pod.key).empty();
  return json;
}

void AdminApi::HandlePods(http::Response& res) const {
  nlohmann::json pods = nlohmann::json::array();
  for (const store::PodRef& pod : deps_.store->ListPods()) pods.push_back(PodJson(*pod));
  http::SendJson(res, {{"pods", std::move(pods)}});
}

void AdminApi::HandlePod(const http::Request& req, http::Response& res) const {
  auto pod = deps_.store->GetPod(req.params[0], req.params[1]);
  if (!pod.ok()) {
    http::SendError(res, 404, common::AsStd(pod.status().message()));
    return;
  }
  http::SendJson(res, PodJson(**pod));
}

void AdminApi::HandleModels(http::Response& res) const {
  store::SnapshotRef snap = deps_.store->snapshot();
  std::vector<const store::ModelPods*> sorted;
  for (const auto& [name, model] : snap->models) sorted.push_back(model.get());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto* a, const auto* b) { return a->model < b->model; });
  nlohmann::json models = nlohmann::json::array();
  for (const store::ModelPods* model : sorted) {
    nlohmann::json json = ModelToJson(*model);
    json["trace"] = deps_.tracker->TraceJson(model->model);
    models.push_back(std::move(json));
  }
  http::SendJson(res, {{"models", std::move(models)}});
}

void AdminApi::HandleMatch(const http::Request& req, http::Response& res) const {
  // The routing API's body parser: the same JSON is accepted on every endpoint.
  auto body = gateway::ParseRequestBody(req.body);
  if (!body.ok()) {
    http::SendError(res, 400, common::AsStd(body.status().message()));
    return;
  }
  if (body->model.empty()) {
    http::SendError(res, 400, "'model' (string) is required");
    return;
  }
  std::vector<uint32_t> tokens;
  if (body->token_ids) {
    tokens = std::move(*body->token_ids);
  } else if (body->prompt) {
    auto ids = deps_.tokenizers->Tokenize(body->model, *body->prompt);
    if (!ids.ok()) {
      http::SendError(res, gateway::HttpStatusFor(ids.status()),
                      common::AsStd(ids.status().message()));
      return;
    }
    tokens = std::move(*ids);
  } else {
    http::SendError(res, 400, "one of 'token_ids' (array) or 'prompt' (string) is required");
    return;
  }
  if (!deps_.store->HasModel(body->model)) {
    http::SendError(res, 404, fmt::format("model '{}' does not exist in the cache", body->model));
    return;
  }
  http::SendJson(res, deps_.matcher->Match(body->model, body->lora.value_or(""), tokens));
}

}  // namespace aibrix::server
