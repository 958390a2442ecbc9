// The state machine of one Envoy ext_proc stream (one HTTP request), without the network:
// the gRPC server (server.h) feeds it Envoy's messages and carries its answers; the fuzz
// target and the unit tests drive it directly.
//
// One stream, message by message (../shared/protocols/ext_proc.md §2.2; Envoy modes: request
// headers SEND, request body BUFFERED, response headers SEND, response body STREAMED):
//   request_headers  → headers reply: a header mutation (x-went-into-req-headers: true, and
//                      the routing headers a client may not supply removed) + clear_route_cache.
//                      The bearer token (when configured) is checked here, in constant time.
//   request_body     → the gateway's one decision path (Gateway::Prepare → Admit →
//                      RouteAttempt), then a body reply whose header mutation carries it:
//                      AIBrix dialect: routing-strategy + target-pod (ip:port, IPv6 bracketed),
//                      or model: <name> when no strategy is named or configured; GIE dialect:
//                      x-gateway-destination-endpoint + dynamic metadata envoy.lb (the same
//                      ip:port), within the subset hint when Envoy sends one. The body itself
//                      is not echoed (Envoy keeps it; no content-length check).
//   response_headers → passed through (request id and pod added); the HTTP status is kept.
//   response_body    → passed through; the engine's usage is read from the bytes as they go
//                      (UsageScanner: JSON or SSE split anywhere); at end of stream, or once
//                      the usage is known, the request is settled and the stream closed OK
//                      ("continue without me": Envoy streams the rest itself).
//   trailers         → an empty trailers reply.
// The request is admitted after routing and settled exactly once: at the end of the response,
// on an error answer, or when the stream ends early (EOF, cancel, timeout, shutdown: OnEnd).
// Errors before the response started are ImmediateResponses (OpenAI error JSON + x-error-*
// header); messages Envoy must not send (out of order, a second body, an unknown kind) close
// the stream with a gRPC error, which Envoy turns into a 500.
//
// Thread safety: the public methods may be called from any thread; a mutex serialises them
// (a remote tokenization completes on another thread). The output is called with that mutex
// held and must not call back into the processor.
#pragma once

#include <atomic>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "aibrix/common/mutex.h"
#include "aibrix/extproc/metrics.h"
#include "aibrix/extproc/wire.h"
#include "aibrix/gateway/gateway.h"
#include "aibrix/gateway/in_flight.h"
#include "aibrix/gateway/usage_scanner.h"
#include "aibrix/store/store.h"

namespace boost::asio {
class io_context;
}

namespace aibrix::extproc {

// Which gateway's conventions the answers follow.
enum class Dialect {
  kAibrix,  // AIBrix's gateway plugin: routing-strategy + target-pod, or model
  kGie,     // Gateway API Inference Extension endpoint picker
};

struct ProcessorOptions {
  Dialect dialect = Dialect::kAibrix;
  // The algorithm when the request's routing-strategy header names none; empty: AIBrix's
  // default (no strategy: the body reply names the model and Envoy routes by it). The GIE
  // dialect always picks an endpoint, with the gateway's default algorithm when this is empty.
  std::string default_strategy;
  // AIBRIX_AUTH_BEARER_TOKEN: when set, request headers must carry
  // `authorization: Bearer <token>` (else 401).
  std::string bearer_token;
  // Larger request bodies are answered 413.
  size_t max_body_bytes = 8 << 20;
};

// Where a processor's answers go (the gRPC stream, or a test's recorder).
class StreamOutput {
 public:
  virtual ~StreamOutput() = default;
  // Queues one answer; answers leave in the order they were sent.
  virtual void Send(ext_proc_v3::ProcessingResponse response) = 0;
  // Ends the stream with `status` once the queued answers are out (OK: Envoy continues
  // without the processor). Called at most once.
  virtual void Close(absl::Status status) = 0;
};

// What the processor borrows; everything must outlive it.
struct ProcessorDeps {
  gateway::Gateway* gateway = nullptr;
  store::Store* store = nullptr;
  // Where a remote tokenization runs (ModelTokenizers).
  boost::asio::io_context* io = nullptr;
  Metrics* metrics = nullptr;
};

class Processor : public std::enable_shared_from_this<Processor> {
 public:
  // `output` must stay valid until OnEnd returned.
  Processor(const ProcessorOptions& options, ProcessorDeps deps, StreamOutput* output);
  ~Processor();
  Processor(const Processor&) = delete;
  Processor& operator=(const Processor&) = delete;

  // One message from Envoy. Ignored once the stream is closed.
  void OnMessage(const ext_proc_v3::ProcessingRequest& message);
  // The stream is over (how: `end`): settles the request if it is still open, counts the
  // stream, and detaches the output. Idempotent (the first cause counts).
  void OnEnd(StreamEnd end);

  // Settles the request and closes the stream with `status` (an idle timeout, a shutdown);
  // `end` is how the stream counts. Nothing when already closed.
  void Abort(absl::Status status, StreamEnd end);

  // Whether the processor closed the stream (Close was called) or it ended.
  bool closed() const;

 private:
  enum class Phase {
    kRequestHeaders,
    kRequestBody,
    kRouting,  // the body is being prepared and routed; messages wait
    kResponseHeaders,
    kResponseBody,
    kDone,
  };

  void HandleLocked(const ext_proc_v3::ProcessingRequest& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnRequestHeadersLocked(const ext_proc_v3::HttpHeaders& headers,
                              const ext_proc_v3::ProcessingRequest& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnRequestBodyLocked(const ext_proc_v3::HttpBody& body) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Prepare's completion: inline (inside OnRequestBodyLocked, mu_ held by this thread) or
  // later from the tokenizer's thread.
  void OnPrepared(absl::StatusOr<gateway::PreparedRequest> prepared) ABSL_NO_THREAD_SAFETY_ANALYSIS;
  void DecideLocked(absl::StatusOr<gateway::PreparedRequest> prepared)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnResponseHeadersLocked(const ext_proc_v3::HttpHeaders& headers)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnResponseBodyLocked(const ext_proc_v3::HttpBody& body) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Messages that arrived while routing, in order.
  void DrainLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // An ImmediateResponse (the OpenAI error), then close OK; the request is settled.
  void ReplyErrorLocked(int status, std::string_view message, std::string_view error_header,
                        std::string_view error_value = "true") ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A message Envoy must not send: close with `code` and count `kind`.
  void ProtocolErrorLocked(absl::StatusCode code, std::string_view kind, std::string_view detail)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The response is over: settle with its status and usage, close OK.
  void CompleteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendLocked(ext_proc_v3::ProcessingResponse response) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CloseLocked(absl::Status status, StreamEnd end) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SettleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const ProcessorOptions& options_;
  const ProcessorDeps deps_;

  // The thread inside Prepare (so an inline completion is recognised and not re-locked).
  std::atomic<std::thread::id> preparing_thread_{};

  mutable common::Mutex mu_;
  StreamOutput* output_ ABSL_GUARDED_BY(mu_);
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kRequestHeaders;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<StreamEnd> close_end_ ABSL_GUARDED_BY(mu_);  // how our Close ended it
  // From the request headers.
  std::string strategy_ ABSL_GUARDED_BY(mu_);
  std::string user_ ABSL_GUARDED_BY(mu_);    // the `user` header (vtc-basic end user)
  std::string subset_ ABSL_GUARDED_BY(mu_);  // GIE subset hint, "ip:port,ip:port"
  bool has_subset_ ABSL_GUARDED_BY(mu_) = false;
  // An inline Prepare completion, taken by OnRequestBodyLocked.
  std::optional<absl::StatusOr<gateway::PreparedRequest>> inline_prepared_ ABSL_GUARDED_BY(mu_);
  std::deque<ext_proc_v3::ProcessingRequest> waiting_ ABSL_GUARDED_BY(mu_);
  // From the decision on.
  std::unique_ptr<gateway::InFlightRequest> request_ ABSL_GUARDED_BY(mu_);
  std::string request_id_ ABSL_GUARDED_BY(mu_);
  std::string pod_name_ ABSL_GUARDED_BY(mu_);
  std::string pod_address_ ABSL_GUARDED_BY(mu_);
  std::string algorithm_ ABSL_GUARDED_BY(mu_);
  int status_ ABSL_GUARDED_BY(mu_) = 0;
  gateway::UsageScanner usage_ ABSL_GUARDED_BY(mu_);
};

}  // namespace aibrix::extproc
