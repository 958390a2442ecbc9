#include "aibrix/kvevents/subscriber.h"

#include <gtest/gtest.h>

#include <thread>

#include "aibrix/common/clock.h"
#include "aibrix/kvpublish/publisher.h"
#include "fmt/format.h"
#include "prometheus/text_serializer.h"
#include "tests/kvevents/recording_sink.h"
#include "tests/util/poll.h"

namespace aibrix::kvevents {
namespace {

using kvpublish::BindMode;
using kvpublish::Publisher;
using kvpublish::PublisherOptions;
using kvpublish::ReplyLayout;

using namespace std::chrono_literals;
using testing::RecordingSink;

constexpr uint64_t kClear = RecordingSink::kClear;

// Batch `id`: one BlockStored whose only hash is `id`.
kv::EventBatch B(uint64_t id) {
  kv::EventBatch b;
  b.ts = 1.0;
  kv::BlockStored s;
  s.block_hashes = {id};
  s.token_ids = std::vector<uint32_t>(16, 7);
  s.block_size = 16;
  b.events.push_back(s);
  return b;
}

std::vector<uint64_t> Ids(uint64_t from, uint64_t to) {  // [from, to)
  std::vector<uint64_t> v;
  for (uint64_t i = from; i < to; ++i) v.push_back(i);
  return v;
}

using aibrix::testing::Eventually;

class SubscriberTest : public ::testing::Test {
 protected:
  std::unique_ptr<Publisher> MakePublisher(bool replay,
                                           ReplyLayout layout = ReplyLayout::kPost45177,
                                           size_t buffer_steps = 10000,
                                           std::string endpoint = "tcp://127.0.0.1:*",
                                           std::string replay_endpoint = "tcp://127.0.0.1:*") {
    PublisherOptions o;
    o.endpoint = endpoint;
    if (replay) o.replay_endpoint = replay_endpoint;
    o.reply_layout = layout;
    o.buffer_steps = buffer_steps;
    o.topic = "kv-events";
    o.bind_mode = BindMode::kBind;
    auto p = std::make_unique<Publisher>(o);
    auto st = p->Start();
    EXPECT_TRUE(st.ok()) << st;
    return p;
  }

  SubscriberOptions Options(const Publisher& p) {
    SubscriberOptions o;
    o.source.pod_key = "default/pod-a";
    o.source.model = "m";
    o.ranks.push_back({p.endpoint(), p.replay_endpoint()});
    o.replay_timeout = 2s;
    o.reconnect_initial = 20ms;
    o.reconnect_max = 200ms;
    o.replay_on_start = false;
    // Replay timeouts happen only when a test advances clock_: a slow machine cannot time
    // out a replay that a test expects to succeed.
    o.clock = &clock_;
    return o;
  }

  std::unique_ptr<Subscriber> StartSubscriber(SubscriberOptions o) {
    auto s = std::make_unique<Subscriber>(std::move(o), &sink_, nullptr);
    EXPECT_TRUE(s->Start().ok());
    return s;
  }

  // Sends probe messages (single frame, counted as frame errors) until the subscriber has
  // seen one: from then on every published batch reaches it. Returns the probes counted.
  uint64_t WaitSubscribed(Publisher& p, Subscriber& s) {
    EXPECT_TRUE(Eventually([&] {
      EXPECT_TRUE(p.SendRawMultipart({"probe"}).ok());
      return Eventually([&] { return s.stats().frame_errors > 0; }, 20ms);
    }));
    p.Flush();
    // Probes still in flight arrive in order before anything published after this.
    return s.stats().frame_errors;
  }

  void PublishIds(Publisher& p, uint64_t from, uint64_t to) {
    for (uint64_t i = from; i < to; ++i) ASSERT_TRUE(p.Publish(B(i)).ok());
  }

  common::FakeClock clock_;
  RecordingSink sink_;
};

TEST_F(SubscriberTest, AppliesLiveBatchesInOrder) {
  auto pub = MakePublisher(false);
  auto sub = StartSubscriber(Options(*pub));
  WaitSubscribed(*pub, *sub);
  PublishIds(*pub, 100, 110);
  ASSERT_TRUE(sink_.WaitBatches(10));
  EXPECT_EQ(sink_.log(), Ids(100, 110));
  EXPECT_EQ(sink_.blocks("default/pod-a").size(), 10u);
  EXPECT_EQ(sink_.pods().front(), "default/pod-a");
  // The counter moves right after the sink call returns.
  ASSERT_TRUE(Eventually([&] { return sub->stats().batches_applied == 10; }));
  const auto st = sub->stats();
  EXPECT_EQ(st.batches_applied, 10u);
  EXPECT_EQ(st.clears, 0u);
  EXPECT_EQ(st.connections, 1u);
  sub->Stop();
  sub->Stop();
}

class ReplayLayoutTest : public SubscriberTest,
                         public ::testing::WithParamInterface<ReplyLayout> {};

TEST_P(ReplayLayoutTest, StartupReplayThenLiveWithoutDuplicates) {
  auto pub = MakePublisher(true, GetParam());
  PublishIds(*pub, 100, 105);  // before the subscriber exists
  ASSERT_TRUE(pub->Flush());
  auto o = Options(*pub);
  o.replay_on_start = true;
  auto sub = StartSubscriber(o);
  ASSERT_TRUE(sink_.WaitBatches(5));
  // The replay came over the DEALER; the SUB socket's subscription may still be on its way
  // (batches published before it arrives are not delivered: PUB/SUB's slow joiner).
  WaitSubscribed(*pub, *sub);
  PublishIds(*pub, 105, 110);
  ASSERT_TRUE(sink_.WaitBatches(10));
  EXPECT_EQ(sink_.log(), Ids(100, 110));
  EXPECT_EQ(sub->stats().replay_success, 1u);
  EXPECT_EQ(sub->stats().clears, 0u);
}

TEST_P(ReplayLayoutTest, GapIsRepairedByReplayBeforeLiveBatches) {
  auto pub = MakePublisher(true, GetParam());
  auto sub = StartSubscriber(Options(*pub));
  WaitSubscribed(*pub, *sub);
  PublishIds(*pub, 100, 103);          // seq 0..2
  ASSERT_TRUE(pub->DropNext(3).ok());  // seq 3..5 are buffered but never sent live
  PublishIds(*pub, 103, 110);          // seq 3..9
  ASSERT_TRUE(sink_.WaitBatches(10));
  PublishIds(*pub, 110, 112);
  ASSERT_TRUE(sink_.WaitBatches(12));
  EXPECT_EQ(sink_.log(), Ids(100, 112));  // every batch once, in order, no clear
  const auto st = sub->stats();
  EXPECT_EQ(st.gaps, 1u);
  EXPECT_EQ(st.replay_requests, 1u);
  EXPECT_EQ(st.replay_success, 1u);
  EXPECT_EQ(st.clears, 0u);
  EXPECT_EQ(pub->replay_requests(), 1u);
}

INSTANTIATE_TEST_SUITE_P(BothLayouts, ReplayLayoutTest,
                         ::testing::Values(ReplyLayout::kPre45177, ReplyLayout::kPost45177));

TEST_F(SubscriberTest, GapWithoutReplayEndpointClearsThenContinues) {
  auto pub = MakePublisher(false);
  auto sub = StartSubscriber(Options(*pub));
  WaitSubscribed(*pub, *sub);
  PublishIds(*pub, 100, 103);
  ASSERT_TRUE(pub->DropNext(2).ok());
  PublishIds(*pub, 103, 108);
  ASSERT_TRUE(sink_.WaitBatches(6));
  EXPECT_EQ(sink_.log(), (std::vector<uint64_t>{100, 101, 102, kClear, 105, 106, 107}));
  EXPECT_EQ(sink_.blocks("default/pod-a"), (std::set<uint64_t>{105, 106, 107}));
  EXPECT_EQ(sub->stats().gaps, 1u);
}

// vLLM's replay ROUTER has libzmq's default send high-water mark (1,000 messages) and sends a
// whole buffer in one loop: past the mark it drops replies silently, the end marker too. The
// subscriber asks again from the first batch it misses, for as long as each request brings
// it further, and ends the replay once it reaches the live batches it holds.
TEST_F(SubscriberTest, StartupReplayPastTheRoutersHighWaterMarkIsResumedUntilComplete) {
  constexpr uint64_t kBuffered = 6000;
  auto pub = MakePublisher(true);
  PublishIds(*pub, 100, 100 + kBuffered);  // before the subscriber exists
  ASSERT_TRUE(pub->Flush());
  auto o = Options(*pub);
  o.replay_on_start = true;
  // Real time: a request whose replies stop (the tail and the end marker dropped) is resumed
  // after 250 ms of quiet; a fresh request still has the whole replay timeout to answer.
  o.clock = &common::SystemClock::Instance();
  o.replay_timeout = 30s;
  auto sub = StartSubscriber(o);
  ASSERT_TRUE(sink_.WaitBatches(kBuffered));
  EXPECT_GT(sub->stats().replay_requests, 1u);  // the mark was passed: resumed at least once
  WaitSubscribed(*pub, *sub);
  PublishIds(*pub, 100 + kBuffered, 110 + kBuffered);
  ASSERT_TRUE(sink_.WaitBatches(kBuffered + 10));
  EXPECT_EQ(sink_.log(), Ids(100, 110 + kBuffered));
  EXPECT_EQ(sub->stats().clears, 0u);
  EXPECT_EQ(sub->stats().replay_failures, 0u);
}

TEST_F(SubscriberTest, ReplayBufferTooShortClears) {
  auto pub = MakePublisher(true, ReplyLayout::kPost45177, /*buffer_steps=*/2);
  auto sub = StartSubscriber(Options(*pub));
  WaitSubscribed(*pub, *sub);
  PublishIds(*pub, 100, 102);
  ASSERT_TRUE(pub->DropNext(4).ok());  // seq 2..5 dropped; the buffer keeps only 2 batches
  PublishIds(*pub, 102, 108);          // 6, 7 live
  ASSERT_TRUE(sink_.WaitFor([](const auto& log) { return !log.empty() && log.back() == 107; }));
  const auto log = sink_.log();
  // 100, 101, then a clear, then a contiguous run ending at 107.
  ASSERT_GE(log.size(), 4u);
  EXPECT_EQ(log[0], 100u);
  EXPECT_EQ(log[1], 101u);
  EXPECT_EQ(log[2], kClear);
  for (size_t i = 4; i < log.size(); ++i) EXPECT_EQ(log[i], log[i - 1] + 1);
  EXPECT_EQ(sub->stats().replay_failures, 1u);
  for (auto h : sink_.blocks("default/pod-a")) EXPECT_GE(h, 104u);
}

TEST_F(SubscriberTest, ReplayTimeoutClearsAndContinuesFromLive) {
  auto pub = MakePublisher(true);
  auto o = Options(*pub);
  o.replay_timeout = 200ms;
  auto sub = StartSubscriber(o);
  WaitSubscribed(*pub, *sub);
  pub->SetIgnoreReplay(true);
  PublishIds(*pub, 100, 102);
  ASSERT_TRUE(pub->DropNext(1).ok());
  PublishIds(*pub, 102, 106);  // 102 dropped, 103.. live (held during the replay)
  ASSERT_TRUE(Eventually([&] { return sub->stats().replay_requests == 1; }));
  ASSERT_TRUE(sink_.WaitBatches(2));
  // Just short of the timeout the replay is still pending.
  clock_.Advance(199ms);
  EXPECT_EQ(sub->stats().replay_failures, 0u);
  clock_.Advance(1ms);
  ASSERT_TRUE(sink_.WaitFor([](const auto& log) { return !log.empty() && log.back() == 105; }));
  EXPECT_EQ(sink_.log(), (std::vector<uint64_t>{100, 101, kClear, 103, 104, 105}));
  EXPECT_EQ(sub->stats().replay_failures, 1u);
  // The subscriber is still fine afterwards.
  pub->SetIgnoreReplay(false);
  PublishIds(*pub, 106, 107);
  ASSERT_TRUE(sink_.WaitContains(106));
}

TEST_F(SubscriberTest, EngineRestartClearsThenApplies) {
  auto pub = MakePublisher(true);
  auto sub = StartSubscriber(Options(*pub));
  WaitSubscribed(*pub, *sub);
  PublishIds(*pub, 100, 105);
  ASSERT_TRUE(sink_.WaitBatches(5));
  ASSERT_TRUE(pub->Restart().ok());
  PublishIds(*pub, 200, 203);  // seq 0..2 again
  ASSERT_TRUE(sink_.WaitBatches(8));
  EXPECT_EQ(sink_.log(), (std::vector<uint64_t>{100, 101, 102, 103, 104, kClear, 200, 201, 202}));
  EXPECT_EQ(sink_.blocks("default/pod-a"), (std::set<uint64_t>{200, 201, 202}));
  EXPECT_EQ(sub->stats().restarts, 1u);
}

TEST_F(SubscriberTest, PublisherDownAndUpReconnectsWithBackoff) {
  auto pub = MakePublisher(true);
  const std::string ep = pub->endpoint();
  const std::string rep = pub->replay_endpoint();
  auto sub = StartSubscriber(Options(*pub));
  WaitSubscribed(*pub, *sub);
  PublishIds(*pub, 100, 105);
  ASSERT_TRUE(sink_.WaitBatches(5));
  pub->Stop();
  pub.reset();
  ASSERT_TRUE(Eventually([&] { return sub->stats().disconnections >= 1; }));
  // Let a few reconnection attempts fail.
  ASSERT_TRUE(Eventually([&] { return sub->stats().reconnect_attempts >= 2; }));
  // The engine comes back on the same ports (a restart: sequence from 0, empty buffer).
  pub = MakePublisher(true, ReplyLayout::kPost45177, 10000, ep, rep);
  // After reconnecting the subscriber asks for what it missed (from seq 5): wait for that
  // request, which also means the SUB connection is up.
  ASSERT_TRUE(Eventually([&] { return pub->replay_requests() >= 1; }))
      << "connections " << sub->stats().connections << " attempts "
      << sub->stats().reconnect_attempts << " replay requests " << sub->stats().replay_requests;
  ASSERT_TRUE(Eventually([&] { return sub->stats().replay_success >= 1; }));
  PublishIds(*pub, 300, 303);
  ASSERT_TRUE(sink_.WaitBatches(8));
  EXPECT_EQ(sink_.log(), (std::vector<uint64_t>{100, 101, 102, 103, 104, kClear, 300, 301, 302}));
  const auto st = sub->stats();
  EXPECT_EQ(st.connections, 2u);
  EXPECT_GE(st.reconnect_attempts, 2u);
}

TEST_F(SubscriberTest, MalformedFramesAreCountedAndSkipped) {
  auto pub = MakePublisher(false);
  auto sub = StartSubscriber(Options(*pub));
  const uint64_t probes = WaitSubscribed(*pub, *sub);
  PublishIds(*pub, 100, 102);
  ASSERT_TRUE(pub->SendRawMultipart({"kv-events", std::string(8, '\0')}).ok());       // 2 frames
  ASSERT_TRUE(pub->SendRawMultipart({"kv-events", std::string(7, '\0'), "x"}).ok());  // 7-byte seq
  ASSERT_TRUE(pub->SendRawMultipart({"a", std::string(8, '\0'), "b", "c"}).ok());     // 4 frames
  ASSERT_TRUE(pub->PublishPayload("garbage, not msgpack").ok());  // seq 2: undecodable
  PublishIds(*pub, 103, 105);                                     // seq 3, 4
  ASSERT_TRUE(sink_.WaitContains(104));
  EXPECT_EQ(sink_.log(), (std::vector<uint64_t>{100, 101, kClear, 103, 104}));
  const auto st = sub->stats();
  EXPECT_EQ(st.frame_errors - probes, 3u);
  EXPECT_EQ(st.decode_errors, 1u);
  EXPECT_EQ(st.gaps, 0u);
}

TEST_F(SubscriberTest, SlowConsumerOverflowClearsAndResyncs) {
  auto pub = MakePublisher(false);
  auto o = Options(*pub);
  o.max_queued_bytes = 4 * 1024;  // a few batches
  auto sub = StartSubscriber(o);
  WaitSubscribed(*pub, *sub);
  sink_.Close();  // the applier blocks on the first batch
  PublishIds(*pub, 100, 140);
  ASSERT_TRUE(pub->Flush());
  ASSERT_TRUE(Eventually([&] { return sub->stats().overflow_drops > 0; }));
  sink_.Open();
  // The queue may still be full when the next batch arrives (dropped too): keep publishing
  // until one gets through.
  uint64_t last = 139;
  ASSERT_TRUE(Eventually([&] {
    EXPECT_TRUE(pub->Publish(B(++last)).ok());
    return sink_.WaitContains(last, 20ms);
  }));
  const auto log = sink_.log();
  // After the last clear, the applied batches are contiguous and end with 140.
  auto last_clear = std::find(log.rbegin(), log.rend(), kClear);
  ASSERT_NE(last_clear, log.rend());
  std::vector<uint64_t> tail(last_clear.base(), log.end());
  ASSERT_FALSE(tail.empty());
  for (size_t i = 1; i < tail.size(); ++i) EXPECT_EQ(tail[i], tail[i - 1] + 1);
  EXPECT_EQ(tail.back(), last);
  EXPECT_GT(sub->stats().overflow_drops, 0u);
  // Every stored hash is one the sink was told about after the last clear.
  for (auto h : sink_.blocks("default/pod-a")) EXPECT_GE(h, tail.front());
}

// A batch whose decoded form would not fit the pod's queue budget (BlockRemoved of 1-byte
// hashes: 8 bytes each once decoded) is refused by the decoder before it allocates: counted,
// the pod cleared, and the stream goes on.
TEST_F(SubscriberTest, BatchTooLargeOnceDecodedIsRefusedAndThePodCleared) {
  auto pub = MakePublisher(false);
  auto o = Options(*pub);
  o.max_queued_bytes = 64 * 1024;
  auto sub = StartSubscriber(o);
  WaitSubscribed(*pub, *sub);
  PublishIds(*pub, 100, 101);
  kv::EventBatch big;
  big.events.emplace_back(std::in_place_type<kv::BlockRemoved>);
  // 20 kB on the wire, 160 kB decoded.
  std::get<kv::BlockRemoved>(big.events.back()).block_hashes.assign(20000, 7);
  ASSERT_TRUE(pub->Publish(big).ok());
  PublishIds(*pub, 102, 103);
  ASSERT_TRUE(sink_.WaitContains(102));
  EXPECT_EQ(sink_.log(), (std::vector<uint64_t>{100, kClear, 102}));
  EXPECT_EQ(sub->stats().too_large, 1u);
  EXPECT_EQ(sub->stats().decode_errors, 0u);
}

// A message over max_message_bytes never reaches the decoder: libzmq refuses it (and drops
// the connection, which comes back by itself); what was lost meanwhile is a gap like any
// other.
TEST_F(SubscriberTest, MessageOverTheSizeLimitIsRefusedByZmq) {
  auto pub = MakePublisher(false);
  auto o = Options(*pub);
  o.max_message_bytes = 16 * 1024;
  auto sub = StartSubscriber(o);
  WaitSubscribed(*pub, *sub);
  PublishIds(*pub, 100, 101);
  ASSERT_TRUE(sink_.WaitContains(100));
  ASSERT_TRUE(pub->PublishPayload(std::string(100 * 1024, '\x90')).ok());
  // libzmq gives up on this peer for good (no reconnection is announced): once the clock is
  // past the announcement's grace, the subscriber makes new sockets itself.
  ASSERT_TRUE(Eventually([&] { return sub->stats().disconnections >= 1; }));
  uint64_t last = 101;
  ASSERT_TRUE(Eventually([&] {
    clock_.Advance(2s);
    EXPECT_TRUE(pub->Publish(B(++last)).ok());
    return sink_.WaitContains(last, 20ms);
  })) << "connections "
      << sub->stats().connections << " disconnections " << sub->stats().disconnections
      << " frame errors " << sub->stats().frame_errors << " decode errors "
      << sub->stats().decode_errors << " attempts " << sub->stats().reconnect_attempts;
  EXPECT_EQ(sub->stats().decode_errors, 0u);
  EXPECT_EQ(sub->stats().too_large, 0u);
  EXPECT_GE(sub->stats().connections, 2u);
}

TEST_F(SubscriberTest, DataParallelRanksFeedOnePod) {
  auto r0 = MakePublisher(true);
  auto r1 = MakePublisher(true);
  SubscriberOptions o = Options(*r0);
  o.ranks.push_back({r1->endpoint(), r1->replay_endpoint()});
  auto sub = StartSubscriber(o);
  WaitSubscribed(*r0, *sub);
  const uint64_t before = sub->stats().frame_errors;
  ASSERT_TRUE(Eventually([&] {
    EXPECT_TRUE(r1->SendRawMultipart({"probe"}).ok());
    return Eventually([&] { return sub->stats().frame_errors > before; }, 20ms);
  }));
  PublishIds(*r0, 100, 103);
  PublishIds(*r1, 200, 203);
  ASSERT_TRUE(sink_.WaitBatches(6));
  EXPECT_EQ(sink_.blocks("default/pod-a"), (std::set<uint64_t>{100, 101, 102, 200, 201, 202}));
  // A restart of rank 1 clears the pod (both ranks' entries).
  ASSERT_TRUE(r1->Restart().ok());
  PublishIds(*r1, 300, 301);
  ASSERT_TRUE(sink_.WaitContains(300));
  EXPECT_EQ(sink_.blocks("default/pod-a"), (std::set<uint64_t>{300}));
}

TEST_F(SubscriberTest, Ipv6Loopback) {
  PublisherOptions po;
  po.endpoint = "tcp://[::1]:*";
  Publisher pub(po);
  if (!pub.Start().ok()) GTEST_SKIP() << "no IPv6 loopback";
  EXPECT_EQ(pub.endpoint().rfind("tcp://[::1]:", 0), 0u) << pub.endpoint();
  auto sub = StartSubscriber(Options(pub));
  WaitSubscribed(pub, *sub);
  PublishIds(pub, 100, 101);
  ASSERT_TRUE(sink_.WaitContains(100));
}

TEST_F(SubscriberTest, MetricsAreExported) {
  prometheus::Registry registry;
  KvMetrics metrics(registry);
  auto pub = MakePublisher(true);
  auto o = Options(*pub);
  auto sub = std::make_unique<Subscriber>(o, &sink_, metrics.ForPod("default/pod-a"));
  ASSERT_TRUE(sub->Start().ok());
  WaitSubscribed(*pub, *sub);
  PublishIds(*pub, 100, 101);
  ASSERT_TRUE(pub->DropNext(2).ok());
  PublishIds(*pub, 101, 104);
  ASSERT_TRUE(sink_.WaitBatches(4));
  ASSERT_TRUE(Eventually([&] { return sub->stats().replay_success == 1; }));
  // Metrics of a batch are updated right after the sink call returns.
  ASSERT_TRUE(Eventually([&] { return sub->stats().batches_applied == 4; }));
  const std::string text = prometheus::TextSerializer().Serialize(registry.Collect());
  auto has = [&](const std::string& line) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text;
  };
  has("aibrix_kvcache_zmq_connections_total{pod_key=\"default/pod-a\"} 1");
  has("aibrix_kvcache_zmq_missed_events_total{pod_key=\"default/pod-a\"} 2");
  has("aibrix_kvcache_zmq_replay_requests_total{pod_key=\"default/pod-a\"} 1");
  has("aibrix_kvcache_zmq_replay_success_total{pod_key=\"default/pod-a\"} 1");
  has("aibrix_kvcache_zmq_events_processed_total{event_type=\"BlockStored\",pod_key=\"default/"
      "pod-a\"} 4");
  has("aibrix_kvcache_zmq_events_received_total{event_type=\"BlockStored\",pod_key=\"default/"
      "pod-a\"} 4");
  has("aibrix_kvcache_zmq_last_sequence_id{pod_key=\"default/pod-a\",rank=\"0\"} 3");
  has("aibrix_kvcache_zmq_connection_status{pod_key=\"default/pod-a\",rank=\"0\"} 1");
  has("aibrix_kvcache_zmq_errors_total{error_type=\"frame\",pod_key=\"default/pod-a\"}");
  has("aibrix_kvcache_zmq_event_processing_duration_seconds_count{pod_key=\"default/pod-a\"} 4");
  sub->Stop();
  sub.reset();
  metrics.RemovePod("default/pod-a");
  const std::string after = prometheus::TextSerializer().Serialize(registry.Collect());
  EXPECT_EQ(after.find("default/pod-a"), std::string::npos);
}

}  // namespace
}  // namespace aibrix::kvevents
