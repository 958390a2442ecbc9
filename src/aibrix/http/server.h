// The service's HTTP/1.1 server, event-driven on Boost.Asio: a fixed pool of I/O threads
// (one io_context each; a connection lives on one of them) serves every connection, so an
// idle, slow or streaming connection costs a socket, a timer and a few hundred bytes, never
// a thread. Requests are framed by http/parser (Content-Length or chunked bodies,
// Expect: 100-continue, pipelining, leading empty lines skipped); responses are written with
// one gathered write; streamed responses use chunked transfer coding.
//
// Limits and deadlines (ServerOptions), each answered as JSON `{"error": ...}`:
//   request target over max_target_bytes → 414; head over max_head_bytes → 431; body over
//   max_body_bytes → 413 (the rest of the body is read and discarded up to
//   max_discard_bytes so the client sees the answer: lingering close); malformed framing or
//   HTTP/1.1 without Host → 400; a head not complete within head_timeout, or a body with no
//   progress for body_timeout → 408 and close; keep-alive idle_timeout; a client that takes
//   no bytes for write_timeout is cut; past max_connections a new connection is answered
//   503 and closed. Unknown path → 404, known path with another method → 405, handler
//   exception → 500. Nothing is allocated from Content-Length before the bytes arrive.
//
// Handlers run on the connection's I/O thread and must not block (health, metrics, admin
// reads, routing; work that waits — an upstream call, a remote tokenization — goes through
// the asynchronous client). An AsyncHandler answers later, from any thread, through its
// Exchange.
//
// Shutdown: BeginShutdown() stops accepting; Stop(grace) waits until every in-flight
// exchange has finished or the grace period is over, then cuts what is left (each cut
// exchange's cancel callback runs, so its owner settles it) and joins the threads.
//
// Thread safety: add routes before Start(); every other method is safe from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "aibrix/http/exchange.h"
#include "aibrix/http/router.h"
#include "aibrix/http/types.h"
#include "prometheus/registry.h"

namespace aibrix::http {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8090;     // 0 picks a free port (see port())
  int io_threads = 0;  // 0: the number of cores
  size_t max_connections = 20000;
  size_t max_target_bytes = 8 << 10;
  size_t max_head_bytes = 64 << 10;
  size_t max_body_bytes = 8 << 20;
  size_t max_discard_bytes = 1 << 20;              // read and dropped after a 413 before closing
  std::chrono::milliseconds head_timeout{10000};   // whole head, from its first byte
  std::chrono::milliseconds body_timeout{10000};   // between body reads
  std::chrono::milliseconds idle_timeout{60000};   // keep-alive, between requests
  std::chrono::milliseconds write_timeout{30000};  // a client taking none of our bytes
  std::chrono::milliseconds linger_timeout{2000};  // draining before a server-side close
  size_t stream_buffer_bytes = 1 << 20;  // queued per streamed response before back-pressure
};

using Handler = std::function<void(const Request&, Response&)>;
using AsyncHandler = std::function<void(std::shared_ptr<Exchange>)>;

class Server {
 public:
  Server(ServerOptions options, prometheus::Registry& registry);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Routes (Router's pattern syntax); the pattern names the route in metrics.
  void Route(std::string_view method, std::string_view pattern, Handler handler);
  void RouteAsync(std::string_view method, std::string_view pattern, AsyncHandler handler);

  // Binds, listens and starts the threads. Error if the address cannot be bound or a route
  // pattern was malformed.
  absl::Status Start();
  // Stops accepting new connections; open ones keep being served. Idempotent.
  void BeginShutdown();
  // BeginShutdown, then waits up to `grace` for in-flight exchanges, then closes every
  // connection and joins the threads. Idempotent.
  void Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(0));

  int port() const { return port_; }
  size_t open_connections() const;
  size_t in_flight() const;

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace aibrix::http
