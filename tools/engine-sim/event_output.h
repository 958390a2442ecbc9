// KvEventOutput: connects the engine's per-step event batches to the kvevents Publisher
// (vLLM's ZMQ framing, replay, fault hooks) and adds the one fault the publisher does not
// have: corrupting the next payload(s) on purpose.
//
// Thread safety: Publish/Restart come from the engine thread; the fault setters and the
// accessors may be called from any thread (the Publisher is thread-safe, counters atomic).
#pragma once

#include <atomic>
#include <memory>

#include "absl/status/status.h"
#include "aibrix/kvpublish/publisher.h"
#include "engine.h"

namespace aibrix::enginesim {

using kvpublish::Publisher;

// The bytes sent instead of a batch by CorruptNext: not a valid msgpack batch (0xc1 is the
// one byte msgpack never uses).
inline constexpr std::string_view kCorruptPayload = "\xc1\xc1 engine-sim corrupt payload";

class KvEventOutput final : public EventOutput {
 public:
  explicit KvEventOutput(kvpublish::PublisherOptions options);

  // Binds the sockets and starts the publisher thread. Errors from Publisher::Start.
  absl::Status Start();
  void Stop() { publisher_.Stop(); }

  void Publish(kv::EventBatch batch) override;
  void Restart() override;

  // The next `n` batches are replaced by kCorruptPayload (they still get sequence numbers).
  void CorruptNext(int n) { corrupt_next_.fetch_add(n); }
  kvpublish::Publisher& publisher() { return publisher_; }
  uint64_t publish_errors() const { return publish_errors_.load(); }

 private:
  kvpublish::Publisher publisher_;
  std::atomic<int> corrupt_next_{0};
  std::atomic<uint64_t> publish_errors_{0};
};

}  // namespace aibrix::enginesim
