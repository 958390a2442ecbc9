// A KV event publisher with vLLM's exact ZMQ framing (../shared/protocols/README.md §1.3,
// §1.4): a PUB socket sending 3-frame messages [topic, seq (8 bytes BE), payload] and an
// optional ROUTER replay socket answering [identity, "", start_seq] requests from a ring
// buffer of the last `buffer_steps` batches, in the pre- or post-PR #45177 reply layout.
//
// The framing and the replay service are shared with Fleet (wire.h).
//
// It is what engine-sim publishes with and what the kvevents tests use as "the engine". It
// therefore also has fault hooks: drop the next N batches on PUB (a gap the subscriber sees,
// replay still has them), restart (sequence back to 0, buffer emptied), pause/resume, and
// raw payloads or malformed multipart messages.
//
// Thread safety: every public method may be called from any thread. One background thread
// owns both sockets (ZMQ sockets are single-threaded); callers hand it work through a bounded
// queue guarded by mu_, so the order of Publish*/Restart/SendRawMultipart calls is the
// order on the wire.
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
#include <vector>

#include "absl/status/status.h"
#include "aibrix/kv/events.h"
#include "aibrix/kvpublish/encoder.h"
#include "aibrix/kvpublish/wire.h"

namespace zmq {
class context_t;
}

namespace aibrix::kvpublish {

// How the PUB socket attaches to its endpoint.
enum class BindMode {
  kAuto,  // vLLM's rule: bind if the endpoint has '*' or '::' or is ipc:// / inproc://,
          // or (our addition) ends in ":0"; otherwise connect
  kBind,
  kConnect,
};

struct PublisherOptions {
  std::string endpoint = "tcp://*:5557";
  std::string replay_endpoint;  // empty: no replay socket (vLLM's default)
  std::string topic;            // frame 0 of every message
  size_t buffer_steps = 10000;  // batches kept for replay
  int hwm = 100000;             // PUB send high-water mark
  size_t max_queue_size = 100000;
  ReplyLayout reply_layout = ReplyLayout::kPost45177;
  WireFormat format = WireFormat::kMap;  // used by Publish(EventBatch)
  HashEncoding hash_encoding = HashEncoding::kInt;
  BindMode bind_mode = BindMode::kAuto;
};

class Publisher {
 public:
  explicit Publisher(PublisherOptions options);
  ~Publisher();  // Stop()s
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  // Creates and binds/connects the sockets and starts the thread. Errors: bad or busy
  // endpoint (InvalidArgument / Unavailable with the endpoint in the message),
  // FailedPrecondition when already started or stopped.
  absl::Status Start();
  // Stops the thread and closes the sockets (linger 0: unsent messages are dropped).
  // Idempotent; a stopped publisher cannot be restarted (make a new one).
  void Stop();

  // The PUB / ROUTER endpoint actually bound (ZMQ_LAST_ENDPOINT, e.g. tcp://127.0.0.1:41234
  // for tcp://127.0.0.1:*); for a connecting PUB, the configured endpoint. Valid after Start.
  std::string endpoint() const;
  std::string replay_endpoint() const;
  // The TCP port of endpoint()/replay_endpoint(), 0 if not TCP or not started.
  int port() const;
  int replay_port() const;

  // Encodes `batch` in options.format and queues it; the publisher thread assigns the next
  // sequence number. Blocks while the queue is full, up to `timeout`. Errors:
  // ResourceExhausted (queue still full), FailedPrecondition (not running).
  absl::Status Publish(const kv::EventBatch& batch,
                       std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Queues an already-encoded (or deliberately corrupt) payload; it gets a sequence number
  // and enters the replay buffer like any batch.
  absl::Status PublishPayload(std::string payload,
                              std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Sends `frames` as one multipart message on PUB as-is (no sequence number consumed, not
  // buffered). For malformed-frame tests.
  absl::Status SendRawMultipart(std::vector<std::string> frames);

  // In queue order: the next `n` batches get sequence numbers and enter the replay buffer
  // but are not sent on PUB (what a subscriber sees when PUB drops messages at the HWM).
  absl::Status DropNext(int n);
  // Simulates an engine restart, in queue order: sequence numbers start again at 0 and the
  // replay buffer is emptied. Sockets stay bound.
  absl::Status Restart();
  // While paused, nothing is sent on PUB and replay requests are not answered (they wait in
  // the ROUTER's queue); Publish calls queue up (and block when the queue is full).
  void Pause();
  void Resume();
  // While set, replay requests are read and ignored (no reply at all): a replay timeout.
  void SetIgnoreReplay(bool ignore);

  // Blocks until every item queued before the call has been handled (sent, dropped or
  // buffered). False on timeout or when not running.
  bool Flush(std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // Counters (monotonic except next_seq, which Restart resets).
  uint64_t next_seq() const { return next_seq_.load(); }
  uint64_t sent() const { return sent_.load(); }
  uint64_t dropped() const { return dropped_.load(); }
  uint64_t replay_requests() const { return replay_requests_.load(); }
  uint64_t replayed_batches() const { return replayed_batches_.load(); }

 private:
  struct Item {
    enum class Kind { kPayload, kRaw, kRestart, kDropNext } kind = Kind::kPayload;
    int drop = 0;
    std::string payload;
    std::vector<std::string> frames;
  };
  struct Sockets;

  absl::Status Enqueue(Item item, std::chrono::milliseconds timeout, bool bounded);
  void Run();
  void Handle(Item& item);
  void ServeReplay();

  // Constant after construction.
  const PublisherOptions options_;

  // Guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable cv_;  // queue got an item / space / handled
  std::deque<Item> queue_;
  uint64_t enqueued_ = 0;  // items ever queued
  uint64_t handled_ = 0;   // items ever taken and handled
  bool paused_ = false;
  bool running_ = false;
  bool stopped_ = false;
  std::string bound_endpoint_;
  std::string bound_replay_endpoint_;

  std::atomic<bool> stop_{false};
  std::atomic<bool> ignore_replay_{false};
  int drop_next_ = 0;  // owned by the publisher thread
  std::atomic<uint64_t> next_seq_{0};
  std::atomic<uint64_t> sent_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> replay_requests_{0};
  std::atomic<uint64_t> replayed_batches_{0};

  // Owned by the publisher thread after Start().
  std::unique_ptr<zmq::context_t> context_;
  std::unique_ptr<Sockets> sockets_;
  ReplayBuffer buffer_;
  std::thread thread_;
};

}  // namespace aibrix::kvpublish
