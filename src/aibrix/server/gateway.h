// The routing front door: POST /cache/route and /cache/done (a gateway that proxies by
// itself asks where to send a request and reports when it is done), and the OpenAI-compatible
// proxy (POST /v1/completions, /v1/chat/completions, GET /v1/models) that routes, forwards to
// the chosen engine pod (SSE streams pass through unbuffered) and settles the request.
//
// Request accounting: a routed request is AddRequest'ed on its pod before forwarding and
// DoneRequest'ed exactly once when the response ends — normally, on upstream error, or when
// the client disconnects. The request tracker (trace and output predictor) is told once per
// client request: admitted when first routed, finished with the engine's usage tokens (from
// the body or the stream) when the response ends. An upstream failure before any response byte is
// retried once on another pod; a timeout before the first byte is a 504.
//
// Thread safety: handlers run concurrently on the HTTP pool; the Gateway's own state is the
// upstream pool (internally locked), atomics and prometheus metrics.
#pragma once

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "aibrix/routing/algorithm.h"
#include "aibrix/server/http_server.h"
#include "aibrix/server/model_tokenizers.h"
#include "aibrix/server/request_body.h"
#include "aibrix/server/upstream_pool.h"
#include "aibrix/store/store.h"
#include "aibrix/tracking/request_tracker.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"

namespace aibrix::server {

struct GatewayOptions {
  std::string default_algorithm = "random";
  std::chrono::milliseconds upstream_connect_timeout{2000};
  std::chrono::milliseconds upstream_timeout{300000};  // until the first response byte
};

// The HTTP status for a routing or tokenization error (400, 404, 503, 504 or 500).
int HttpStatusFor(const absl::Status& status);

class Gateway {
 public:
  // Nothing is owned; everything must outlive the Gateway.
  Gateway(store::Store& store, const routing::Router& router, const ModelTokenizers& tokenizers,
          tracking::RequestTracker& tracker, GatewayOptions options,
          prometheus::Registry& registry);
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Registers the routes on `http` (before it starts).
  void Register(HttpServer& http);

 private:
  struct Routed {
    routing::Decision decision;
    std::string address_host;
    int port = 0;
  };

  void HandleRoute(const Request& req, Response& res);
  void HandleDone(const Request& req, Response& res);
  void HandleModels(const Request& req, Response& res);
  void HandleCompletion(const Request& req, Response& res);

  // The body of a routing or proxy request, which must name a model; on failure writes the
  // 400 and returns nullopt.
  std::optional<RequestBody> ParseModelRequest(const Request& req, Response& res);
  // Token ids of a request body: token_ids, prompt (string or token array) or messages
  // (tokenized for body.model).
  absl::StatusOr<std::vector<uint32_t>> TokensOf(RequestBody& body) const;
  // Routes and resolves the pod's serving address.
  absl::StatusOr<Routed> RouteTo(const std::string& algorithm, const std::string& model,
                                 std::span<const uint32_t> tokens, const std::string& request_id,
                                 std::vector<std::string> exclude) const;
  // The algorithm a proxy request asks for (header routing-strategy) or the default.
  std::string AlgorithmFor(const Request& req) const;
  std::string NewRequestId();
  // Records the routed request on its pod (AddRequest).
  void Admit(const std::string& request_id, const std::string& model, const Routed& routed);
  // Forwards a non-streaming request; returns false if it failed before any response byte
  // (then `error` says why). On success, `output_tokens` gets the usage the engine reported.
  bool ForwardBuffered(const Request& req, const Routed& routed, Response& res,
                       httplib::Error* error, std::optional<int64_t>* output_tokens);
  // Forwards a streaming request; returns false if it failed before the response headers.
  // Once the stream ends (or the client goes away) the request is settled: DoneRequest and
  // the tracker with the usage seen in the stream.
  bool ForwardStream(const Request& req, const Routed& routed, const std::string& request_id,
                     const std::string& model, int64_t input_tokens, Response& res,
                     httplib::Error* error);

  store::Store& store_;
  const routing::Router& router_;
  const ModelTokenizers& tokenizers_;
  tracking::RequestTracker& tracker_;
  const GatewayOptions options_;
  UpstreamPool upstreams_;
  std::atomic<uint64_t> next_request_id_{0};
  const uint64_t id_prefix_;

  prometheus::Family<prometheus::Counter>& proxy_requests_;
  prometheus::Counter& retries_;
  prometheus::Family<prometheus::Counter>& upstream_errors_;
};

}  // namespace aibrix::server
