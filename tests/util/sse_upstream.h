// A fake OpenAI-compatible streaming engine for tests and benchmarks: a TCP server on
// 127.0.0.1:<port chosen by the kernel> that answers every request (any method and target,
// Content-Length framed; keep-alive, one at a time per connection) with a chunked SSE stream:
// `events` text_completion events, then `data: [DONE]`, one write each, then the last chunk.
// Every connection lives on one epoll thread, so thousands of concurrent streams cost no
// thread each.
//
// Pacing: a stream's first event goes out as soon as its request is read. The others wait
// for the gate, which opens (for good) once `gate_streams` streams have started, when
// `gate_timeout` has passed since the first one started, or when OpenGate() is called —
// so a test can hold N streams open together. After that each stream gets one event per
// `interval`, the streams staggered over the interval.
//
// A peer that closes or resets a connection mid-response is counted in aborted(): the way a
// test sees that a proxy cancelled its upstream call.
//
// Thread safety: Start and Stop (and the destructor) from the owning thread; port() once
// Start returned; the counters, gate_open() and OpenGate() from any thread. Everything else
// runs on the upstream's own thread.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "absl/status/status.h"

namespace aibrix::testing {

struct SseUpstreamOptions {
  int events = 16;                                // completion events per stream (>= 1)
  std::chrono::milliseconds interval{250};        // between two events of one stream, once gated
  int gate_streams = 1;                           // 0: only gate_timeout or OpenGate() open it
  std::chrono::milliseconds gate_timeout{20000};  // counted from the first stream's start
  std::string model = "llama";                    // the events' "model" field
  std::string id = "cmpl-sse-upstream";           // the events' "id" field
};

class SseUpstream {
 public:
  explicit SseUpstream(SseUpstreamOptions options);
  ~SseUpstream();  // Stop()
  SseUpstream(const SseUpstream&) = delete;
  SseUpstream& operator=(const SseUpstream&) = delete;

  // Listens on 127.0.0.1:0 and starts the thread. Internal error (with errno's text) when a
  // socket call fails; FailedPrecondition when already started.
  absl::Status Start();
  // Stops the thread and closes every connection (not counted as aborted). Idempotent.
  void Stop();

  // The listening port; 0 before Start.
  int port() const { return port_; }
  // Opens the gate now (see the header comment); no effect when already open.
  void OpenGate() { open_gate_requested_.store(true); }
  bool gate_open() const { return gate_open_.load(); }

  // Responses begun (requests read), ended with the last chunk, and cut by the peer.
  int started() const { return started_.load(); }
  int finished() const { return finished_.load(); }
  int aborted() const { return aborted_.load(); }
  // The most responses ever in progress at the same time.
  int peak_streams() const { return peak_streams_.load(); }
  // Connections accepted, and those currently open.
  int accepted() const { return accepted_.load(); }
  int open_connections() const { return open_connections_.load(); }

 private:
  static constexpr int kSlots = 10;  // streams are staggered over the interval in slots
  struct Conn {
    int fd = -1;
    std::string in;
    std::string out;
    int sent = -1;  // events sent in the current response; -1 while reading a request
    int slot = 0;
    bool want_write = false;
  };

  void Loop(std::stop_token stop);
  void Accept();
  void OnReadable(Conn& conn);
  void Tick(int slot);
  // True once the gate is open (it stays open).
  bool GateOpen();
  std::string Event(int index) const;
  void Send(Conn& conn, std::string bytes);
  // Writes what is queued; false when the connection was dropped (`conn` is destroyed).
  bool Flush(Conn& conn);
  // Closes and forgets the connection (`conn` is destroyed).
  void Drop(Conn& conn);

  // Constant after construction.
  const SseUpstreamOptions options_;
  // Set by Start, constant until Stop.
  int listen_fd_ = -1;
  int epoll_ = -1;
  int port_ = 0;
  // The upstream thread's (the owner's after Stop joined it).
  std::chrono::steady_clock::time_point gate_deadline_{};
  std::unordered_map<int, std::unique_ptr<Conn>> conns_;
  // Written by the upstream thread, read anywhere.
  std::atomic<bool> gate_open_{false};
  std::atomic<int> started_{0};
  std::atomic<int> finished_{0};
  std::atomic<int> aborted_{0};
  std::atomic<int> peak_streams_{0};
  std::atomic<int> accepted_{0};
  std::atomic<int> open_connections_{0};
  // Written anywhere, read by the upstream thread.
  std::atomic<bool> open_gate_requested_{false};
  std::jthread thread_;  // the owner's
};

}  // namespace aibrix::testing
