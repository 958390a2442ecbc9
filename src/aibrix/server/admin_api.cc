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
  // Tokenizing a prompt remotely is asynchronous (answered on the request's I/O thread).
  http.RouteAsync("POST", "/cache/match", [this](std::shared_ptr<http::Exchange> exchange) {
    HandleMatch(std::move(exchange));
  });
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
    const gateway::TokenizerChoice tokenizer = deps_.tokenizers->Choice(model);
    json["tokenizer"] = tokenizer.remote ? "remote" : "local";
    json["tokenizer_source"] = tokenizer.source;
    json["tokenizer_endpoints"] = deps_.tokenizers->Endpoints(model);
    json["trace"] = deps_.tracker->TraceJson(model->model);
    models.push_back(std::move(json));
  }
  http::SendJson(res, {{"models", std::move(models)}});
}

void AdminApi::HandleMatch(std::shared_ptr<http::Exchange> exchange) const {
  const auto respond_error = [&exchange](int status, std::string_view message) {
    http::Response res;
    http::SendError(res, status, std::string(message));
    exchange->Respond(std::move(res));
  };
  // The routing API's body parser: the same JSON is accepted on every endpoint.
  auto body = gateway::ParseRequestBody(exchange->request().body);
  if (!body.ok()) {
    respond_error(400, common::AsStd(body.status().message()));
    return;
  }
  if (body->model.empty()) {
    respond_error(400, "'model' (string) is required");
    return;
  }
  if (!body->token_ids && !body->prompt) {
    respond_error(400, "one of 'token_ids' (array) or 'prompt' (string) is required");
    return;
  }
  body->messages.reset();  // /cache/match takes token ids or a completion prompt only
  boost::asio::io_context& io = exchange->io();
  deps_.tokenizers->TokenizeBody(
      io, std::move(*body),
      [this, exchange = std::move(exchange)](gateway::RequestBody& body,
                                             absl::StatusOr<std::vector<uint32_t>> tokens) {
        http::Response res;
        if (!tokens.ok()) {
          http::SendError(res, gateway::HttpStatusFor(tokens.status()),
                          common::AsStd(tokens.status().message()));
        } else if (!deps_.store->HasModel(body.model)) {
          http::SendError(res, 404,
                          fmt::format("model '{}' does not exist in the cache", body.model));
        } else {
          http::SendJson(res, deps_.matcher->Match(body.model, body.lora.value_or(""), *tokens));
        }
        exchange->Respond(std::move(res));
      });
}

}  // namespace aibrix::server
