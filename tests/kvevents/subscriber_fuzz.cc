// libFuzzer target for the whole path an engine's bytes take into the service: a real
// publisher socket pair (PUB + replay ROUTER, loopback TCP) -> Subscriber (frames, sequence
// tracking, gaps, replay, restarts, decoding, the byte-bounded queue) -> applier ->
// ExactIndex. The input is a script of engine actions (below); each run ends with a
// sentinel batch (AllBlocksCleared, then one stored block) sent live with a sequence number
// above every one the run used, so nothing can be applied after it.
//
// Properties checked beyond "no crash, no sanitizer report":
//  - the sentinel is applied (the subscriber never wedges, whatever came before it; replay
//    timeouts are driven by a fake clock advanced when the sentinel is late);
//  - after it the index holds exactly that one block for the pod and nothing else (no
//    membership leaked by garbage, removals or clears before it);
//  - the pod's decoded-batch queue drains back to zero bytes.
//
// Script, one action per step until the input ends (byte op, then its operands):
//   op % 7 == 0  live message with a chosen sequence number: int8 delta from the
//                publisher's next sequence, then a chunk as its payload
//   op % 7 == 1  a malformed live message: 1, 2 or 4 frames, or a 3-byte sequence frame
//   op % 7 == 2  a chunk published as a payload (gets a sequence number, enters the buffer)
//   op % 7 == 3  a chunk decoded and, when it decodes, published re-encoded (valid framing,
//                arbitrary events: removes, parents, tiers, LoRA ids)
//   op % 7 == 4  the next 1-3 batches dropped on PUB but kept for replay (a gap)
//   op % 7 == 5  engine restart (sequence back to 0, replay buffer emptied)
//   op % 7 == 6  a valid chain of 1-32 stored blocks (a byte), continuing a chosen parent
// A chunk is a little-endian 16-bit length (capped at what is left) and that many bytes.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "aibrix/common/clock.h"
#include "aibrix/common/logging.h"
#include "aibrix/kvevents/decoder.h"
#include "aibrix/kvevents/subscriber.h"
#include "aibrix/kvpublish/encoder.h"
#include "aibrix/kvpublish/publisher.h"
#include "aibrix/prefix/exact_index.h"
#include "tests/kvevents/zmq_test_util.h"

namespace {

using namespace aibrix;
using namespace std::chrono_literals;

constexpr char kPod[] = "fuzz/pod-a";
constexpr uint64_t kSentinelBit = uint64_t{1} << 63;

// The index, plus the last sentinel hash it applied.
class Sink : public kv::EventSink {
 public:
  void ApplyBatch(const kv::PodSource& source, const kv::EventBatch& batch) override {
    index.ApplyBatch(source, batch);
    for (const kv::Event& event : batch.events) {
      const auto* stored = std::get_if<kv::BlockStored>(&event);
      if (stored != nullptr && stored->block_hashes.size() == 1 &&
          (stored->block_hashes[0] & kSentinelBit) != 0 && stored->token_ids.size() == 16) {
        last_sentinel.store(stored->block_hashes[0]);
      }
    }
  }
  void ClearPod(const std::string& pod_key) override { index.ClearPod(pod_key); }

  prefix::ExactIndex index;
  std::atomic<uint64_t> last_sentinel{0};
};

struct Harness {
  Harness() {
    common::SetLogLevel("off");
    kvpublish::PublisherOptions p;
    p.endpoint = "tcp://127.0.0.1:*";
    p.replay_endpoint = "tcp://127.0.0.1:*";
    p.topic = "kv-events";
    p.buffer_steps = 64;
    p.bind_mode = kvpublish::BindMode::kBind;
    publisher = std::make_unique<kvpublish::Publisher>(p);
    if (!publisher->Start().ok()) Fail("publisher did not start");
    kvevents::SubscriberOptions s;
    s.source.pod_key = kPod;
    s.source.model = "m";
    s.ranks.push_back({publisher->endpoint(), publisher->replay_endpoint()});
    s.replay_timeout = 2s;
    s.reconnect_initial = 20ms;
    s.reconnect_max = 200ms;
    s.replay_on_start = false;
    s.max_queued_bytes = 4 << 20;
    s.max_held_bytes = 1 << 20;
    s.clock = &clock;
    subscriber = std::make_unique<kvevents::Subscriber>(s, &sink, nullptr);
    if (!subscriber->Start().ok()) Fail("subscriber did not start");
    // Probes (single frames, counted as frame errors) until one arrives: from then on every
    // message published reaches the subscriber.
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (subscriber->stats().frame_errors == 0) {
      if (std::chrono::steady_clock::now() > deadline) Fail("subscriber never connected");
      (void)publisher->SendRawMultipart({"probe"});
      std::this_thread::sleep_for(5ms);
    }
  }

  [[noreturn]] static void Fail(const char* what) {
    std::fprintf(stderr, "subscriber_fuzz: %s\n", what);
    std::abort();
  }

  common::FakeClock clock;
  Sink sink;
  std::unique_ptr<kvpublish::Publisher> publisher;
  std::unique_ptr<kvevents::Subscriber> subscriber;
  uint64_t next_sentinel = kSentinelBit;
  uint64_t max_raw_seq = 0;  // the highest sequence number sent raw in this run
};

// Reads the script's operands; past the end everything is zero or empty.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return at_ >= size_; }
  uint8_t Byte() { return at_ < size_ ? data_[at_++] : 0; }
  std::string Chunk() {
    size_t n = Byte();
    n |= size_t{Byte()} << 8;
    n = std::min(n, size_ - std::min(at_, size_));
    std::string out(reinterpret_cast<const char*>(data_ + at_), n);
    at_ += n;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
};

kv::EventBatch Chain(uint64_t parent, uint64_t first, int blocks) {
  kv::BlockStored stored;
  if (parent != 0) stored.parent_block_hash = parent;
  for (int i = 0; i < blocks; ++i) {
    stored.block_hashes.push_back(first + static_cast<uint64_t>(i));
    for (int t = 0; t < 16; ++t) stored.token_ids.push_back(static_cast<uint32_t>(first + i + t));
  }
  stored.block_size = 16;
  kv::EventBatch batch;
  batch.ts = 1;
  batch.events.push_back(std::move(stored));
  return batch;
}

void RunScript(Harness& h, Reader& in) {
  kvpublish::Publisher& pub = *h.publisher;
  for (int steps = 0; !in.done() && steps < 64; ++steps) {
    switch (in.Byte() % 7) {
      case 0: {
        const auto delta = static_cast<int8_t>(in.Byte());
        const uint64_t seq = pub.next_seq() + static_cast<uint64_t>(static_cast<int64_t>(delta));
        h.max_raw_seq = std::max(h.max_raw_seq, seq);
        (void)pub.SendRawMultipart({"kv-events", kvevents::testing::Seq8(seq), in.Chunk()});
        break;
      }
      case 1: {
        const uint8_t shape = in.Byte() % 4;
        std::vector<std::string> frames{"kv-events"};
        if (shape >= 1) frames.push_back(shape == 3 ? std::string(3, '\1') : std::string(8, '\0'));
        if (shape >= 2) frames.push_back(in.Chunk());
        if (shape == 2) frames.push_back("extra");
        (void)pub.SendRawMultipart(std::move(frames));
        break;
      }
      case 2:
        (void)pub.PublishPayload(in.Chunk());
        break;
      case 3:
        if (auto batch = kvevents::DecodeBatch(in.Chunk()); batch.ok()) (void)pub.Publish(*batch);
        break;
      case 4:
        (void)pub.DropNext(1 + in.Byte() % 3);
        break;
      case 5:
        (void)pub.Restart();
        break;
      case 6: {
        const int blocks = 1 + in.Byte() % 32;
        const uint64_t parent = in.Byte();
        (void)pub.Publish(Chain(parent, 1 + in.Byte() * 64u, blocks));
        break;
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness* harness = new Harness();  // sockets and threads live for the whole run
  Harness& h = *harness;
  Reader in(data, size);
  h.max_raw_seq = 0;
  RunScript(h, in);

  const uint64_t sentinel = ++h.next_sentinel;
  kv::EventBatch last;
  last.ts = 1;
  last.events.emplace_back(kv::AllBlocksCleared{});
  kv::BlockStored stored;
  stored.block_hashes = {sentinel};
  stored.token_ids = std::vector<uint32_t>(16, 7);
  stored.block_size = 16;
  last.events.emplace_back(std::move(stored));
  // After the flush next_seq() is the sequence number the publisher would give next: the
  // sentinel's is at least that (above everything in the replay buffer) and above every raw one.
  if (!h.publisher->Flush()) Harness::Fail("publisher did not flush");
  const uint64_t seq = std::max(h.max_raw_seq + 1, h.publisher->next_seq());
  if (!h.publisher
           ->SendRawMultipart({"kv-events", kvevents::testing::Seq8(seq),
                               kvpublish::EncodeBatch(last, kvpublish::WireFormat::kMap)})
           .ok()) {
    Harness::Fail("sentinel not sent");
  }

  // Late: a replay may wait for its timeout (on the fake clock): move the clock on.
  const auto start = std::chrono::steady_clock::now();
  for (int spins = 0; h.sink.last_sentinel.load() != sentinel; ++spins) {
    if (std::chrono::steady_clock::now() - start > 8s) Harness::Fail("sentinel never applied");
    std::this_thread::sleep_for(50us);
    if (spins % 2000 == 1999) h.clock.Advance(3s);
  }
  const auto stats = h.sink.index.Stats(kPod);
  if (!stats || stats->blocks != 1 || h.sink.index.memberships() != 1) {
    Harness::Fail("index does not hold exactly the sentinel's block");
  }
  for (int spins = 0; h.subscriber->queued_bytes() != 0; ++spins) {
    if (spins > 200000) Harness::Fail("queued bytes never drained");
    std::this_thread::sleep_for(50us);
  }
  return 0;
}
