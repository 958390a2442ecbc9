#include "aibrix/gateway/gateway.h"

#include <random>

#include "absl/strings/numbers.h"
#include "aibrix/common/json_writer.h"
#include "aibrix/common/logging.h"
#include "aibrix/common/net.h"
#include "aibrix/common/status_macros.h"
#include "aibrix/gateway/in_flight.h"
#include "aibrix/gateway/usage_scanner.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace aibrix::gateway {

constexpr char kTargetPodHeader[] = "x-aibrix-target-pod";
constexpr char kRoutingStrategyHeader[] = "routing-strategy";
constexpr char kUserHeader[] = "user";  // AIBrix's end-user header (vtc-basic)

namespace {

std::string Message(const absl::Status& status) { return std::string(status.message()); }

void SendStatus(http::Response& res, const absl::Status& status) {
  http::SendError(res, HttpStatusFor(status), Message(status));
}

void RespondStatus(http::Exchange& exchange, const absl::Status& status) {
  http::Response res;
  SendStatus(res, status);
  exchange.Respond(std::move(res));
}

// The end user (vtc-basic): AIBrix's `user` header wins over OpenAI's `user` body field.
void TakeUserHeader(const http::Request& req, RequestBody& body) {
  const std::string_view header = req.headers.Get(kUserHeader);
  if (!header.empty()) body.user = std::string(header);
}

// Hop-by-hop and framing fields are the relay's own; everything else passes through.
bool PassesThrough(std::string_view name) {
  for (std::string_view own : {"Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length",
                               "Date", "Proxy-Connection", "Upgrade", "TE", "Trailer"}) {
    if (http::EqualsIgnoreCase(name, own)) return false;
  }
  return true;
}

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

// One proxied request: routes, forwards, relays the response and settles. Lives (shared)
// until the upstream call ended and the client side let go; after routing, every callback
// runs on the client connection's I/O thread.
class ProxyCall : public http::ResponseObserver, public std::enable_shared_from_this<ProxyCall> {
 public:
  ProxyCall(Gateway& gateway, std::shared_ptr<http::Exchange> exchange, PreparedRequest prepared)
      : gateway_(gateway),
        exchange_(std::move(exchange)),
        prepared_(std::move(prepared)),
        request_(gateway.Admit(prepared_)) {}

  // Routes and forwards (attempt 0), or answers the routing error.
  void Start() {
    exchange_->OnCancel([self = shared_from_this()] { self->OnClientGone(); });
    exchange_->Run([self = shared_from_this()] {
      if (!self->client_gone_) self->Forward();
    });
  }

  void OnHead(int status, const http::Headers& headers) override {
    status_ = status;
    http::Headers out;
    std::optional<uint64_t> length;
    for (const auto& [name, value] : headers.fields()) {
      if (http::EqualsIgnoreCase(name, "Content-Length")) {
        uint64_t n = 0;
        if (absl::SimpleAtoi(value, &n)) length = n;
      }
      if (PassesThrough(name)) out.Add(name, value);
    }
    if (headers.Has("Transfer-Encoding")) length.reset();
    out.Set(kTargetPodHeader, pod_key_);
    writer_ = exchange_->Stream(status, std::move(out), length);
    if (!writer_) call_->Cancel();
  }

  void OnBody(std::string_view data) override {
    if (!data.empty()) request_->AnswerBegan();
    usage_.Feed(data);
    writer_->Write(std::string(data), [self = shared_from_this()](bool ok) {
      if (!self->call_) return;
      if (ok) {
        self->call_->ReadMore();
      } else {
        self->call_->Cancel();
      }
    });
  }

  void OnEnd(http::ClientError error, std::string_view detail) override {
    auto call = std::move(call_);  // ends the call <-> observer cycle
    if (error == http::ClientError::kNone) {
      writer_->Finish();
      gateway_.CountProxied(pod_key_, status_);
      request_->FinishResponse(status_, usage_);
      return;
    }
    if (error == http::ClientError::kCancelled || client_gone_) {
      if (writer_) writer_->Abort();
      request_->Finish(std::nullopt);
      return;
    }
    gateway_.upstream_errors_.Add({{"kind", std::string(http::ClientErrorName(error))}})
        .Increment();
    if (writer_) {
      // The head is out: the only honest end is a cut transfer.
      common::Logger("gateway")->warn("upstream {} failed mid-response: {}", pod_key_, detail);
      writer_->Abort();
      request_->Finish(std::nullopt);
      return;
    }
    const bool never_reached =
        error == http::ClientError::kConnect || error == http::ClientError::kSendReset;
    if (never_reached && attempt_ == 0) {
      tried_.push_back(pod_key_);
      auto routed = gateway_.RouteAttempt(*request_, prepared_, tried_);
      if (routed.ok()) {  // another pod to try; otherwise the upstream error is the answer
        gateway_.retries_.Increment();
        ++attempt_;
        Send(std::move(*routed));
        return;
      }
    }
    http::Response res;
    if (error == http::ClientError::kTimeout) {
      http::SendError(res, 504, fmt::format("upstream {} timed out: {}", pod_key_, detail));
    } else {
      http::SendError(res, 502, fmt::format("upstream {} failed: {}", pod_key_, detail));
    }
    Answer(std::move(res));
  }

 private:
  // Routes the first attempt, or answers the routing error.
  void Forward() {
    auto routed = gateway_.RouteAttempt(*request_, prepared_, tried_);
    if (!routed.ok()) {
      http::Response res;
      SendStatus(res, routed.status());
      Answer(std::move(res));
      return;
    }
    Send(std::move(*routed));
  }

  // Sends the routed attempt (RouteAttempt counted it on its pod).
  void Send(Gateway::Routed routed) {
    pod_key_ = routed.decision.pod->key;
    const http::Request& in = exchange_->request();
    http::ClientRequest out;
    out.host = routed.host;
    out.port = routed.port;
    out.target = in.target;
    out.body = in.body;  // kept for a retry
    out.headers.Set("Content-Type", "application/json");
    if (in.headers.Has("Authorization"))
      out.headers.Set("Authorization", in.headers.Get("Authorization"));
    if (in.headers.Has("Accept")) out.headers.Set("Accept", in.headers.Get("Accept"));
    call_ = gateway_.upstream_.Start(exchange_->io(), std::move(out), shared_from_this());
  }

  void OnClientGone() {
    client_gone_ = true;
    if (call_) {
      call_->Cancel();
    } else {
      request_->Finish(std::nullopt);
    }
  }

  void Answer(http::Response res) {
    gateway_.CountProxied(pod_key_, res.status);
    request_->Finish(std::nullopt);
    exchange_->Respond(std::move(res));
  }

  Gateway& gateway_;
  std::shared_ptr<http::Exchange> exchange_;
  const PreparedRequest prepared_;
  const std::unique_ptr<InFlightRequest> request_;
  std::vector<std::string> tried_;
  std::string pod_key_;
  int attempt_ = 0;
  int status_ = 0;
  bool client_gone_ = false;
  std::shared_ptr<http::ClientCall> call_;
  std::shared_ptr<http::StreamWriter> writer_;
  UsageScanner usage_;
};

Gateway::Gateway(store::Store& store, const routing::Router& router,
                 const ModelTokenizers& tokenizers, tracking::RequestTracker& tracker,
                 GatewayOptions options, prometheus::Registry& registry)
    : store_(store),
      router_(router),
      tokenizers_(tokenizers),
      tracker_(tracker),
      options_(std::move(options)),
      upstream_(options_.upstream),
      id_prefix_(std::random_device{}()),
      proxy_requests_(prometheus::BuildCounter()
                          .Name("aibrix_cache_proxy_requests_total")
                          .Help("Proxied OpenAI requests by target pod and response status")
                          .Register(registry)),
      retries_(prometheus::BuildCounter()
                   .Name("aibrix_cache_proxy_retries_total")
                   .Help("Proxied requests retried on another pod (never reached the first)")
                   .Register(registry)
                   .Add({})),
      upstream_errors_(prometheus::BuildCounter()
                           .Name("aibrix_cache_proxy_upstream_errors_total")
                           .Help("Upstream failures, by kind (connect, send_reset, timeout, "
                                 "reset, bad_response)")
                           .Register(registry)),
      expired_routes_(prometheus::BuildCounter()
                          .Name("aibrix_cache_route_expired_total")
                          .Help("/cache/route requests settled because /cache/done never came")
                          .Register(registry)
                          .Add({})) {}

Gateway::~Gateway() = default;

void Gateway::Register(http::Server& http) {
  // Every route answers on the I/O thread: tokenizing through a remote engine is an
  // asynchronous call on the request's I/O thread (ModelTokenizers), never a blocking one.
  http.RouteAsync("POST", "/cache/route", [this](std::shared_ptr<http::Exchange> exchange) {
    HandleRoute(std::move(exchange));
  });
  http.Route("POST", "/cache/done",
             [this](const http::Request& req, http::Response& res) { HandleDone(req, res); });
  http.Route("GET", "/v1/models",
             [this](const http::Request& req, http::Response& res) { HandleModels(req, res); });
  for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
    http.RouteAsync("POST", path, [this](std::shared_ptr<http::Exchange> exchange) {
      HandleCompletion(std::move(exchange));
    });
  }
}

absl::StatusOr<Gateway::Routed> Gateway::RouteTo(const std::string& algorithm,
                                                 const std::string& model,
                                                 std::span<const uint32_t> tokens,
                                                 const std::string& request_id,
                                                 const std::string& user,
                                                 std::vector<std::string> exclude) const {
  routing::RouteRequest request;
  request.model = model;
  request.tokens = tokens;
  request.request_id = request_id;
  request.user = user;
  request.exclude_pods = std::move(exclude);
  ASSIGN_OR_RETURN(routing::Decision decision, router_.Route(algorithm, request));
  Routed routed;
  routed.host = decision.pod->ip();
  routed.port = static_cast<uint16_t>(store::PodServingPort(decision.pod->object));
  routed.decision = std::move(decision);
  return routed;
}

std::unique_ptr<InFlightRequest> Gateway::Admit(const PreparedRequest& request) {
  return std::make_unique<InFlightRequest>(store_, tracker_, request.model,
                                           static_cast<int64_t>(request.tokens.size()));
}

absl::StatusOr<Gateway::Routed> Gateway::RouteAttempt(InFlightRequest& request,
                                                      const PreparedRequest& prepared,
                                                      std::vector<std::string> tried) {
  std::string request_id = NewRequestId();
  ASSIGN_OR_RETURN(Routed routed, RouteTo(prepared.algorithm, prepared.model, prepared.tokens,
                                          request_id, prepared.user, std::move(tried)));
  if (auto st = request.Attempt(request_id, routed.decision); !st.ok()) {
    common::Logger("gateway")->warn("request {} not counted: {}", request_id, st.ToString());
  }
  routed.request_id = std::move(request_id);
  return routed;
}

void Gateway::CountProxied(std::string_view pod_key, int status) {
  proxy_requests_
      .Add({{"pod", pod_key.empty() ? "none" : std::string(pod_key)},
            {"code", std::to_string(status)}})
      .Increment();
}

std::string Gateway::NewRequestId() {
  return fmt::format("aibrix-{:08x}-{}", static_cast<uint32_t>(id_prefix_),
                     next_request_id_.fetch_add(1, std::memory_order_relaxed));
}

absl::StatusOr<RequestBody> ParseModelRequest(std::string_view json) {
  ASSIGN_OR_RETURN(RequestBody body, ParseRequestBody(json));
  if (body.model.empty()) return absl::InvalidArgumentError("'model' (string) is required");
  return body;
}

void Gateway::HandleRoute(std::shared_ptr<http::Exchange> exchange) {
  auto body = ParseModelRequest(exchange->request().body);
  if (!body.ok()) {
    RespondStatus(*exchange, body.status());
    return;
  }
  TakeUserHeader(exchange->request(), *body);
  if (body->request_id && body->request_id->empty()) {
    http::Response res;
    http::SendError(res, 400, "'request_id' must be a non-empty string");
    exchange->Respond(std::move(res));
    return;
  }
  boost::asio::io_context& io = exchange->io();
  tokenizers_.TokenizeBody(io, std::move(*body),
                           [this, exchange = std::move(exchange)](
                               RequestBody& body, absl::StatusOr<std::vector<uint32_t>> tokens) {
                             http::Response res;
                             AnswerRoute(body, tokens, res);
                             exchange->Respond(std::move(res));
                           });
}

void Gateway::AnswerRoute(const RequestBody& body,
                          const absl::StatusOr<std::vector<uint32_t>>& tokens,
                          http::Response& res) {
  const std::string algorithm = body.algorithm.value_or(options_.default_algorithm);
  if (!tokens.ok()) {
    router_.CountTokenizeFailure(algorithm, body.model);
    SendStatus(res, tokens.status());
    return;
  }
  const std::string request_id = body.request_id.value_or("");
  auto routed = RouteTo(algorithm, body.model, *tokens, request_id, body.user.value_or(""), {});
  if (!routed.ok()) {
    SendStatus(res, routed.status());
    return;
  }
  if (!request_id.empty()) {
    // No prefill tokens: the routing API has no signal for the answer's start, and counting
    // them until /cache/done would price a long decode as queued prefill.
    auto added =
        store_.AddRequest(request_id, routed->decision.pod, store_.ReadyPods(body.model),
                          {.expires = std::chrono::steady_clock::now() + options_.route_ttl,
                           .pending_load = routed->decision.pending_load.value_or(0)});
    if (!added.ok()) {
      SendStatus(res, absl::InvalidArgumentError(Message(added)));
      return;
    }
    tracker_.OnAdmitted(body.model);
  }
  // Written directly (the hot path: 64 candidates through nlohmann cost ~20 µs).
  const routing::Decision& d = routed->decision;
  const size_t candidates = std::min(d.candidates.size(), options_.max_candidates);
  std::string json = "{\"pod\":";
  json.reserve(256 + 96 * candidates);
  common::AppendJsonString(&json, d.pod->key);
  json += ",\"address\":";
  common::AppendJsonString(&json, common::FormatHostPort(routed->host, routed->port));
  json += ",\"algorithm\":";
  common::AppendJsonString(&json, d.algorithm);
  json += ",\"matched_blocks\":";
  common::AppendJsonInt(&json, d.matched_blocks);
  json += ",\"total_blocks\":";
  common::AppendJsonInt(&json, d.total_blocks);
  json += ",\"candidates\":[";
  for (size_t i = 0; i < candidates; ++i) {
    const routing::Candidate& c = d.candidates[i];
    json += i == 0 ? "{\"pod\":" : ",{\"pod\":";
    common::AppendJsonString(&json, c.pod->key);
    json += ",\"score\":";
    common::AppendJsonNumber(&json, c.score);
    json += ",\"matched_blocks\":";
    common::AppendJsonInt(&json, c.matched_blocks);
    json += ",\"running\":";
    common::AppendJsonInt(&json, c.running);
    json += '}';
  }
  json += "]}";
  res.SetBody(std::move(json), "application/json");
}

void Gateway::HandleDone(const http::Request& req, http::Response& res) {
  auto body = ParseRequestBody(req.body);
  if (!body.ok()) {
    SendStatus(res, body.status());
    return;
  }
  if (!body->request_id) {
    http::SendError(res, 400, "'request_id' (string) is required");
    return;
  }
  auto done = store_.DoneRequest(*body->request_id);
  if (!done.ok()) {
    http::SendError(res, 404, Message(done.status()));
    return;
  }
  if (done->model != nullptr) {
    std::optional<int64_t> output;
    if (body->output_tokens) output = static_cast<int64_t>(*body->output_tokens);
    tracker_.OnFinished(done->model->name(), static_cast<int64_t>(body->input_tokens.value_or(0)),
                        output);
  }
  http::SendJson(res, {{"status", "done"}});
}

size_t Gateway::Sweep() {
  upstream_.Sweep();
  const auto expired = store_.ExpireRequests(std::chrono::steady_clock::now());
  for (const store::SettledRequest& request : expired) {
    if (request.model != nullptr) tracker_.OnFinished(request.model->name(), 0, std::nullopt);
  }
  expired_routes_.Increment(static_cast<double>(expired.size()));
  return expired.size();
}

void Gateway::HandleModels(const http::Request&, http::Response& res) {
  nlohmann::json data = nlohmann::json::array();
  for (const std::string& model : store_.ListModels()) {
    data.push_back({{"id", model}, {"object", "model"}, {"owned_by", "aibrix"}});
  }
  http::SendJson(res, {{"object", "list"}, {"data", std::move(data)}});
}

void Gateway::HandleCompletion(std::shared_ptr<http::Exchange> exchange) {
  const http::Request& req = exchange->request();
  boost::asio::io_context& io = exchange->io();
  Prepare(io, req.body, req.headers.Get(kRoutingStrategyHeader), req.headers.Get(kUserHeader),
          options_.default_algorithm,
          [this, exchange = std::move(exchange)](absl::StatusOr<PreparedRequest> prepared) mutable {
            if (!prepared.ok()) {
              RespondStatus(*exchange, prepared.status());
              return;
            }
            auto call =
                std::make_shared<ProxyCall>(*this, std::move(exchange), std::move(*prepared));
            call->Start();
          });
}

}  // namespace aibrix::gateway
