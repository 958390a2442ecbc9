// IngestRuntime: the threads that serve every pod's KV event subscription — a few socket
// threads, each waiting on many pods' ZMQ sockets at once through one epoll set, and a few
// appliers that take decoded batches to the EventSink — so 1,000 pods cost a handful of
// threads, not two per pod.
//
//  * Socket threads (`io_threads`): a subscriber is pinned to one for its life; the thread
//    owns its sockets and sequence state (subscriber.h). ZMQ sockets are watched through
//    their ZMQ_FD (edge-triggered) in an epoll set, so a wake-up costs O(ready sockets), not
//    O(sockets). New subscriptions connect spread over `connect_spread` (no thundering herd).
//  * Appliers (`apply_threads`): a pod with queued batches is on a ready list; an applier
//    takes it, applies a few of its batches, and puts it back at the end. A pod is applied
//    by one applier at a time (its batches stay in order), and a pod whose batches are slow
//    holds one applier, never the others.
//  * Memory: every pod's queue of decoded batches is bounded in bytes, and so is the sum
//    over all pods (`max_queued_bytes`); queued_bytes() is reported with the index memory.
//
// Thread safety: all public methods may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace zmq {
class context_t;
}

namespace aibrix::kvevents {

class Subscriber;

struct IngestOptions {
  int io_threads = 1;
  int apply_threads = 2;
  // Decoded batches waiting for an applier, all pods together.
  size_t max_queued_bytes = size_t{512} << 20;
  // Subscriptions the runtime can hold (sizes libzmq's socket limit: 4 sockets per rank).
  int max_ranks = 1000;
  // New subscriptions connect at a random time within this window.
  std::chrono::milliseconds connect_spread{500};
  // libzmq I/O threads (TCP reading and framing).
  int zmq_io_threads = 1;
};

class IngestRuntime {
 public:
  // Checks the descriptor budget (raising the soft RLIMIT_NOFILE as far as needed and
  // allowed) and starts the threads. Errors: FailedPrecondition when the context cannot be
  // configured. A descriptor limit too low for `max_ranks` is logged with the number of
  // ranks it can hold, not an error.
  static absl::StatusOr<std::shared_ptr<IngestRuntime>> Create(IngestOptions options);
  ~IngestRuntime();  // Stop()s
  IngestRuntime(const IngestRuntime&) = delete;
  IngestRuntime& operator=(const IngestRuntime&) = delete;

  // Stops every thread; subscribers still attached are closed (their batches discarded).
  // Idempotent.
  void Stop();

  zmq::context_t& context() { return *context_; }
  const IngestOptions& options() const { return options_; }
  // Bytes of decoded batches queued for the appliers, all pods.
  size_t queued_bytes() const { return queued_bytes_.load(std::memory_order_relaxed); }
  // Bytes of live batches held back while replays run, all pods.
  size_t held_bytes() const { return held_bytes_.load(std::memory_order_relaxed); }
  // Ranks (SUB sockets) the descriptor limit allows.
  int rank_capacity() const { return rank_capacity_; }

 private:
  friend class Subscriber;
  class SocketThread;

  explicit IngestRuntime(IngestOptions options);
  absl::Status Init();
  void ApplyLoop();

  // For Subscriber: pins it to a socket thread and has it connect there. Returns once the
  // thread has taken it.
  void Attach(Subscriber* subscriber);
  // Closes the subscriber's sockets on its thread, then waits until no applier holds it and
  // drops it from the ready list. Nothing of it runs after this returns.
  void Detach(Subscriber* subscriber);
  // Puts a pod with queued batches on the ready list (the pod's queue lock is held).
  void Schedule(Subscriber* subscriber);
  // Takes a pod off the ready list if it is there; true when it was.
  bool Unschedule(Subscriber* subscriber);
  // Queue budget, all pods: reserves `bytes` if they fit.
  bool ReserveQueued(size_t bytes);
  void ReleaseQueued(size_t bytes) { queued_bytes_.fetch_sub(bytes, std::memory_order_relaxed); }
  void AddHeld(int64_t delta) {
    held_bytes_.fetch_add(static_cast<size_t>(delta), std::memory_order_relaxed);
  }

  const IngestOptions options_;
  std::unique_ptr<zmq::context_t> context_;
  std::vector<std::unique_ptr<SocketThread>> socket_threads_;
  std::atomic<size_t> next_socket_thread_{0};
  std::atomic<size_t> queued_bytes_{0};
  std::atomic<size_t> held_bytes_{0};
  int rank_capacity_ = 0;

  std::mutex mu_;  // guards ready_, stopping_
  std::condition_variable ready_cv_;
  std::deque<Subscriber*> ready_;
  bool stopping_ = false;
  std::vector<std::thread> appliers_;
};

}  // namespace aibrix::kvevents
