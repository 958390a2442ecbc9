#include "aibrix/server/gateway.h"

#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "aibrix/common/json_writer.h"
#include "aibrix/common/logging.h"
#include "aibrix/common/net.h"
#include "aibrix/common/strings.h"
#include "fmt/format.h"

namespace aibrix::server {
namespace {

constexpr char kTargetPodHeader[] = "x-aibrix-target-pod";
constexpr char kRoutingStrategyHeader[] = "routing-strategy";
constexpr size_t kStreamBufferBytes = 1 << 20;

std::string Message(const absl::Status& status) { return std::string(status.message()); }

void SendStatus(Response& res, const absl::Status& status) {
  const int code = HttpStatusFor(status);
  SendError(res, code, Message(status),
            code == 404   ? "not_found_error"
            : code == 503 ? "service_unavailable"
            : code == 504 ? "timeout"
            : code >= 500 ? "internal_error"
                          : "invalid_request_error");
}

// Output tokens from an OpenAI response or stream event's "usage", if present.
std::optional<int64_t> UsageOutputTokens(const nlohmann::json& body) {
  if (!body.is_object() || !body.contains("usage") || !body["usage"].is_object()) {
    return std::nullopt;
  }
  const auto& usage = body["usage"];
  if (usage.contains("completion_tokens") && usage["completion_tokens"].is_number_integer()) {
    return usage["completion_tokens"].get<int64_t>();
  }
  return std::nullopt;
}

bool IsTimeout(httplib::Error error) {
  return error == httplib::Error::Read || error == httplib::Error::ConnectionTimeout;
}

// Hands the body of one upstream streaming response from the thread that reads it to the
// HTTP worker that writes it to the client, with back-pressure (bounded bytes) and
// cancellation when the client goes away.
struct StreamBridge {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> chunks;
  size_t buffered = 0;
  bool headers = false;
  bool upstream_done = false;
  bool client_gone = false;
  int status = 0;
  std::string content_type;
  httplib::Error error = httplib::Error::Success;
  std::string line;  // partial SSE line, to find the usage event
  std::optional<int64_t> output_tokens;

  void ScanForUsage(const char* data, size_t size) {
    line.append(data, size);
    size_t start = 0;
    for (size_t nl; (nl = line.find('\n', start)) != std::string::npos; start = nl + 1) {
      std::string_view event(line.data() + start, nl - start);
      if (event.rfind("data:", 0) != 0 || event.find("\"usage\"") == std::string_view::npos) {
        continue;
      }
      event.remove_prefix(5);
      auto json = nlohmann::json::parse(event, nullptr, /*allow_exceptions=*/false);
      if (auto tokens = UsageOutputTokens(json)) output_tokens = tokens;
    }
    line.erase(0, start);
  }
};

}  // namespace

int HttpStatusFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kResourceExhausted:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

Gateway::Gateway(store::Store& store, const routing::Router& router,
                 const ModelTokenizers& tokenizers, tracking::RequestTracker& tracker,
                 GatewayOptions options, prometheus::Registry& registry)
    : store_(store),
      router_(router),
      tokenizers_(tokenizers),
      tracker_(tracker),
      options_(std::move(options)),
      upstreams_(
          UpstreamPool::Options{options_.upstream_connect_timeout, options_.upstream_timeout, 64}),
      id_prefix_(std::random_device{}()),
      proxy_requests_(prometheus::BuildCounter()
                          .Name("aibrix_cache_proxy_requests_total")
                          .Help("Proxied OpenAI requests by target pod and response status")
                          .Register(registry)),
      retries_(prometheus::BuildCounter()
                   .Name("aibrix_cache_proxy_retries_total")
                   .Help("Proxied requests retried on another pod after an upstream failure")
                   .Register(registry)
                   .Add({})),
      upstream_errors_(prometheus::BuildCounter()
                           .Name("aibrix_cache_proxy_upstream_errors_total")
                           .Help("Upstream failures before the first response byte, by kind")
                           .Register(registry)) {}

void Gateway::Register(HttpServer& http) {
  http.Post("/cache/route", "/cache/route",
            [this](const Request& req, Response& res) { HandleRoute(req, res); });
  http.Post("/cache/done", "/cache/done",
            [this](const Request& req, Response& res) { HandleDone(req, res); });
  http.Get("/v1/models", "/v1/models",
           [this](const Request& req, Response& res) { HandleModels(req, res); });
  http.Post("/v1/completions", "/v1/completions",
            [this](const Request& req, Response& res) { HandleCompletion(req, res); });
  http.Post("/v1/chat/completions", "/v1/chat/completions",
            [this](const Request& req, Response& res) { HandleCompletion(req, res); });
}

absl::StatusOr<std::vector<uint32_t>> Gateway::TokensOf(RequestBody& body) const {
  if (body.token_ids) return std::move(*body.token_ids);
  if (body.messages_json) {
    auto messages = nlohmann::json::parse(*body.messages_json, nullptr, /*allow_exceptions=*/false);
    return tokenizers_.TokenizeChat(body.model, messages);
  }
  if (body.prompt) return tokenizers_.Tokenize(body.model, *body.prompt);
  return absl::InvalidArgumentError("one of 'prompt', 'messages' or 'token_ids' is required");
}

absl::StatusOr<Gateway::Routed> Gateway::RouteTo(const std::string& algorithm,
                                                 const std::string& model,
                                                 std::span<const uint32_t> tokens,
                                                 const std::string& request_id,
                                                 std::vector<std::string> exclude) const {
  routing::RouteRequest request;
  request.model = model;
  request.tokens = tokens;
  request.request_id = request_id;
  request.exclude_pods = std::move(exclude);
  auto decision = router_.Route(algorithm, request);
  if (!decision.ok()) return decision.status();
  Routed routed;
  routed.address_host = decision->pod->ip();
  routed.port = store::PodServingPort(decision->pod->object);
  routed.decision = std::move(*decision);
  return routed;
}

std::string Gateway::AlgorithmFor(const Request& req) const {
  std::string header = req.get_header_value(kRoutingStrategyHeader);
  return header.empty() ? options_.default_algorithm : header;
}

std::string Gateway::NewRequestId() {
  return fmt::format("aibrix-{:08x}-{}", static_cast<uint32_t>(id_prefix_),
                     next_request_id_.fetch_add(1, std::memory_order_relaxed));
}

void Gateway::Admit(const std::string& request_id, const std::string& model, const Routed& routed) {
  auto status = store_.AddRequest(request_id, routed.decision.pod, store_.ReadyPods(model));
  if (!status.ok()) {
    common::Logger("gateway")->warn("request {} not counted: {}", request_id, status.ToString());
  }
}

std::optional<RequestBody> Gateway::ParseModelRequest(const Request& req, Response& res) {
  auto body = ParseRequestBody(req.body);
  if (!body.ok()) {
    SendStatus(res, body.status());
    return std::nullopt;
  }
  if (body->model.empty()) {
    SendError(res, 400, "'model' (string) is required");
    return std::nullopt;
  }
  return std::move(*body);
}

void Gateway::HandleRoute(const Request& req, Response& res) {
  std::optional<RequestBody> body = ParseModelRequest(req, res);
  if (!body) return;
  const std::string algorithm = body->algorithm.value_or(options_.default_algorithm);
  const std::string request_id = body->request_id.value_or("");
  if (body->request_id && request_id.empty()) {
    SendError(res, 400, "'request_id' must be a non-empty string");
    return;
  }
  auto tokens = TokensOf(*body);
  if (!tokens.ok()) {
    SendStatus(res, tokens.status());
    return;
  }
  auto routed = RouteTo(algorithm, body->model, *tokens, request_id, {});
  if (!routed.ok()) {
    SendStatus(res, routed.status());
    return;
  }
  if (!request_id.empty()) {
    auto added = store_.AddRequest(request_id, routed->decision.pod, store_.ReadyPods(body->model));
    if (!added.ok()) {
      SendStatus(res, absl::InvalidArgumentError(Message(added)));
      return;
    }
    tracker_.OnAdmitted(body->model);
  }
  // Written directly (the hot path: 64 candidates through nlohmann cost ~20 µs).
  const routing::Decision& d = routed->decision;
  std::string json = "{\"pod\":";
  json.reserve(256 + 96 * d.candidates.size());
  common::AppendJsonString(&json, d.pod->key);
  json += ",\"address\":";
  common::AppendJsonString(
      &json, common::FormatHostPort(routed->address_host, static_cast<uint16_t>(routed->port)));
  json += ",\"algorithm\":";
  common::AppendJsonString(&json, d.algorithm);
  fmt::format_to(std::back_inserter(json), ",\"matched_blocks\":{},\"total_blocks\":{},",
                 d.matched_blocks, d.total_blocks);
  json += "\"candidates\":[";
  for (size_t i = 0; i < d.candidates.size(); ++i) {
    const routing::Candidate& c = d.candidates[i];
    json += i == 0 ? "{\"pod\":" : ",{\"pod\":";
    common::AppendJsonString(&json, c.pod->key);
    json += ",\"score\":";
    common::AppendJsonNumber(&json, c.score);
    fmt::format_to(std::back_inserter(json), ",\"matched_blocks\":{},\"running\":{}}}",
                   c.matched_blocks, c.running);
  }
  json += "]}";
  res.status = 200;
  res.set_content(std::move(json), "application/json");
}

void Gateway::HandleDone(const Request& req, Response& res) {
  auto body = ParseRequestBody(req.body);
  if (!body.ok()) {
    SendStatus(res, body.status());
    return;
  }
  if (!body->request_id) {
    SendError(res, 400, "'request_id' (string) is required");
    return;
  }
  auto done = store_.DoneRequest(*body->request_id);
  if (!done.ok()) {
    SendError(res, 404, Message(done.status()), "not_found_error");
    return;
  }
  if (done->model != nullptr) {
    std::optional<int64_t> output;
    if (body->output_tokens) output = static_cast<int64_t>(*body->output_tokens);
    tracker_.OnFinished(done->model->name(), static_cast<int64_t>(body->input_tokens.value_or(0)),
                        output);
  }
  SendJson(res, {{"status", "done"}});
}

void Gateway::HandleModels(const Request&, Response& res) {
  nlohmann::json data = nlohmann::json::array();
  for (const std::string& model : store_.ListModels()) {
    data.push_back({{"id", model}, {"object", "model"}, {"owned_by", "aibrix"}});
  }
  SendJson(res, {{"object", "list"}, {"data", std::move(data)}});
}

void Gateway::HandleCompletion(const Request& req, Response& res) {
  std::optional<RequestBody> body = ParseModelRequest(req, res);
  if (!body) return;
  const std::string model = body->model;
  const bool stream = body->stream;
  auto tokens = TokensOf(*body);
  if (!tokens.ok()) {
    SendStatus(res, tokens.status());
    return;
  }
  const std::string algorithm = AlgorithmFor(req);
  std::vector<std::string> tried;
  httplib::Error error = httplib::Error::Success;
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::string request_id = NewRequestId();
    auto routed = RouteTo(algorithm, model, *tokens, request_id, tried);
    if (!routed.ok()) {
      // A retry that finds no other pod reports the first failure instead.
      if (attempt > 0) break;
      SendStatus(res, routed.status());
      return;
    }
    Admit(request_id, model, *routed);
    if (attempt == 0) tracker_.OnAdmitted(model);
    res.set_header(kTargetPodHeader, routed->decision.pod->key);
    const int64_t input_tokens = static_cast<int64_t>(tokens->size());
    std::optional<int64_t> output_tokens;
    const bool ok = stream
                        ? ForwardStream(req, *routed, request_id, model, input_tokens, res, &error)
                        : ForwardBuffered(req, *routed, res, &error, &output_tokens);
    if (ok) {
      proxy_requests_
          .Add({{"pod", routed->decision.pod->key}, {"code", std::to_string(res.status)}})
          .Increment();
      if (!stream && store_.DoneRequest(request_id).ok()) {
        tracker_.OnFinished(model, input_tokens, output_tokens);
      }
      return;
    }
    // Failed before any byte reached the client: settle and try another pod once.
    (void)store_.DoneRequest(request_id);
    upstream_errors_.Add({{"kind", httplib::to_string(error)}}).Increment();
    tried.push_back(routed->decision.pod->key);
    res.headers.erase(kTargetPodHeader);
    if (attempt == 0) retries_.Increment();
  }
  tracker_.OnFinished(model, static_cast<int64_t>(tokens->size()), std::nullopt);
  if (IsTimeout(error)) {
    SendError(res, 504, fmt::format("upstream timed out ({})", httplib::to_string(error)),
              "timeout");
  } else {
    SendError(res, 502, fmt::format("upstream failed: {}", httplib::to_string(error)),
              "upstream_error");
  }
}

bool Gateway::ForwardBuffered(const Request& req, const Routed& routed, Response& res,
                              httplib::Error* error, std::optional<int64_t>* output_tokens) {
  UpstreamPool::Lease lease = upstreams_.Acquire(routed.address_host, routed.port);
  httplib::Headers headers;
  if (req.has_header("Authorization")) {
    headers.emplace("Authorization", req.get_header_value("Authorization"));
  }
  auto result = lease.client().Post(req.path, headers, req.body, "application/json");
  if (!result) {
    *error = result.error();
    lease.Discard();
    return false;
  }
  res.status = result->status;
  if (result->status == 200) {
    *output_tokens =
        UsageOutputTokens(nlohmann::json::parse(result->body, nullptr, /*allow_exceptions=*/false));
  }
  res.set_content(result->body, result->get_header_value("Content-Type").empty()
                                    ? "application/json"
                                    : result->get_header_value("Content-Type"));
  return true;
}

bool Gateway::ForwardStream(const Request& req, const Routed& routed, const std::string& request_id,
                            const std::string& model, int64_t input_tokens, Response& res,
                            httplib::Error* error) {
  auto bridge = std::make_shared<StreamBridge>();
  auto lease =
      std::make_shared<UpstreamPool::Lease>(upstreams_.Acquire(routed.address_host, routed.port));
  httplib::Request upstream;
  upstream.method = "POST";
  upstream.path = req.path;
  upstream.body = req.body;
  upstream.set_header("Content-Type", "application/json");
  upstream.set_header("Accept", "text/event-stream");
  if (req.has_header("Authorization")) {
    upstream.set_header("Authorization", req.get_header_value("Authorization"));
  }
  upstream.response_handler = [bridge](const httplib::Response& r) {
    std::lock_guard<std::mutex> lock(bridge->mu);
    bridge->status = r.status;
    bridge->content_type = r.get_header_value("Content-Type");
    bridge->headers = true;
    bridge->cv.notify_all();
    return true;
  };
  upstream.content_receiver = [bridge](const char* data, size_t size, uint64_t, uint64_t) {
    std::unique_lock<std::mutex> lock(bridge->mu);
    bridge->cv.wait(lock,
                    [&] { return bridge->buffered < kStreamBufferBytes || bridge->client_gone; });
    if (bridge->client_gone) return false;  // abort the upstream request
    bridge->ScanForUsage(data, size);
    bridge->chunks.emplace_back(data, size);
    bridge->buffered += size;
    bridge->cv.notify_all();
    return true;
  };
  auto reader =
      std::make_shared<std::thread>([bridge, lease, upstream = std::move(upstream)]() mutable {
        httplib::Response response;
        httplib::Error err = httplib::Error::Success;
        const bool ok = lease->client().send(upstream, response, err);
        if (!ok) lease->Discard();
        std::lock_guard<std::mutex> lock(bridge->mu);
        bridge->upstream_done = true;
        if (!ok) bridge->error = err;
        bridge->cv.notify_all();
      });

  {
    std::unique_lock<std::mutex> lock(bridge->mu);
    bridge->cv.wait(lock, [&] { return bridge->headers || bridge->upstream_done; });
    if (!bridge->headers) {
      *error = bridge->error;
      lock.unlock();
      reader->join();
      return false;
    }
    res.status = bridge->status;
  }
  const std::string content_type =
      bridge->content_type.empty() ? "text/event-stream" : bridge->content_type;
  res.set_chunked_content_provider(
      content_type,
      [bridge](size_t, httplib::DataSink& sink) {
        std::unique_lock<std::mutex> lock(bridge->mu);
        bridge->cv.wait(lock, [&] { return !bridge->chunks.empty() || bridge->upstream_done; });
        if (bridge->chunks.empty()) {
          sink.done();
          return true;
        }
        std::string chunk = std::move(bridge->chunks.front());
        bridge->chunks.pop_front();
        bridge->buffered -= chunk.size();
        bridge->cv.notify_all();
        lock.unlock();
        if (!sink.write(chunk.data(), chunk.size())) {
          std::lock_guard<std::mutex> relock(bridge->mu);
          bridge->client_gone = true;
          bridge->cv.notify_all();
          return false;
        }
        return true;
      },
      [this, bridge, reader, request_id, model, input_tokens](bool) {
        {
          std::lock_guard<std::mutex> lock(bridge->mu);
          if (!bridge->upstream_done) bridge->client_gone = true;
          bridge->cv.notify_all();
        }
        reader->join();
        if (store_.DoneRequest(request_id).ok()) {
          tracker_.OnFinished(model, input_tokens, bridge->output_tokens);
        }
      });
  return true;
}

}  // namespace aibrix::server
