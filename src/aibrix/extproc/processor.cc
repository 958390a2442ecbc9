#include "aibrix/extproc/processor.h"

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "aibrix/common/logging.h"
#include "aibrix/common/net.h"
#include "aibrix/common/strings.h"
#include "fmt/format.h"

namespace aibrix::extproc {

namespace {

// Request paths whose bodies the gateway routes (the query string is not part of the match).
bool RoutedPath(std::string_view path) {
  path = path.substr(0, path.find('?'));
  return path == "/v1/completions" || path == "/v1/chat/completions";
}

// GIE's subset hint: metadata_context.filter_metadata["envoy.lb.subset_hint"]
// ["x-gateway-destination-endpoint-subset"], a list of "ip:port" strings (or one string with
// commas). Returns false when absent.
bool SubsetHint(const ext_proc_v3::ProcessingRequest& message, std::string* out) {
  const auto& filters = message.metadata_context().filter_metadata();
  auto hint = filters.find("envoy.lb.subset_hint");
  if (hint == filters.end()) return false;
  auto field = hint->second.fields().find("x-gateway-destination-endpoint-subset");
  if (field == hint->second.fields().end()) return false;
  const google::protobuf::Value& value = field->second;
  out->clear();
  if (value.has_list_value()) {
    for (const google::protobuf::Value& item : value.list_value().values()) {
      if (!item.has_string_value()) continue;
      if (!out->empty()) out->push_back(',');
      out->append(item.string_value());
    }
  } else if (value.has_string_value()) {
    *out = value.string_value();
  }
  return true;
}

common::RateLimiter& ProtocolLogLimiter() {
  static common::RateLimiter limiter;
  return limiter;
}

constexpr size_t kMaxWaitingMessages = 16;

}  // namespace

Processor::Processor(const ProcessorOptions& options, ProcessorDeps deps, StreamOutput* output)
    : options_(options), deps_(deps), output_(output) {}

Processor::~Processor() {
  common::MutexLock lock(&mu_);
  SettleLocked();
}

bool Processor::closed() const {
  common::MutexLock lock(&mu_);
  return closed_;
}

void Processor::OnMessage(const ext_proc_v3::ProcessingRequest& message) {
  common::MutexLock lock(&mu_);
  if (closed_) return;
  if (phase_ == Phase::kRouting) {
    if (waiting_.size() >= kMaxWaitingMessages) {
      ProtocolErrorLocked(absl::StatusCode::kResourceExhausted, "too_many_messages",
                          "too many messages while the request is routed");
      return;
    }
    waiting_.push_back(message);
    return;
  }
  HandleLocked(message);
}

void Processor::HandleLocked(const ext_proc_v3::ProcessingRequest& message) {
  using Request = ext_proc_v3::ProcessingRequest;
  switch (message.request_case()) {
    case Request::kRequestHeaders:
      OnRequestHeadersLocked(message.request_headers(), message);
      return;
    case Request::kRequestBody:
      OnRequestBodyLocked(message.request_body());
      return;
    case Request::kResponseHeaders:
      OnResponseHeadersLocked(message.response_headers());
      return;
    case Request::kResponseBody:
      OnResponseBodyLocked(message.response_body());
      return;
    case Request::kRequestTrailers: {
      ext_proc_v3::ProcessingResponse response;
      response.mutable_request_trailers();
      SendLocked(std::move(response));
      return;
    }
    case Request::kResponseTrailers: {
      ext_proc_v3::ProcessingResponse response;
      response.mutable_response_trailers();
      SendLocked(std::move(response));
      return;
    }
    case Request::REQUEST_NOT_SET:
      break;
  }
  ProtocolErrorLocked(absl::StatusCode::kInvalidArgument, "unknown_message",
                      "ProcessingRequest carries no known request kind");
}

void Processor::OnRequestHeadersLocked(const ext_proc_v3::HttpHeaders& headers,
                                       const ext_proc_v3::ProcessingRequest& message) {
  if (phase_ != Phase::kRequestHeaders) {
    ProtocolErrorLocked(absl::StatusCode::kFailedPrecondition, "out_of_order",
                        "request_headers received twice");
    return;
  }
  const core_v3::HeaderMap& map = headers.headers();
  if (!options_.bearer_token.empty()) {
    const std::string expected = "Bearer " + options_.bearer_token;
    if (!ConstantTimeEquals(HeaderValue(map, "authorization"), expected)) {
      ReplyErrorLocked(401, "Incorrect API key provided", {});
      return;
    }
  }
  const std::string_view path = HeaderValue(map, ":path");
  if (!RoutedPath(path)) {
    ReplyErrorLocked(501,
                     fmt::format("path '{}' is not routed by aibrix-cache", path.substr(0, 256)),
                     "x-error-request-body-processing");
    return;
  }
  strategy_ = std::string(HeaderValue(map, "routing-strategy"));
  user_ = std::string(HeaderValue(map, "user"));
  if (!strategy_.empty() && !deps_.gateway->HasAlgorithm(strategy_)) {
    ReplyErrorLocked(400, fmt::format("unknown routing strategy '{}'", strategy_.substr(0, 128)),
                     "x-error-routing");
    return;
  }
  has_subset_ = options_.dialect == Dialect::kGie && SubsetHint(message, &subset_);
  if (headers.end_of_stream()) {
    ReplyErrorLocked(400, "a request body naming the model is required",
                     "x-error-request-body-processing");
    return;
  }
  ext_proc_v3::ProcessingResponse response;
  ext_proc_v3::CommonResponse* common = response.mutable_request_headers()->mutable_response();
  ext_proc_v3::HeaderMutation* mutation = common->mutable_header_mutation();
  SetHeader(*mutation, "x-went-into-req-headers", "true");
  // Only the processor names the destination: a client's own would reach any ip:port
  // (Envoy's ORIGINAL_DST takes the header as it is).
  mutation->add_remove_headers(options_.dialect == Dialect::kGie ? "x-gateway-destination-endpoint"
                                                                 : "target-pod");
  common->set_clear_route_cache(true);
  phase_ = Phase::kRequestBody;
  SendLocked(std::move(response));
}

void Processor::OnRequestBodyLocked(const ext_proc_v3::HttpBody& body) {
  if (phase_ != Phase::kRequestBody) {
    ProtocolErrorLocked(absl::StatusCode::kFailedPrecondition,
                        phase_ == Phase::kRequestHeaders ? "body_before_headers" : "second_body",
                        phase_ == Phase::kRequestHeaders ? "request_body before request_headers"
                                                         : "request_body after the buffered body");
    return;
  }
  if (body.body().size() > options_.max_body_bytes) {
    ReplyErrorLocked(413,
                     fmt::format("request body of {} bytes is over the limit of {}",
                                 body.body().size(), options_.max_body_bytes),
                     "x-error-request-body-processing");
    return;
  }
  phase_ = Phase::kRouting;
  std::string_view fallback = options_.default_strategy;
  if (fallback.empty() && options_.dialect == Dialect::kGie) {
    fallback = deps_.gateway->default_algorithm();
  }
  std::weak_ptr<Processor> weak = weak_from_this();
  preparing_thread_.store(std::this_thread::get_id());
  deps_.gateway->Prepare(*deps_.io, body.body(), strategy_, user_, fallback,
                         [weak](absl::StatusOr<gateway::PreparedRequest> prepared) {
                           if (auto self = weak.lock()) self->OnPrepared(std::move(prepared));
                         });
  preparing_thread_.store(std::thread::id());
  if (inline_prepared_) {
    auto prepared = std::move(*inline_prepared_);
    inline_prepared_.reset();
    DecideLocked(std::move(prepared));
  }
}

void Processor::OnPrepared(absl::StatusOr<gateway::PreparedRequest> prepared) {
  if (preparing_thread_.load() == std::this_thread::get_id()) {
    // Completed inside Prepare, on the thread that holds mu_ (OnRequestBodyLocked).
    inline_prepared_ = std::move(prepared);
    return;
  }
  common::MutexLock lock(&mu_);
  if (closed_) return;
  DecideLocked(std::move(prepared));
}

void Processor::DecideLocked(absl::StatusOr<gateway::PreparedRequest> prepared) {
  if (!prepared.ok()) {
    deps_.metrics->DecisionFailed();
    ReplyErrorLocked(gateway::HttpStatusFor(prepared.status()),
                     common::AsStd(prepared.status().message()), "x-error-request-body-processing");
    return;
  }
  request_ = deps_.gateway->Admit(*prepared);
  ext_proc_v3::ProcessingResponse response;
  ext_proc_v3::CommonResponse* common = response.mutable_request_body()->mutable_response();
  ext_proc_v3::HeaderMutation* mutation = common->mutable_header_mutation();
  if (prepared->algorithm.empty()) {
    // AIBrix without a strategy: Envoy routes by the model header (the model's HTTPRoute).
    store::ModelPodsRef pods = deps_.store->ReadyPods(prepared->model);
    if (pods == nullptr) {
      deps_.metrics->DecisionFailed();
      ReplyErrorLocked(400, fmt::format("model {} does not exist", prepared->model),
                       "x-error-no-model-backends", prepared->model);
      return;
    }
    if (pods->ready.empty()) {
      deps_.metrics->DecisionFailed();
      ReplyErrorLocked(503, fmt::format("no ready pod for model {}", prepared->model),
                       "x-error-no-model-backends");
      return;
    }
    SetHeader(*mutation, "model", prepared->model);
    mutation->add_remove_headers("target-pod");
    deps_.metrics->RoutedByModel();
  } else {
    std::vector<std::string> excluded;
    if (has_subset_) {
      absl::flat_hash_set<std::string> allowed;
      for (absl::string_view endpoint : absl::StrSplit(subset_, ',', absl::SkipWhitespace())) {
        allowed.insert(std::string(absl::StripAsciiWhitespace(endpoint)));
      }
      if (store::ModelPodsRef pods = deps_.store->ReadyPods(prepared->model)) {
        for (const store::PodRef& pod : pods->ready) {
          const auto port = static_cast<uint16_t>(store::PodServingPort(pod->object));
          if (!allowed.contains(common::FormatHostPort(pod->ip(), port))) {
            excluded.push_back(pod->key);
          }
        }
      }
    }
    auto routed = deps_.gateway->RouteAttempt(*request_, *prepared, std::move(excluded));
    if (!routed.ok()) {
      deps_.metrics->DecisionFailed();
      const absl::Status& st = routed.status();
      if (st.code() == absl::StatusCode::kNotFound) {
        ReplyErrorLocked(400, common::AsStd(st.message()), "x-error-no-model-backends",
                         prepared->model);
      } else if (st.code() == absl::StatusCode::kUnavailable) {
        ReplyErrorLocked(503, common::AsStd(st.message()), "x-error-no-model-backends");
      } else {
        ReplyErrorLocked(gateway::HttpStatusFor(st), common::AsStd(st.message()),
                         "x-error-routing");
      }
      return;
    }
    request_id_ = routed->request_id;
    pod_name_ = routed->decision.pod->name();
    pod_address_ = common::FormatHostPort(routed->host, routed->port);
    algorithm_ = prepared->algorithm;
    if (options_.dialect == Dialect::kGie) {
      SetHeader(*mutation, "x-gateway-destination-endpoint", pod_address_);
      google::protobuf::Struct& lb =
          *(*response.mutable_dynamic_metadata()->mutable_fields())["envoy.lb"]
               .mutable_struct_value();
      (*lb.mutable_fields())["x-gateway-destination-endpoint"].set_string_value(pod_address_);
    } else {
      SetHeader(*mutation, "routing-strategy", algorithm_);
      SetHeader(*mutation, "target-pod", pod_address_);
      SetHeader(*mutation, "x-request-id", request_id_);
    }
    deps_.metrics->Routed();
  }
  common->set_clear_route_cache(true);
  phase_ = Phase::kResponseHeaders;
  SendLocked(std::move(response));
  DrainLocked();
}

void Processor::DrainLocked() {
  while (!waiting_.empty() && !closed_ && phase_ != Phase::kRouting) {
    ext_proc_v3::ProcessingRequest message = std::move(waiting_.front());
    waiting_.pop_front();
    HandleLocked(message);
  }
}

void Processor::OnResponseHeadersLocked(const ext_proc_v3::HttpHeaders& headers) {
  if (phase_ != Phase::kResponseHeaders) {
    ProtocolErrorLocked(absl::StatusCode::kFailedPrecondition, "out_of_order",
                        "response_headers before the request was routed, or twice");
    return;
  }
  if (!absl::SimpleAtoi(common::AsAbsl(HeaderValue(headers.headers(), ":status")), &status_))
    status_ = 0;
  ext_proc_v3::ProcessingResponse response;
  ext_proc_v3::HeaderMutation* mutation =
      response.mutable_response_headers()->mutable_response()->mutable_header_mutation();
  if (options_.dialect == Dialect::kAibrix) {
    SetHeader(*mutation, "x-went-into-resp-headers", "true");
    if (!pod_address_.empty()) {
      SetHeader(*mutation, "request-id", request_id_);
      SetHeader(*mutation, "routing-strategy", algorithm_);
      SetHeader(*mutation, "target-pod", pod_name_);
      SetHeader(*mutation, "target-pod-ip", pod_address_);
    }
  }
  SendLocked(std::move(response));
  if (headers.end_of_stream()) {
    CompleteLocked();
    return;
  }
  phase_ = Phase::kResponseBody;
}

void Processor::OnResponseBodyLocked(const ext_proc_v3::HttpBody& body) {
  if (phase_ != Phase::kResponseBody) {
    ProtocolErrorLocked(absl::StatusCode::kFailedPrecondition, "out_of_order",
                        "response_body before response_headers");
    return;
  }
  if (!body.body().empty() && request_) request_->AnswerBegan();
  usage_.Feed(body.body());
  ext_proc_v3::ProcessingResponse response;
  response.mutable_response_body()->mutable_response();
  SendLocked(std::move(response));
  // Settled at the end, not at the first usage seen: an engine reporting usage on every
  // chunk (continuous usage stats) counts up to its last value.
  if (body.end_of_stream()) CompleteLocked();
}

void Processor::ReplyErrorLocked(int status, std::string_view message,
                                 std::string_view error_header, std::string_view error_value) {
  deps_.metrics->ImmediateResponse(status);
  ext_proc_v3::ProcessingResponse response;
  FillImmediateError(*response.mutable_immediate_response(), status, message, error_header,
                     error_value);
  SendLocked(std::move(response));
  SettleLocked();
  CloseLocked(absl::OkStatus(), StreamEnd::kImmediate);
}

void Processor::ProtocolErrorLocked(absl::StatusCode code, std::string_view kind,
                                    std::string_view detail) {
  deps_.metrics->ProtocolError(kind);
  common::WarnLimited(ProtocolLogLimiter(), "extproc", "closing a stream: {}", detail);
  SettleLocked();
  CloseLocked(absl::Status(code, common::AsAbsl(detail)), StreamEnd::kError);
}

void Processor::CompleteLocked() {
  if (request_) request_->FinishResponse(status_, usage_);
  CloseLocked(absl::OkStatus(), StreamEnd::kCompleted);
}

void Processor::SendLocked(ext_proc_v3::ProcessingResponse response) {
  if (output_ != nullptr) output_->Send(std::move(response));
}

void Processor::CloseLocked(absl::Status status, StreamEnd end) {
  if (closed_) return;
  closed_ = true;
  close_end_ = end;
  phase_ = Phase::kDone;
  waiting_.clear();
  if (output_ != nullptr) output_->Close(std::move(status));
}

void Processor::SettleLocked() {
  if (request_) request_->Finish(std::nullopt);
}

void Processor::Abort(absl::Status status, StreamEnd end) {
  common::MutexLock lock(&mu_);
  if (closed_) return;
  SettleLocked();
  CloseLocked(std::move(status), end);
}

void Processor::OnEnd(StreamEnd end) {
  common::MutexLock lock(&mu_);
  if (ended_) return;
  ended_ = true;
  SettleLocked();
  deps_.metrics->StreamEnded(close_end_.value_or(end));
  closed_ = true;
  phase_ = Phase::kDone;
  waiting_.clear();
  output_ = nullptr;
}

}  // namespace aibrix::extproc
