// The gateway: the one request path from a client's body to an engine pod. It serves
// POST /cache/route and /cache/done (a gateway that proxies by itself asks where to send a
// request and reports when it is done) and the OpenAI-compatible proxy (POST
// /v1/completions, /v1/chat/completions; GET /v1/models): parse the body, tokenize, route,
// admit, forward, relay the response (SSE streams unbuffered, with back-pressure), settle.
//
// The decision steps are public and shared with Envoy's external processor (extproc/), so
// both front doors run one code path: Prepare (parse, choose the algorithm, tokenize), Admit
// (an InFlightRequest), RouteAttempt (route and count the attempt on the pod), and
// InFlightRequest::FinishResponse (settle with the engine's usage read by a UsageScanner).
//
// Proxy semantics:
//  * the request is admitted once (InFlightRequest) and settled exactly once, whatever ends it;
//  * an upstream failure that provably never reached the engine (connect refused, reset
//    before a byte was written) is retried once on another pod; nothing else is retried;
//  * before the response head: 504 for a timeout, 502 for resets, garbage or bad framing
//    (counted by kind); after it: the client connection is aborted, never ended cleanly;
//  * the upstream timeout is a deadline for the whole response; a client that goes away
//    cancels the upstream request at once;
//  * the engine's usage is read from the relayed bytes (UsageScanner), never buffered.
//
// /cache/route entries with a request_id and no /cache/done expire after route_ttl (Sweep).
//
// Tokenization (ModelTokenizers) is asynchronous: every route is answered from the request's
// I/O thread, none needs the server's worker pool.
//
// Thread safety: handlers run concurrently on the HTTP server's I/O threads; the Gateway's own
// state is the upstream client (internally locked), the route-lease table (locked) and
// prometheus metrics.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "aibrix/common/mutex.h"
#include "aibrix/gateway/in_flight.h"
#include "aibrix/gateway/model_tokenizers.h"
#include "aibrix/gateway/request_body.h"
#include "aibrix/http/client.h"
#include "aibrix/http/server.h"
#include "aibrix/routing/algorithm.h"
#include "aibrix/store/store.h"
#include "aibrix/tracking/request_tracker.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"

namespace aibrix::gateway {

struct GatewayOptions {
  std::string default_algorithm = "random";
  http::ClientOptions upstream;
  // /cache/route request ids not /cache/done'd within this time are settled by Sweep.
  std::chrono::milliseconds route_ttl{std::chrono::minutes(10)};
  // Longest candidate list a /cache/route answer carries.
  size_t max_candidates = 64;
};

// The HTTP status for a routing or tokenization error (400, 404, 503, 504 or 500).
int HttpStatusFor(const absl::Status& status);

// The body of a routing or proxy request, which must name a model. ParseRequestBody's errors,
// or InvalidArgument when `model` is missing.
absl::StatusOr<RequestBody> ParseModelRequest(std::string_view body);

// A request ready to route: its body parsed, its algorithm chosen, its prompt tokenized.
struct PreparedRequest {
  std::string model;
  // Empty when neither the request nor the configuration names one (only Envoy's AIBrix
  // dialect allows that: Envoy then routes by model).
  std::string algorithm;
  std::vector<uint32_t> tokens;
  bool stream = false;
  std::string user;  // the end user for vtc-basic ("" = anonymous)
};

class Gateway {
 public:
  // Nothing is owned; everything must outlive the Gateway.
  Gateway(store::Store& store, const routing::Router& router, const ModelTokenizers& tokenizers,
          tracking::RequestTracker& tracker, GatewayOptions options,
          prometheus::Registry& registry);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Registers the routes on `http` (before it starts).
  void Register(http::Server& http);
  // Settles /cache/route requests older than route_ttl (returns how many) and closes
  // upstream connections idle too long.
  size_t Sweep();

  // A routing decision, the pod's serving address and the attempt's request id.
  struct Routed {
    routing::Decision decision;
    std::string host;
    uint16_t port = 0;
    std::string request_id;
  };
  // Routes one request; `user` is the end user for vtc-basic ("" = anonymous).
  absl::StatusOr<Routed> RouteTo(const std::string& algorithm, const std::string& model,
                                 std::span<const uint32_t> tokens, const std::string& request_id,
                                 const std::string& user, std::vector<std::string> exclude) const;
  std::string NewRequestId();

  // Parses `body` (ParseModelRequest), chooses the algorithm — `strategy` (the request's
  // routing-strategy header) when non-empty, else `default_algorithm` (which may be empty:
  // no strategy) — takes the end user from `user_header` (AIBrix's `user` header) when
  // non-empty, else from the body's `user`, and tokenizes the prompt
  // (ModelTokenizers::TokenizeBody); then `done(absl::StatusOr<PreparedRequest>)` runs exactly
  // once, inline or later on `io`'s thread. Errors: the parse's and the tokenizer's
  // InvalidArgument; InvalidArgument for an algorithm the router does not know.
  template <typename Done>
  void Prepare(boost::asio::io_context& io, std::string_view body, std::string_view strategy,
               std::string_view user_header, std::string_view default_algorithm, Done done) const {
    auto parsed = ParseModelRequest(body);
    if (!parsed.ok()) {
      done(absl::StatusOr<PreparedRequest>(parsed.status()));
      return;
    }
    if (!user_header.empty()) parsed->user = std::string(user_header);
    std::string algorithm(strategy.empty() ? default_algorithm : strategy);
    if (!algorithm.empty() && !router_.Has(algorithm)) {
      done(absl::StatusOr<PreparedRequest>(absl::InvalidArgumentError(
          "unknown algorithm '" + algorithm + "' (known: " + router_.NamesJoined() + ")")));
      return;
    }
    tokenizers_.TokenizeBody(
        io, std::move(*parsed),
        [this, algorithm = std::move(algorithm), done = std::move(done)](
            RequestBody& body, absl::StatusOr<std::vector<uint32_t>> tokens) mutable {
          if (!tokens.ok()) {
            router_.CountTokenizeFailure(algorithm, body.model);
            done(absl::StatusOr<PreparedRequest>(tokens.status()));
            return;
          }
          done(absl::StatusOr<PreparedRequest>(
              PreparedRequest{std::move(body.model), std::move(algorithm), std::move(*tokens),
                              body.stream, body.user.value_or("")}));
        });
  }
  // Admits `request` to the tracker (InFlightRequest); it settles exactly once.
  std::unique_ptr<InFlightRequest> Admit(const PreparedRequest& request);
  // Routes `prepared` (not to the pods in `tried`) under a new request id and counts the
  // attempt on the chosen pod (releasing the previous attempt of `request`). The router's
  // errors: NotFound for an unknown model, Unavailable when no ready pod is left.
  absl::StatusOr<Routed> RouteAttempt(InFlightRequest& request, const PreparedRequest& prepared,
                                      std::vector<std::string> tried);
  const std::string& default_algorithm() const { return options_.default_algorithm; }
  bool HasAlgorithm(std::string_view name) const { return router_.Has(name); }

 private:
  friend class ProxyCall;

  void HandleRoute(std::shared_ptr<http::Exchange> exchange);
  // The /cache/route answer once the body's tokens are known.
  void AnswerRoute(const RequestBody& body, const absl::StatusOr<std::vector<uint32_t>>& tokens,
                   http::Response& res);
  void HandleDone(const http::Request& req, http::Response& res);
  void HandleModels(const http::Request& req, http::Response& res);
  void HandleCompletion(std::shared_ptr<http::Exchange> exchange);
  // One proxied request's answer, counted by pod and status.
  void CountProxied(std::string_view pod_key, int status);

  store::Store& store_;
  const routing::Router& router_;
  const ModelTokenizers& tokenizers_;
  tracking::RequestTracker& tracker_;
  const GatewayOptions options_;
  http::Client upstream_;
  std::atomic<uint64_t> next_request_id_{0};
  const uint64_t id_prefix_;

  // /cache/route ids in admission order (so expiry pops from the front).
  struct Lease {
    std::chrono::steady_clock::time_point expires;
    std::string request_id;
  };
  common::Mutex leases_mu_;
  std::deque<Lease> leases_ ABSL_GUARDED_BY(leases_mu_);

  prometheus::Family<prometheus::Counter>& proxy_requests_;
  prometheus::Counter& retries_;
  prometheus::Family<prometheus::Counter>& upstream_errors_;
  prometheus::Counter& expired_routes_;
};

}  // namespace aibrix::gateway
