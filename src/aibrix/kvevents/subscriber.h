// The KV event subscriber of one pod: for each data-parallel rank of the pod, a ZMQ SUB
// socket on the engine's publisher and a DEALER on its replay socket; sequence tracking,
// gap repair by replay, restart detection, reconnection with jittered exponential backoff;
// decoded batches go through a bounded queue to an applier thread that calls the EventSink.
//
// Guarantee to the sink: between two ClearPod(pod) calls, the batches applied for one rank
// form a contiguous run of sequence numbers, each applied once. Whenever that cannot be kept
// (gap that replay cannot cover, engine restart, undecodable batch, queue overflow) the pod
// is cleared first and the run starts again. See docs/kvevents.md for the algorithm.
//
// Thread safety: Start/Stop/stats may be called from any thread. Two threads per subscriber:
// the socket thread owns every ZMQ socket and all sequence state; the applier thread owns
// the sink calls. They share only the queue (guarded by mu_) and atomic counters.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "aibrix/common/clock.h"
#include "aibrix/common/kv_events.h"
#include "aibrix/kvevents/metrics.h"

namespace zmq {
class context_t;
}

namespace aibrix::kvevents {

// The publisher of one data-parallel rank.
struct RankEndpoint {
  std::string endpoint;         // tcp://10.0.0.5:5557, tcp://[fd00::5]:5557
  std::string replay_endpoint;  // empty: no replay socket
};

struct SubscriberOptions {
  kv::PodSource source;
  std::vector<RankEndpoint> ranks;  // index = data-parallel rank; at least one
  std::string topic_filter;         // SUB prefix filter; "" = all topics
  std::chrono::milliseconds poll_interval{100};
  std::chrono::milliseconds replay_timeout{5000};
  // Reconnection (libzmq ZMQ_RECONNECT_IVL / _MAX): a retry waits the current interval plus
  // a random jitter of up to `reconnect_initial`; the interval starts at `reconnect_initial`
  // and doubles up to `reconnect_max`. Socket creation errors are retried the same way
  // (jitter ±reconnect_jitter).
  std::chrono::milliseconds reconnect_initial{1000};
  std::chrono::milliseconds reconnect_max{30000};
  double reconnect_jitter = 0.2;
  // ZMTP heartbeats detect a silently dead peer (0 disables).
  std::chrono::milliseconds heartbeat_interval{5000};
  // Ask for everything the engine still buffers when first connected (best effort: a replay
  // starting later than 0 is accepted at start-up).
  bool replay_on_start = true;
  size_t queue_capacity = 4096;            // batches between socket and applier threads
  size_t max_held_during_replay = 100000;  // live batches held while a replay runs
  int max_consecutive_replays = 3;         // then gaps are resolved by clearing
  int sub_rcvhwm = 100000;
  zmq::context_t* context = nullptr;  // shared context; null: the subscriber makes its own
  // The replay timeout, the reconnect deadlines after a socket error and the processing-time
  // metric are measured on this clock (Now()); it must outlive the subscriber. Tests pass a
  // FakeClock and advance it instead of waiting. libzmq's own reconnection timer and the
  // poll wait (at most poll_interval) run on real time.
  const common::Clock* clock = &common::SystemClock::Instance();
};

class Subscriber {
 public:
  struct Stats {
    uint64_t batches_applied = 0;
    uint64_t clears = 0;    // ClearPod calls made by this subscriber
    uint64_t restarts = 0;  // sequence went backwards
    uint64_t gaps = 0;      // live gaps seen
    uint64_t replay_requests = 0;
    uint64_t replay_success = 0;
    uint64_t replay_failures = 0;
    uint64_t duplicates_dropped = 0;
    uint64_t frame_errors = 0;  // wrong frame count, seq not 8 bytes
    uint64_t decode_errors = 0;
    uint64_t skipped_events = 0;  // unknown event types
    uint64_t overflow_drops = 0;  // batches dropped because the queue was full
    uint64_t connections = 0;
    uint64_t disconnections = 0;
    uint64_t reconnect_attempts = 0;
  };

  // `sink` must outlive the subscriber. `metrics` may be null (a private registry is used).
  Subscriber(SubscriberOptions options, kv::EventSink* sink, std::shared_ptr<PodMetrics> metrics);
  ~Subscriber();  // Stop()s
  Subscriber(const Subscriber&) = delete;
  Subscriber& operator=(const Subscriber&) = delete;

  // Starts both threads; connecting happens on the socket thread (never blocks the caller).
  // Errors: InvalidArgument without ranks or clock, FailedPrecondition when started twice.
  absl::Status Start();
  // Stops and joins both threads; batches still queued are discarded. Idempotent.
  void Stop();

  Stats stats() const;
  const kv::PodSource& source() const { return options_.source; }
  const SubscriberOptions& options() const { return options_; }

 private:
  struct Stream;
  struct ClearItem {
    std::string reason;
  };
  struct Item {
    std::variant<kv::EventBatch, ClearItem> what;
    size_t events = 0;
  };

  void SocketLoop();
  void ApplyLoop();

  // Socket-thread helpers (see subscriber.cc).
  void Connect(Stream& s);
  void Teardown(Stream& s);
  void ScheduleReconnect(Stream& s, bool failed_attempt);
  void OnMonitor(Stream& s);
  void OnLiveReadable(Stream& s);
  void OnReplayReadable(Stream& s);
  void OnLive(Stream& s, uint64_t seq, std::string payload);
  void InOrder(Stream& s, uint64_t seq, const std::string& payload);
  void StartReplay(Stream& s, uint64_t from, bool strict);
  void OnReplayed(Stream& s, uint64_t seq, const std::string& payload);
  void ReplayDone(Stream& s);
  void ReplayFailed(Stream& s, const std::string& why);
  void FlushHeld(Stream& s);
  void Deliver(Stream& s, uint64_t seq, const std::string& payload);
  void Clear(const std::string& reason);
  void Push(Item item);
  std::chrono::milliseconds Jitter(std::chrono::milliseconds d);

  // Constant after construction.
  const SubscriberOptions options_;
  kv::EventSink* const sink_;
  std::shared_ptr<PodMetrics> metrics_;
  std::unique_ptr<prometheus::Registry> own_registry_;
  std::unique_ptr<KvMetrics> own_metrics_;

  // Guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool overflow_pending_ = false;  // batches were dropped; a Clear must precede the next one
  bool started_ = false;
  bool stopped_ = false;

  std::atomic<bool> stop_{false};

  // Counters, written by either thread.
  struct AtomicStats;
  std::unique_ptr<AtomicStats> stats_;

  // Owned by the socket thread.
  std::unique_ptr<zmq::context_t> own_context_;
  zmq::context_t* context_ = nullptr;
  std::vector<std::unique_ptr<Stream>> streams_;
  uint64_t rng_state_;

  std::thread socket_thread_;
  std::thread apply_thread_;
};

}  // namespace aibrix::kvevents
