// The Envoy external processing server: envoy.service.ext_proc.v3.ExternalProcessor/Process
// over plaintext HTTP/2 (gRPC), one bidirectional stream per HTTP request, each driven by a
// Processor (processor.h) on the gateway's one decision path; and grpc.health.v1.Health/Check
// for "" and "gateway-plugin" (AIBrix's probes) and "liveness", "readiness" and the
// ext_proc service name (GIE's), SERVING while the service is ready (/readyz).
//
// gRPC's async API: `threads` completion queues, each driven by one thread that accepts
// streams and runs every event of its streams inline — the read, the processor, the write —
// with no hop to another thread: gRPC's poll engine (TuneGrpcForProcess) polls a connection
// on the queue that accepted it. (gRPC 1.51's callback API hands every message to another
// thread, which cost more than the processing.) No thread per stream; reads are taken one
// at a time, answers queue in order behind the one write in flight. Limits: receive
// messages up to max_receive_bytes (a whole buffered request body), HTTP/2 concurrent
// streams per connection up to max_concurrent_streams. A remote tokenization runs on the
// server's own I/O thread. grpc.health.v1 is on the callback API (rare calls).
//
// Ends of a stream, each settling its request once: Envoy's half-close (EOF) or reset
// (CANCELLED: client gone, Envoy's message timeout), our own close (answer complete, error),
// no message for idle_timeout (SweepIdle: DEADLINE_EXCEEDED), and Stop (streams still open
// after the grace period are cancelled).
//
// Thread safety: Start/Stop from one thread; SetServing, SweepIdle and the accessors from any.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "aibrix/common/clock.h"
#include "aibrix/extproc/processor.h"
#include "aibrix/gateway/gateway.h"
#include "aibrix/store/store.h"
#include "prometheus/registry.h"

namespace aibrix::extproc {

struct ServerOptions {
  // host:port; ":port" listens on every interface; port 0 picks a free one (port()).
  std::string address = ":50052";
  ProcessorOptions processor;
  // Largest message taken from Envoy (a whole buffered body plus framing): at least
  // AIBRIX_GRPC_MAX_MESSAGE_SIZE_BYTES, and above the body limit so that a body over it is
  // answered 413 rather than refused by gRPC.
  size_t max_receive_bytes = 4 << 20;
  int max_concurrent_streams = 65536;
  // Completion queues, one thread each (0: one per core).
  int threads = 0;
  // After each event a queue's thread keeps polling for this long before it sleeps (0: sleep
  // at once). A stream's next message then usually finds the thread awake: no wake-up on the
  // exchange's path, at the cost of up to `spin` of CPU per quiet spell.
  std::chrono::microseconds spin{50};
  // A stream with no message from Envoy for this long is closed (DEADLINE_EXCEEDED).
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(10)};
  const common::Clock* clock = &common::SystemClock::Instance();
};

// Process-wide settings for gRPC, part of server::ApplyProcessSettings (aibrix-cache's main
// and the benchmarks that run the service). Call first thing in main(), before any thread
// starts and before gRPC is used:
// - gRPC's `poll` engine, unless GRPC_POLL_STRATEGY is set. With the default `epoll1`, one
//   thread polls every socket and hands each completion to the thread of the call's queue: a
//   thread wake-up per message. Under `poll`, a connection is polled by the queue that
//   accepted it and its messages run there. Measured with extproc-bench (2 queues, 2 cores,
//   interleaved): p50 331-352 → 227-242 µs, p99 725-914 → 442-524 µs, 10.8-11.5k → 13.2-13.5k
//   exchanges/s.
// - Abseil's lock-order checks off: gRPC locks absl::Mutex on every message, and Debian's
//   Abseil would update its lock graph on each one.
void TuneGrpcForProcess();

class Server {
 public:
  // Nothing is owned; everything must outlive the Server.
  Server(ServerOptions options, gateway::Gateway& gateway, store::Store& store,
         prometheus::Registry& registry);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts serving (health NOT_SERVING until SetServing(true)). InvalidArgument for
  // a bad address, Unavailable when it cannot be bound.
  absl::Status Start();
  // Waits up to `grace` for open streams to end, then cancels the rest (their requests
  // settle) and stops. Idempotent.
  void Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(0));
  // The health status every health service name reports.
  void SetServing(bool serving);
  // Closes streams idle for longer than idle_timeout; returns how many.
  size_t SweepIdle();

  int port() const;
  size_t open_streams() const;

  class Impl;  // public so the stream calls (server.cc) can name it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace aibrix::extproc
