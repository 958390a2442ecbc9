// The service's HTTP/1.1 server: keep-alive connections served by a bounded pool of worker
// threads (a connection holds a worker while it is open), requests framed by http_parser
// (Content-Length or chunked bodies, Expect: 100-continue, pipelining), bodies read with
// large reads straight into the request, responses written with one writev, streamed
// responses (a chunked content provider) written as chunked transfer coding. JSON errors for
// every failure: unknown path 404, malformed request 400, head over 64 KiB 431, body over the
// limit 413, handler exception 500. Per-route request metrics; binds port 0 to a free port.
//
// Handlers see cpp-httplib's Request/Response types (the proxy's upstream side uses
// httplib::Client). Only chunked content providers are supported for streaming.
//
// Thread safety: register routes before Start(); handlers run concurrently on the pool.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
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

  // `pattern` is a regular expression over the decoded path (its groups in req.matches); a
  // pattern without regex syntax is matched as a plain string. `route` names it in metrics
  // and logs.
  void Get(const std::string& pattern, const std::string& route, Handler handler);
  void Post(const std::string& pattern, const std::string& route, Handler handler);

  // Binds, listens and starts serving on background threads. Error if the address cannot
  // be bound.
  absl::Status Start();
  // Stops accepting, closes open connections and waits for the threads. Idempotent.
  void Stop();
  // The bound port (valid after Start).
  int port() const { return port_; }

 private:
  struct RouteEntry {
    std::string method;
    std::string path;  // plain patterns
    std::optional<std::regex> pattern;
    Handler handler;
  };
  struct Pending {
    int fd;
    std::string remote_addr;
  };

  void Add(const std::string& method, const std::string& pattern, const std::string& route,
           Handler handler);
  Handler Instrument(const std::string& route, Handler handler);
  void AcceptLoop();
  void WorkerLoop();
  // Serves one connection until it closes, fails or the server stops.
  void Serve(int fd, const std::string& remote_addr);
  // Runs the matching handler (or writes the 404 / 500 error) into `res`.
  void Dispatch(Request& req, Response& res);

  const HttpServerOptions options_;
  std::vector<RouteEntry> routes_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> pending_;        // accepted, waiting for a worker; guarded by mu_
  absl::flat_hash_set<int> open_fds_;  // connections being served; guarded by mu_
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& latency_;
};

}  // namespace aibrix::server
