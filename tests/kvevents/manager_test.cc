#include "aibrix/kvevents/manager.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "aibrix/kvpublish/fleet.h"
#include "aibrix/kvpublish/publisher.h"
#include "aibrix/store/test_pods.h"
#include "fmt/format.h"
#include "tests/kvevents/recording_sink.h"
#include "tests/util/poll.h"

namespace aibrix::kvevents {
namespace {

using kvpublish::BindMode;
using kvpublish::Publisher;
using kvpublish::PublisherOptions;

using namespace std::chrono_literals;
using store::testing::MakePod;
using testing::RecordingSink;

constexpr uint64_t kClear = RecordingSink::kClear;

kv::EventBatch B(uint64_t id) {
  kv::EventBatch b;
  kv::BlockStored s;
  s.block_hashes = {id};
  s.block_size = 16;
  b.events.push_back(s);
  return b;
}

using aibrix::testing::Eventually;

// Records the PodSource of every batch.
class SourceSink : public RecordingSink {
 public:
  void ApplyBatch(const kv::PodSource& source, const kv::EventBatch& batch) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      sources_.push_back(source);
    }
    RecordingSink::ApplyBatch(source, batch);
  }
  std::vector<kv::PodSource> sources() {
    std::lock_guard<std::mutex> l(mu_);
    return sources_;
  }

 private:
  std::mutex mu_;
  std::vector<kv::PodSource> sources_;
};

class ManagerTest : public ::testing::Test {
 protected:
  EventManagerOptions Options(bool enabled = true) {
    EventManagerOptions o;
    o.enabled = enabled;
    o.subscriber.reconnect_initial = 20ms;
    o.subscriber.reconnect_max = 100ms;
    o.subscriber.replay_timeout = 1s;
    o.subscriber.clock = &clock_;  // replays time out only if a test advances it (none does)
    return o;
  }

  std::unique_ptr<Publisher> StartPublisher(int port = 0, int replay_port = 0) {
    PublisherOptions o;
    o.endpoint = port ? fmt::format("tcp://127.0.0.1:{}", port) : "tcp://127.0.0.1:*";
    o.replay_endpoint =
        replay_port ? fmt::format("tcp://127.0.0.1:{}", replay_port) : "tcp://127.0.0.1:*";
    o.bind_mode = BindMode::kBind;
    auto p = std::make_unique<Publisher>(o);
    if (!p->Start().ok()) return nullptr;
    return p;
  }

  store::PodObject EligiblePod(const std::string& name, const Publisher& p) {
    auto pod = MakePod(name, "llama", "127.0.0.1");
    pod.labels[store::kKvEventsEnabledLabel] = "true";
    pod.labels[store::kKvEventsPortLabel] = std::to_string(p.port());
    pod.labels[store::kKvReplayPortLabel] = std::to_string(p.replay_port());
    pod.labels[store::kLoraIdLabel] = "42";
    return pod;
  }

  // Publishes until the sink has received batch `id` (the subscription may still be
  // propagating; the start-up replay catches earlier ones anyway).
  void PublishUntilSeen(Publisher& p, uint64_t id) {
    ASSERT_TRUE(p.Publish(B(id)).ok());
    ASSERT_TRUE(sink_.WaitContains(id));
  }

  common::FakeClock clock_;
  SourceSink sink_;
  store::Store store_;
};

TEST_F(ManagerTest, SubscribesEligiblePodsAndTagsTheirEvents) {
  auto pub = StartPublisher();
  ASSERT_TRUE(pub);
  store_.AddPod(EligiblePod("before-start", *pub));  // cached before the manager starts
  EventManager m(&store_, &sink_, nullptr, Options());
  ASSERT_TRUE(m.Start().ok());
  ASSERT_TRUE(m.WaitIdle());
  EXPECT_EQ(m.SubscribedPods(), std::vector<std::string>{"default/before-start"});
  EXPECT_EQ(m.Endpoints("default/before-start")[0].endpoint, pub->endpoint());
  PublishUntilSeen(*pub, 7);
  const auto src = sink_.sources().at(0);
  EXPECT_EQ(src.pod_key, "default/before-start");
  EXPECT_EQ(src.model, "llama");
  EXPECT_EQ(src.lora_id, 42);
}

TEST_F(ManagerTest, EligibilityRules) {
  auto pub = StartPublisher();
  ASSERT_TRUE(pub);
  EventManager m(&store_, &sink_, nullptr, Options());
  ASSERT_TRUE(m.Start().ok());
  auto no_label = EligiblePod("no-label", *pub);
  no_label.labels.erase(store::kKvEventsEnabledLabel);
  auto label_false = EligiblePod("label-false", *pub);
  label_false.labels[store::kKvEventsEnabledLabel] = "True";  // exactly "true" only
  auto pending = EligiblePod("pending", *pub);
  pending.phase = "Pending";
  auto no_ip = EligiblePod("no-ip", *pub);
  no_ip.ip = "";
  auto not_ready = EligiblePod("not-ready", *pub);  // readiness is not required
  not_ready.ready_condition = false;
  for (const auto& p : {no_label, label_false, pending, no_ip, not_ready}) store_.AddPod(p);
  ASSERT_TRUE(m.WaitIdle());
  EXPECT_EQ(m.SubscribedPods(), std::vector<std::string>{"default/not-ready"});
  // HasTarget (the listener's filter) agrees with TargetForPod on every case.
  auto no_port = EligiblePod("no-port", *pub);
  no_port.labels[store::kKvEventsPortLabel] = "0";
  for (const auto& p : {no_label, label_false, pending, no_ip, not_ready, no_port}) {
    store::Pod record;
    record.object = p;
    EXPECT_EQ(HasTarget(record, Options()), TargetForPod(record, Options()) != nullptr) << p.name;
  }

  // A pod without a model name is not even cached by the Store; TargetForPod rejects it too.
  store::Pod bare;
  bare.object = EligiblePod("no-model", *pub);
  bare.object.labels.erase(store::kModelNameLabel);
  EXPECT_EQ(TargetForPod(bare, Options()), nullptr);
  // Disabled manager: nothing.
  bare.object = EligiblePod("x", *pub);
  EXPECT_EQ(TargetForPod(bare, Options(false)), nullptr);
  EXPECT_NE(TargetForPod(bare, Options(true)), nullptr);
}

TEST_F(ManagerTest, DisabledManagerDoesNothing) {
  auto pub = StartPublisher();
  ASSERT_TRUE(pub);
  EventManager m(&store_, &sink_, nullptr, Options(false));
  ASSERT_TRUE(m.Start().ok());
  store_.AddPod(EligiblePod("a", *pub));
  EXPECT_TRUE(m.SubscribedPods().empty());
  m.Stop();
}

TEST_F(ManagerTest, DefaultPortsIpv6AndDataParallelRanks) {
  store::Pod pod;
  pod.object = MakePod("dp", "llama", "fd00::5");
  pod.object.labels[store::kKvEventsEnabledLabel] = "true";
  pod.object.containers[0].env.emplace_back("data-parallel-size", "3");
  auto t = TargetForPod(pod, Options());
  ASSERT_NE(t, nullptr);
  ASSERT_EQ(t->ranks.size(), 3u);
  EXPECT_EQ(t->ranks[0].endpoint, "tcp://[fd00::5]:5557");
  EXPECT_EQ(t->ranks[0].replay_endpoint, "tcp://[fd00::5]:5558");
  EXPECT_EQ(t->ranks[2].endpoint, "tcp://[fd00::5]:5559");
  EXPECT_EQ(t->ranks[2].replay_endpoint, "tcp://[fd00::5]:5560");
  pod.object.labels[store::kKvReplayPortLabel] = "0";  // no replay socket
  t = TargetForPod(pod, Options());
  EXPECT_TRUE(t->ranks[0].replay_endpoint.empty());
}

TEST_F(ManagerTest, DataParallelPodGetsOneStreamPerRank) {
  // Two publishers on consecutive ports (rank 0 and rank 1).
  std::unique_ptr<Publisher> r0, r1;
  for (int attempt = 0; attempt < 20 && !r1; ++attempt) {
    r0 = StartPublisher();
    ASSERT_TRUE(r0);
    r1 = StartPublisher(r0->port() + 1, 0);
    if (r1) break;
  }
  ASSERT_TRUE(r1);
  auto pod = EligiblePod("dp", *r0);
  pod.labels.erase(store::kKvReplayPortLabel);
  pod.labels[store::kKvReplayPortLabel] = "0";
  pod.containers[0].env.emplace_back("data-parallel-size", "2");
  EventManager m(&store_, &sink_, nullptr, Options());
  ASSERT_TRUE(m.Start().ok());
  store_.AddPod(pod);
  ASSERT_TRUE(m.WaitIdle());
  ASSERT_EQ(m.Endpoints("default/dp").size(), 2u);
  ASSERT_TRUE(Eventually([&] { return m.PodStats("default/dp").connections == 2; }));
  // Publish until both ranks' batches arrive (subscriptions may still be propagating).
  ASSERT_TRUE(Eventually([&] {
    EXPECT_TRUE(r0->Publish(B(1)).ok());
    EXPECT_TRUE(r1->Publish(B(2)).ok());
    return sink_.WaitContains(1, 20ms) && sink_.WaitContains(2, 20ms);
  }));
  EXPECT_EQ(sink_.blocks("default/dp"), (std::set<uint64_t>{1, 2}));
}

TEST_F(ManagerTest, DeleteIpChangeAndIneligibilityClearThePod) {
  auto pub = StartPublisher();
  ASSERT_TRUE(pub);
  EventManager m(&store_, &sink_, nullptr, Options());
  ASSERT_TRUE(m.Start().ok());
  auto pod = EligiblePod("p", *pub);
  store_.AddPod(pod);
  ASSERT_TRUE(m.WaitIdle());
  PublishUntilSeen(*pub, 1);

  // An update that changes nothing for us keeps the subscription (no clear).
  pod.labels["unrelated"] = "x";
  store_.UpdatePod(pod);
  ASSERT_TRUE(m.WaitIdle());
  EXPECT_EQ(sink_.clears(), 0u);

  // IP change: clear, then a subscription to the new address.
  pod.ip = "127.0.0.2";
  store_.UpdatePod(pod);
  ASSERT_TRUE(m.WaitIdle());
  EXPECT_EQ(sink_.clears(), 1u);
  EXPECT_TRUE(sink_.blocks("default/p").empty());
  EXPECT_EQ(m.Endpoints("default/p")[0].endpoint, fmt::format("tcp://127.0.0.2:{}", pub->port()));

  // Back to the publisher's address, then the label goes away: clear, unsubscribed.
  pod.ip = "127.0.0.1";
  store_.UpdatePod(pod);
  ASSERT_TRUE(m.WaitIdle());
  PublishUntilSeen(*pub, 2);
  pod.labels[store::kKvEventsEnabledLabel] = "false";
  store_.UpdatePod(pod);
  ASSERT_TRUE(m.WaitIdle());
  EXPECT_TRUE(m.SubscribedPods().empty());
  EXPECT_EQ(sink_.clears(), 3u);

  // Eligible again, then deleted: clear.
  pod.labels[store::kKvEventsEnabledLabel] = "true";
  store_.UpdatePod(pod);
  ASSERT_TRUE(m.WaitIdle());
  EXPECT_EQ(m.SubscribedPods().size(), 1u);
  store_.DeletePod("default", "p");
  ASSERT_TRUE(m.WaitIdle());
  EXPECT_TRUE(m.SubscribedPods().empty());
  EXPECT_EQ(sink_.clears(), 4u);
  const auto log = sink_.log();
  EXPECT_EQ(log.back(), kClear);
}

// A sink whose ClearPod blocks while the gate is closed: it holds the manager thread (which
// clears a removed pod's entries) inside a reconciliation.
class GatedClearSink : public RecordingSink {
 public:
  void ClearPod(const std::string& pod_key) override {
    {
      std::unique_lock<std::mutex> l(gate_mu_);
      ++waiting_;
      gate_cv_.wait(l, [&] { return open_; });
      --waiting_;
    }
    RecordingSink::ClearPod(pod_key);
  }
  void CloseGate() {
    std::lock_guard<std::mutex> l(gate_mu_);
    open_ = false;
  }
  void OpenGate() {
    std::lock_guard<std::mutex> l(gate_mu_);
    open_ = true;
    gate_cv_.notify_all();
  }
  int waiting() {
    std::lock_guard<std::mutex> l(gate_mu_);
    return waiting_;
  }

 private:
  std::mutex gate_mu_;
  std::condition_variable gate_cv_;
  bool open_ = true;
  int waiting_ = 0;
};

// Changes between two versions without a target are not queued (HasTarget): while the
// manager thread is still reconciling the change that made the pod ineligible, more
// ineligible versions come; the pod stays unsubscribed, and becomes subscribed again as soon
// as a version is eligible.
TEST_F(ManagerTest, ChangesBetweenIneligibleVersionsNeedNoReconciliation) {
  auto pub = StartPublisher();
  ASSERT_TRUE(pub);
  GatedClearSink sink;
  EventManager m(&store_, &sink, nullptr, Options());
  ASSERT_TRUE(m.Start().ok());
  auto pod = EligiblePod("p", *pub);
  store_.AddPod(pod);
  ASSERT_TRUE(m.WaitIdle());
  ASSERT_EQ(m.SubscribedPods().size(), 1u);
  sink.CloseGate();
  pod.labels[store::kKvEventsEnabledLabel] = "false";
  store_.UpdatePod(pod);
  ASSERT_TRUE(Eventually([&] { return sink.waiting() == 1; }));  // unsubscribing, held
  for (int i = 0; i < 3; ++i) {
    pod.labels["unrelated"] = std::to_string(i);
    pod.ready_condition = i % 2 == 0;
    store_.UpdatePod(pod);
  }
  sink.OpenGate();
  ASSERT_TRUE(m.WaitIdle());
  EXPECT_TRUE(m.SubscribedPods().empty());
  EXPECT_EQ(sink.clears(), 1u);
  // Ineligible pods added and removed: nothing to do.
  auto other = EligiblePod("other", *pub);
  other.phase = "Pending";
  store_.AddPod(other);
  store_.DeletePod("default", "other");
  ASSERT_TRUE(m.WaitIdle());
  EXPECT_TRUE(m.SubscribedPods().empty());
  pod.labels[store::kKvEventsEnabledLabel] = "true";
  store_.UpdatePod(pod);
  ASSERT_TRUE(m.WaitIdle());
  EXPECT_EQ(m.SubscribedPods(), std::vector<std::string>{"default/p"});
}

TEST_F(ManagerTest, PodChangesNeverBlockTheStoreWriter) {
  GatedClearSink sink;
  EventManager m(&store_, &sink, nullptr, Options());
  ASSERT_TRUE(m.Start().ok());
  // Unroutable addresses: connecting would take long if it were done on the writer's thread.
  auto eligible = [](int i) {
    auto pod = MakePod(fmt::format("p{}", i), "llama", fmt::format("10.255.{}.1", i));
    pod.labels[store::kKvEventsEnabledLabel] = "true";
    return pod;
  };
  store_.AddPod(eligible(0));
  ASSERT_TRUE(m.WaitIdle());
  // Hold the manager thread inside the reconciliation of a deleted pod.
  sink.CloseGate();
  store_.DeletePod("default", "p0");
  ASSERT_TRUE(Eventually([&] { return sink.waiting() == 1; }));
  // The store writer still gets through every change while the manager thread is held.
  std::atomic<bool> added{false};
  std::thread writer([&] {
    for (int i = 1; i <= 50; ++i) store_.AddPod(eligible(i));
    added = true;
  });
  const bool writer_done = Eventually([&] { return added.load(); }, 30s);
  sink.OpenGate();
  writer.join();
  EXPECT_TRUE(writer_done) << "AddPod waited for the manager thread";
  ASSERT_TRUE(m.WaitIdle(20s));
  EXPECT_EQ(m.SubscribedPods().size(), 50u);
  m.Stop();
  m.Stop();
}

}  // namespace
}  // namespace aibrix::kvevents

namespace aibrix::kvevents {
namespace {

// Counts the batches applied per pod, nothing else (a fleet's worth of events).
class CountingSink : public kv::EventSink {
 public:
  void ApplyBatch(const kv::PodSource& source, const kv::EventBatch&) override {
    std::lock_guard<std::mutex> l(mu_);
    ++batches_[source.pod_key];
  }
  void ClearPod(const std::string&) override {}
  size_t pods_seen() const {
    std::lock_guard<std::mutex> l(mu_);
    return batches_.size();
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> batches_;
};

// More pods than two threads per pod or libzmq's default 1,023 sockets ever allowed (the old
// design stopped at ~340): every one is subscribed on the shared runtime and its events
// arrive; the whole fleet then stops at once.
TEST(ManagerFleetTest, FiveHundredPodsAllDeliverAndStopTogether) {
  constexpr int kPods = 500;
  kvpublish::FleetOptions fo;
  fo.engines = kPods;
  fo.first_address = fmt::format("127.{}.1.1", 100 + getpid() % 120);
  fo.pub_port = 0;
  fo.replay_port = 0;
  fo.blocks_per_s = 20000;
  kvpublish::Fleet fleet(fo);
  ASSERT_TRUE(fleet.Start().ok());
  store::Store store;
  CountingSink sink;
  EventManagerOptions o;
  o.enabled = true;
  o.ingest.max_ranks = kPods;
  o.ingest.connect_spread = 200ms;
  EventManager m(&store, &sink, nullptr, o);
  ASSERT_TRUE(m.Start().ok());
  for (int i = 0; i < kPods; ++i) {
    const kvpublish::EngineInfo& e = fleet.engines()[static_cast<size_t>(i)];
    auto pod = MakePod(fmt::format("engine-{}", i), fo.model, e.address);
    pod.labels[store::kKvEventsEnabledLabel] = "true";
    pod.labels[store::kKvEventsPortLabel] = std::to_string(e.pub_port);
    pod.labels[store::kKvReplayPortLabel] = std::to_string(e.replay_port);
    store.AddPod(pod);
  }
  ASSERT_TRUE(m.WaitIdle(30s));
  EXPECT_EQ(m.SubscribedPods().size(), static_cast<size_t>(kPods));
  EXPECT_TRUE(Eventually([&] { return sink.pods_seen() == kPods; }, 60s))
      << sink.pods_seen() << " of " << kPods << " pods delivered events";
  m.Stop();
  EXPECT_TRUE(m.SubscribedPods().empty());
  fleet.Stop();
}

}  // namespace
}  // namespace aibrix::kvevents
