// The service's HTTP server: cpp-httplib with a bounded thread pool, JSON errors for every
// failure (unknown path 404, body over the limit 413, handler exception 500), per-route
// request metrics, and a bound port even when asked for port 0.
//
// Thread safety: register routes before Start(); handlers run concurrently on the pool.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/status.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace aibrix::server {

using Request = httplib::Request;
using Response = httplib::Response;
using Handler = std::function<void(const Request&, Response&)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8090;  // 0 picks a free port
  size_t max_body_bytes = 8 << 20;
  int threads = 64;
};

// Writes `{"error": {"message", "type", "code"}}` with `status`. `type` follows OpenAI's
// names (invalid_request_error, not_found_error, ...); `code` is the HTTP status.
void SendError(Response& res, int status, std::string_view message,
               std::string_view type = "invalid_request_error");
// Writes `body` as application/json with `status`.
void SendJson(Response& res, const nlohmann::json& body, int status = 200);
// Parses the request body as a JSON object; on failure writes a 400 and returns nullopt.
std::optional<nlohmann::json> ParseJsonBody(const Request& req, Response& res);

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, prometheus::Registry& registry);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // `pattern` is an httplib pattern (regex); `route` names it in metrics and logs.
  void Get(const std::string& pattern, const std::string& route, Handler handler);
  void Post(const std::string& pattern, const std::string& route, Handler handler);

  // Binds and starts serving on a background thread. Error if the address cannot be bound.
  absl::Status Start();
  // Stops accepting and waits for the listener thread. Idempotent.
  void Stop();
  // The bound port (valid after Start).
  int port() const { return port_; }

 private:
  Handler Instrument(const std::string& route, Handler handler);

  const HttpServerOptions options_;
  httplib::Server server_;
  std::thread listener_;
  std::atomic<bool> listener_done_{false};
  int port_ = 0;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& latency_;
};

}  // namespace aibrix::server
