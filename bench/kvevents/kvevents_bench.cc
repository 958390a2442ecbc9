// kvevents-bench: decoder throughput and end-to-end ZMQ throughput of the KV event path.
//
//   figure decode_blocks_per_s   BlockStored batches of 32 blocks x 16 tokens (map era),
//                                decoded on one thread
//   figure zmq_blocks_per_s      the same batches through Publisher -> ZMQ loopback ->
//                                Subscriber (decode, queue, apply) into a counting sink
//
// Plain main (each measurement runs for a fixed time); finishes in well under 60 s.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include "aibrix/common/logging.h"
#include "aibrix/kvevents/decoder.h"
#include "aibrix/kvevents/subscriber.h"
#include "aibrix/kvpublish/encoder.h"
#include "aibrix/kvpublish/publisher.h"

namespace {

using namespace aibrix;
using Clock = std::chrono::steady_clock;

constexpr int kBlocks = 32;
constexpr int kTokens = 16;

kv::EventBatch MakeBatch(std::mt19937_64& rng) {
  kv::EventBatch b;
  b.ts = 1760000000.25;
  b.data_parallel_rank = 0;
  kv::BlockStored s;
  for (int i = 0; i < kBlocks; ++i) s.block_hashes.push_back(rng());
  s.parent_block_hash = rng();
  for (int i = 0; i < kBlocks * kTokens; ++i) s.token_ids.push_back(rng() % 152000);
  s.block_size = kTokens;
  s.medium = "GPU";
  s.group_idx = 0;
  s.kv_cache_spec_kind = "full_attention";
  b.events.push_back(std::move(s));
  return b;
}

double DecodeBlocksPerSecond(const std::vector<std::string>& payloads) {
  size_t blocks = 0;
  size_t i = 0;
  const auto t0 = Clock::now();
  auto deadline = t0 + std::chrono::seconds(3);
  while (Clock::now() < deadline) {
    for (int k = 0; k < 256; ++k) {
      auto b = kvevents::DecodeBatch(payloads[i++ % payloads.size()]);
      if (!b.ok()) {
        std::fprintf(stderr, "decode failed\n");
        std::exit(1);
      }
      blocks += std::get<kv::BlockStored>(b->events[0]).block_hashes.size();
    }
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  return static_cast<double>(blocks) / secs;
}

class CountingSink : public kv::EventSink {
 public:
  void ApplyBatch(const kv::PodSource&, const kv::EventBatch& batch) override {
    size_t n = 0;
    for (const auto& e : batch.events) {
      if (const auto* s = std::get_if<kv::BlockStored>(&e)) n += s->block_hashes.size();
    }
    blocks.fetch_add(n, std::memory_order_relaxed);
  }
  void ClearPod(const std::string&) override { clears.fetch_add(1); }
  std::atomic<uint64_t> blocks{0};
  std::atomic<uint64_t> clears{0};
};

double ZmqBlocksPerSecond(const std::vector<std::string>& payloads, uint64_t* clears) {
  kvpublish::PublisherOptions po;
  po.endpoint = "tcp://127.0.0.1:*";
  po.hwm = 1000000;
  po.max_queue_size = 20000;
  po.buffer_steps = 0;
  kvpublish::Publisher pub(po);
  if (!pub.Start().ok()) std::exit(1);

  CountingSink sink;
  kvevents::SubscriberOptions so;
  so.source.pod_key = "bench/pod";
  so.ranks.push_back({pub.endpoint(), ""});
  so.replay_on_start = false;
  so.max_queued_bytes = size_t{1} << 30;
  so.sub_rcvhwm = 1000000;
  kvevents::Subscriber sub(so, &sink, nullptr);
  if (!sub.Start().ok()) std::exit(1);
  // Wait until subscribed: probes until the subscriber counts one.
  while (sub.stats().frame_errors == 0) {
    (void)pub.SendRawMultipart({"probe"});
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  pub.Flush();

  const uint64_t batches = 120000;
  const auto t0 = Clock::now();
  for (uint64_t i = 0; i < batches; ++i) {
    if (!pub.PublishPayload(payloads[i % payloads.size()]).ok()) std::exit(1);
  }
  const uint64_t want = batches * kBlocks;
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  uint64_t last = 0;
  auto last_change = Clock::now();
  while (sink.blocks.load() < want && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const uint64_t now_blocks = sink.blocks.load();
    if (now_blocks != last) {
      last = now_blocks;
      last_change = Clock::now();
    } else if (Clock::now() - last_change > std::chrono::seconds(1)) {
      break;  // some batches were dropped (counted as clears); rate over what arrived
    }
  }
  const auto t1 = sink.blocks.load() >= want ? Clock::now() : last_change;
  const double secs = std::chrono::duration<double>(t1 - t0).count();
  *clears = sink.clears.load();
  sub.Stop();
  pub.Stop();
  return static_cast<double>(sink.blocks.load()) / secs;
}

}  // namespace

int main() {
  aibrix::common::SetLogLevel("error");  // the subscription probes are logged as malformed
  std::mt19937_64 rng(1);
  std::vector<std::string> payloads;
  for (int i = 0; i < 64; ++i) {
    payloads.push_back(kvpublish::EncodeBatch(MakeBatch(rng), kvpublish::WireFormat::kMap));
  }
  std::printf("payload bytes per batch: %zu (%d blocks x %d tokens)\n", payloads[0].size(), kBlocks,
              kTokens);
  const double decode = DecodeBlocksPerSecond(payloads);
  uint64_t clears = 0;
  const double zmq = ZmqBlocksPerSecond(payloads, &clears);
  std::printf("zmq run: %llu clears (batches lost to HWM/overflow)\n",
              static_cast<unsigned long long>(clears));
  std::printf("figure decode_blocks_per_s %.0f blocks/s\n", decode);
  std::printf("figure zmq_blocks_per_s %.0f blocks/s\n", zmq);
  return 0;
}
