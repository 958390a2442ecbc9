// The KV event subscriber of one pod: for each data-parallel rank of the pod, a ZMQ SUB
// socket on the engine's publisher and a DEALER on its replay socket; sequence tracking,
// gap repair by replay, restart detection, reconnection with jittered exponential backoff;
// decoded batches go through a queue bounded in bytes to the EventSink. The threads are an
// IngestRuntime's (ingest.h), shared by every pod.
//
// Guarantee to the sink: between two ClearPod(pod) calls, the batches applied for one rank
// form a contiguous run of sequence numbers, each applied once. Whenever that cannot be kept
// (gap that replay cannot cover, engine restart, undecodable or oversized batch, queue full)
// the pod is cleared first and the run starts again. See docs/kvevents.md for the algorithm.
//
// Memory: a message larger than `max_message_bytes` is refused by libzmq itself
// (ZMQ_MAXMSGSIZE); a batch whose decoded form would exceed the pod's queue budget is refused
// by the decoder before it allocates; queued batches and live batches held during a replay
// are bounded in bytes per pod (and queued ones in total, by the runtime).
//
// Thread safety: Start/Stop/stats may be called from any thread. The socket-side state is
// owned by the runtime's socket thread the subscriber is pinned to; the queue is shared with
// the appliers under queue_mu_; counters are the pod's Prometheus series (PodMetrics).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "aibrix/common/clock.h"
#include "aibrix/kv/events.h"
#include "aibrix/kvevents/metrics.h"

namespace aibrix::kvevents {

class IngestRuntime;

// The publisher of one data-parallel rank.
struct RankEndpoint {
  std::string endpoint;         // tcp://10.0.0.5:5557, tcp://[fd00::5]:5557
  std::string replay_endpoint;  // empty: no replay socket
};

struct SubscriberOptions {
  kv::PodSource source;
  std::vector<RankEndpoint> ranks;  // index = data-parallel rank; at least one
  std::string topic_filter;         // SUB prefix filter; "" = all topics
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
  // Largest message taken from an engine (ZMQ_MAXMSGSIZE on the SUB and DEALER sockets).
  size_t max_message_bytes = size_t{64} << 20;
  // Decoded batches queued for the applier, this pod.
  size_t max_queued_bytes = size_t{64} << 20;
  // Live batches (raw) held while a replay runs, this pod; past it the replay is abandoned.
  size_t max_held_bytes = size_t{64} << 20;
  int max_consecutive_replays = 3;  // then gaps are resolved by clearing
  // Messages libzmq queues per SUB socket before dropping (they are taken quickly into the
  // byte-bounded queue; this only absorbs bursts).
  int sub_rcvhwm = 10000;
  // Shared threads and ZMQ context; null: the subscriber makes a private runtime (one socket
  // thread, one applier).
  std::shared_ptr<IngestRuntime> runtime;
  // The replay timeout, the reconnect deadlines after a socket error and the processing-time
  // metric are measured on this clock (Now()); it must outlive the subscriber. Tests pass a
  // FakeClock and advance it instead of waiting (the socket thread looks at the deadlines at
  // least every 100 ms). libzmq's own reconnection timer runs on real time.
  const common::Clock* clock = &common::SystemClock::Instance();
};

class Subscriber {
 public:
  // A snapshot of the pod's counters (the same series /metrics exports).
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
    uint64_t too_large = 0;       // batches refused for their decoded size
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

  // Hands the pod to a socket thread, which connects (never blocks the caller on sockets).
  // Errors: InvalidArgument without ranks or clock, FailedPrecondition when started twice or
  // when a private runtime cannot be made.
  absl::Status Start();
  // Closes the sockets and waits until no applier runs for this pod; batches still queued
  // are discarded. Idempotent.
  void Stop();

  Stats stats() const;
  const kv::PodSource& source() const { return options_.source; }
  const SubscriberOptions& options() const { return options_; }
  // Bytes of decoded batches queued for this pod.
  size_t queued_bytes() const;

 private:
  friend class IngestRuntime;
  using Clock = std::chrono::steady_clock;
  struct Stream;
  struct ClearItem {
    ResyncReason reason;
  };
  struct Item {
    std::variant<kv::EventBatch, ClearItem> what;
    size_t bytes = 0;
  };
  // The socket thread's side of the runtime, as a subscriber sees it.
  class Loop {
   public:
    virtual ~Loop() = default;
    // Watches a ZMQ socket's readiness; `watch` identifies it in OnReadable.
    virtual void Watch(void* socket, const void* watch) = 0;
    virtual void Unwatch(void* socket) = 0;
    // Has OnReadable called again soon for `socket` (more may be pending without a new
    // readiness edge).
    virtual void Recheck(void* socket) = 0;
    // Has OnTick called by `when`.
    virtual void WakeBy(Clock::time_point when) = 0;
  };

  // ---- socket thread (called by the runtime)
  void OnAttached(Loop* loop, Clock::time_point connect_at);
  // Connects and times out what is due; returns the next deadline (real time).
  Clock::time_point OnTick();
  void OnReadable(const void* watch);
  void OnDetached();

  // ---- applier (called by the runtime): applies a few queued items; true when more remain.
  bool ApplySome();

  // Socket-thread helpers (see subscriber.cc).
  void Connect(Stream& s);
  void Teardown(Stream& s);
  void CloseDealer(Stream& s);
  void ScheduleReconnect(Stream& s, bool failed_attempt);
  void OnMonitor(Stream& s);
  void OnLiveReadable(Stream& s);
  void OnReplayReadable(Stream& s);
  void OnLive(Stream& s, uint64_t seq, std::string payload);
  void Hold(Stream& s, uint64_t seq, std::string payload);
  void InOrder(Stream& s, uint64_t seq, const std::string& payload);
  void StartReplay(Stream& s, uint64_t from, bool strict, bool resume = false);
  // Asks again from the first batch the current replay has not delivered (same repair).
  void ResumeReplay(Stream& s);
  void OnReplayed(Stream& s, uint64_t seq, const std::string& payload);
  void ReplayDone(Stream& s);
  void ReplayFailed(Stream& s, const std::string& why);
  void FlushHeld(Stream& s);
  void Deliver(Stream& s, uint64_t seq, const std::string& payload);
  void Clear(ResyncReason reason);
  void Push(Item item);
  std::chrono::milliseconds Jitter(std::chrono::milliseconds d);
  // Has the socket thread look at the deadlines by `deadline` (on options_.clock).
  void WakeAt(Clock::time_point deadline);

  // Constant after construction.
  const SubscriberOptions options_;
  kv::EventSink* const sink_;
  std::shared_ptr<PodMetrics> metrics_;
  std::unique_ptr<prometheus::Registry> own_registry_;
  std::unique_ptr<KvMetrics> own_metrics_;
  std::shared_ptr<IngestRuntime> runtime_;  // set by Start

  std::mutex lifecycle_mu_;  // serialises Start and Stop
  bool started_ = false;
  bool stopped_ = false;

  // The queue, shared by the socket thread (Push) and the appliers (ApplySome).
  mutable std::mutex queue_mu_;
  std::condition_variable idle_cv_;  // signalled when an applier lets go of the pod
  std::deque<Item> queue_;
  size_t queued_bytes_ = 0;
  bool overflow_pending_ = false;  // batches were dropped; a Clear must precede the next one
  bool scheduled_ = false;         // on the ready list or held by an applier
  bool applying_ = false;          // held by an applier
  bool detached_ = false;          // Stop: nothing more is queued or applied

  size_t socket_thread_ = 0;  // the runtime's thread this pod is pinned to (set by Attach)

  // Owned by the socket thread.
  Loop* loop_ = nullptr;
  std::vector<std::unique_ptr<Stream>> streams_;
  uint64_t rng_state_;
};

}  // namespace aibrix::kvevents
