// SimHttpServer: engine-sim's HTTP face — vLLM's OpenAI-compatible API (/v1/completions,
// /v1/chat/completions with SSE streaming, /v1/models), /health, /version, /tokenize,
// /detokenize, /reset_prefix_cache, /metrics, and the simulator's own /sim/cache (ground
// truth of the prefix cache) and /sim/fault (fault injection).
//
// Errors are vLLM's current shape {"error": {"message", "type", "param", "code"}} with the
// HTTP status equal to `code`. Bad input never takes the process down.
//
// Thread safety: handlers run on the httplib thread pool (`http_threads` threads); all
// shared state lives in the Engine and the KvEventOutput, which are thread-safe.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine.h"
#include "event_output.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace aibrix::enginesim {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0 = any free port
  int threads = 64;
  size_t max_body_bytes = 8 << 20;
  int default_max_tokens = 16;  // output length when a request gives no max_tokens
};

class SimHttpServer {
 public:
  // `engine` must outlive the server; `events` may be null (no KV events).
  SimHttpServer(HttpOptions options, Engine* engine, KvEventOutput* events);
  ~SimHttpServer();
  SimHttpServer(const SimHttpServer&) = delete;
  SimHttpServer& operator=(const SimHttpServer&) = delete;

  // Binds the listening socket; returns the bound port. Errors: Unavailable (port busy).
  absl::StatusOr<int> Bind();
  // Serves until Stop(). REQUIRES: Bind() succeeded.
  void Serve();
  // Makes Serve() return. Safe from any thread.
  void Stop();

 private:
  // Route registration, one group per step.
  void Register();
  void RegisterErrorHandlers();    // 404/413/500 bodies in vLLM's error shape
  void RegisterInfoRoutes();       // /health, /version, /v1/models
  void RegisterGenerateRoutes();   // /v1/completions, /v1/chat/completions
  void RegisterTokenizerRoutes();  // /tokenize, /detokenize
  void RegisterCacheRoutes();      // /reset_prefix_cache, /metrics, /sim/cache

  // Handlers (each sends the whole response, errors included).
  void HandleGenerate(const httplib::Request& req, httplib::Response& res, bool chat);
  void HandleTokenize(const httplib::Request& req, httplib::Response& res);
  void HandleDetokenize(const httplib::Request& req, httplib::Response& res);
  void HandleFault(const httplib::Request& req, httplib::Response& res);

  const HttpOptions options_;
  Engine* const engine_;
  KvEventOutput* const events_;
  std::unique_ptr<httplib::Server> server_;
  std::atomic<bool> healthy_{true};
  std::atomic<uint64_t> next_id_{1};
  std::atomic<int> listen_fd_{-1};
};

}  // namespace aibrix::enginesim
