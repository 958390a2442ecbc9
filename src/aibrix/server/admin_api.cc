#include "aibrix/server/admin_api.h"

#include <algorithm>
#include <optional>
#include <set>

#include "absl/strings/numbers.h"
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
  http.Route("GET", "/cache/models/{model}/prediction",
             [this](const http::Request& req, http::Response& res) { HandlePrediction(req, res); });
  // Tokenizing a prompt remotely is asynchronous (answered on the request's I/O thread).
  http.RouteAsync("POST", "/cache/match", [this](std::shared_ptr<http::Exchange> exchange) {
    HandleMatch(std::move(exchange));
  });
}

void AdminApi::AppendPod(std::string* out, const store::Pod& pod) const {
  PodIndexView index;
  index.events = deps_.exact_index->Stats(pod.key);
  index.routing = deps_.approx_index->Stats(pod.key);
  index.kv_events_subscribed = !deps_.kv_manager->Endpoints(pod.key).empty();
  AppendPodJson(out, pod, index);
}

void AdminApi::HandlePods(http::Response& res) const {
  const std::vector<store::PodRef> pods = deps_.store->ListPods();
  std::string body;
  body.reserve(512 * pods.size() + 16);
  body.append("{\"pods\":[");
  for (size_t i = 0; i < pods.size(); ++i) {
    if (i > 0) body.push_back(',');
    AppendPod(&body, *pods[i]);
  }
  body.append("]}");
  res.SetBody(std::move(body), "application/json");
}

void AdminApi::HandlePod(const http::Request& req, http::Response& res) const {
  auto pod = deps_.store->GetPod(req.params[0], req.params[1]);
  if (!pod.ok()) {
    http::SendError(res, 404, common::AsStd(pod.status().message()));
    return;
  }
  std::string body;
  AppendPod(&body, **pod);
  res.SetBody(std::move(body), "application/json");
}

void AdminApi::HandleModels(http::Response& res) const {
  store::SnapshotRef snap = deps_.store->snapshot();
  std::vector<const store::ModelPods*> sorted;
  snap->models.ForEach([&](const store::ModelPodsRef& model) { sorted.push_back(model.get()); });
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

namespace {

constexpr int64_t kMaxPredictionTokens = int64_t{1} << 30;

// The expectation's numbers as JSON (null when unknown).
nlohmann::json ExpectationJson(const routing::Expectation* e) {
  const auto number = [](const std::optional<double>& v) {
    return v ? nlohmann::json(*v) : nlohmann::json();
  };
  if (e == nullptr) {
    return {{"deployment", nullptr},   {"signature", nullptr},    {"e2e_seconds", nullptr},
            {"ttft_seconds", nullptr}, {"tpot_seconds", nullptr}, {"throughput_rps", nullptr}};
  }
  return {{"deployment", e->deployment},
          {"signature", e->signature.empty() ? nlohmann::json() : nlohmann::json(e->signature)},
          {"e2e_seconds", number(e->e2e_seconds)},
          {"ttft_seconds", number(e->ttft_seconds)},
          {"tpot_seconds", number(e->tpot_seconds)},
          {"throughput_rps", number(e->throughput_rps)}};
}

}  // namespace

void AdminApi::HandlePrediction(const http::Request& req, http::Response& res) const {
  const std::string& model = req.params[0];
  const std::optional<std::string> raw = req.QueryParam("input_tokens");
  int64_t input_tokens = 0;
  if (!raw || !absl::SimpleAtoi(*raw, &input_tokens) || input_tokens < 0 ||
      input_tokens > kMaxPredictionTokens) {
    http::SendError(res, 400,
                    fmt::format("query parameter 'input_tokens' must be an integer in [0, {}]",
                                kMaxPredictionTokens));
    return;
  }
  auto pods = deps_.store->ListPodsByModel(model);
  if (!pods.ok()) {
    http::SendError(res, 404, common::AsStd(pods.status().message()));
    return;
  }
  tracking::OutputPredictor* predictor = deps_.tracker->Predictor(model);
  routing::RequestFeatures features;
  features.prompt_tokens = input_tokens;
  features.output_tokens = predictor != nullptr ? predictor->Predict(input_tokens) : 1;

  // One expectation per deployment of the model's pods that has a profile.
  std::vector<routing::Expectation> expectations;
  if (deps_.load != nullptr) {
    const auto view = deps_.load->ViewFor(model, features);
    std::set<std::string> seen;
    for (const store::PodRef& pod : (*pods)->pods) {
      std::string deployment = pod->object.deployment;
      if (deployment.empty() || !seen.insert(deployment).second) continue;
      if (profile::ProfileRef profile = view.ProfileFor(*pod)) {
        routing::Expectation e = view.Expect(*profile);
        e.deployment = std::move(deployment);
        expectations.push_back(std::move(e));
      }
    }
  }
  // The headline: the deployment expected to finish first (one without an E2E figure last).
  const routing::Expectation* best = nullptr;
  for (const routing::Expectation& e : expectations) {
    if (best == nullptr ||
        (e.e2e_seconds && (!best->e2e_seconds || *e.e2e_seconds < *best->e2e_seconds))) {
      best = &e;
    }
  }
  nlohmann::json json = ExpectationJson(best);
  json["model"] = model;
  json["input_tokens"] = input_tokens;
  json["predicted_output_tokens"] = features.output_tokens;
  json["prediction_samples"] = predictor != nullptr ? predictor->InputCount(input_tokens) : 0;
  nlohmann::json profiles = nlohmann::json::array();
  for (const routing::Expectation& e : expectations) profiles.push_back(ExpectationJson(&e));
  json["profiles"] = std::move(profiles);
  http::SendJson(res, json);
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
