// Fleet on real ZMQ over loopback: framing, contiguity, replay, each fault on its engine only,
// the discovery file. Every wait is bounded.
#include "aibrix/kvpublish/fleet.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <optional>
#include <variant>

#include "aibrix/discovery/static_config.h"
#include "aibrix/kvevents/decoder.h"
#include "fmt/format.h"
#include "tests/kvevents/zmq_test_util.h"
#include "zmq.hpp"

namespace aibrix::kvpublish {
namespace {

using Clock = std::chrono::steady_clock;
using Frames = std::vector<std::string>;
using kvevents::testing::RecvMultipart;

uint64_t SeqOf(const std::string& s) {
  uint64_t v = 0;
  for (unsigned char c : s) v = (v << 8) | c;
  return v;
}

// What one engine's SUB saw.
struct Seen {
  std::vector<uint64_t> seqs;
  std::map<uint64_t, std::string> payloads;  // by seq (the latest one)
  int batches = 0, bad_frames = 0, gaps = 0, backwards = 0, backwards_not_to_zero = 0,
      undecodable = 0, huge = 0, long_runs = 0, hostile_pair_batches = 0;
  std::optional<kv::EngineHash> chain_head;
  bool pairs_on_head = true;
  int anomalies() const {
    return bad_frames + gaps + backwards + undecodable + huge + long_runs + hostile_pair_batches;
  }
};

void Inspect(Seen& seen, const Frames& f) {
  if (f.size() != 3 || f[1].size() != 8) {
    ++seen.bad_frames;
    return;
  }
  const uint64_t seq = SeqOf(f[1]);
  if (!seen.seqs.empty()) {
    const uint64_t prev = seen.seqs.back();
    if (seq > prev + 1) ++seen.gaps;
    if (seq <= prev) {
      ++seen.backwards;
      if (seq != 0) ++seen.backwards_not_to_zero;
    }
  }
  seen.seqs.push_back(seq);
  seen.payloads[seq] = f[2];
  auto batch = kvevents::DecodeBatch(f[2]);
  if (!batch.ok()) {
    ++seen.undecodable;
    return;
  }
  ++seen.batches;
  const auto& events = batch->events;
  bool pairs = events.size() >= 2 && events.size() % 2 == 0;
  for (size_t i = 0; i < events.size(); ++i) {
    const auto* s = std::get_if<kv::BlockStored>(&events[i]);
    const auto* r = std::get_if<kv::BlockRemoved>(&events[i]);
    if (r != nullptr && r->block_hashes.size() > 100000) {
      bool one_byte = true;
      for (auto h : r->block_hashes) one_byte &= h < 128;
      if (one_byte) ++seen.huge;
    }
    if (s != nullptr && s->block_hashes.size() > 8) {
      ++seen.long_runs;
      if (!s->parent_block_hash) seen.chain_head = s->block_hashes[0];
    }
    if (i % 2 == 0) {
      pairs &= r != nullptr && r->block_hashes.size() == 1;
    } else {
      const auto* prev = std::get_if<kv::BlockRemoved>(&events[i - 1]);
      pairs &= s != nullptr && prev != nullptr && s->block_hashes.size() == 1 &&
               !s->parent_block_hash && s->block_hashes[0] == prev->block_hashes[0];
    }
  }
  if (pairs) {
    ++seen.hostile_pair_batches;
    const auto& head = std::get<kv::BlockRemoved>(events[0]).block_hashes[0];
    seen.pairs_on_head &= seen.chain_head.has_value() && *seen.chain_head == head;
  }
}

class FleetTest : public ::testing::Test {
 protected:
  FleetOptions Small(int engines) {
    FleetOptions o;
    o.engines = engines;
    o.pub_port = 0;
    o.replay_port = 0;
    o.workload.seed = 11;
    return o;
  }
  // One SUB per engine, subscribed to everything.
  std::vector<zmq::socket_t> Subscribe(const Fleet& fleet) {
    std::vector<zmq::socket_t> subs;
    for (const auto& e : fleet.engines()) {
      zmq::socket_t s(ctx_, zmq::socket_type::sub);
      s.set(zmq::sockopt::linger, 0);
      s.set(zmq::sockopt::subscribe, "");
      s.connect(e.endpoint());
      subs.push_back(std::move(s));
    }
    return subs;
  }
  // Receives on every SUB until `done(seen)` or `limit`.
  void Collect(std::vector<zmq::socket_t>& subs, std::vector<Seen>& seen,
               const std::function<bool()>& done, std::chrono::seconds limit) {
    std::vector<zmq::pollitem_t> items;
    for (auto& s : subs) items.push_back(zmq::pollitem_t{s.handle(), 0, ZMQ_POLLIN, 0});
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline && !done()) {
      if (zmq::poll(items.data(), items.size(), std::chrono::milliseconds(50)) <= 0) continue;
      for (size_t i = 0; i < items.size(); ++i) {
        if ((items[i].revents & ZMQ_POLLIN) == 0) continue;
        while (auto f = RecvMultipart(subs[i], std::chrono::milliseconds(0))) Inspect(seen[i], *f);
      }
    }
  }
  // Replays from `from` on a DEALER; returns the (seq, payload) pairs and whether the end
  // marker came in the post-#45177 layout.
  std::vector<std::pair<uint64_t, std::string>> Replay(const EngineInfo& e, uint64_t from,
                                                       bool* ended) {
    zmq::socket_t d(ctx_, zmq::socket_type::dealer);
    d.set(zmq::sockopt::linger, 0);
    d.connect(e.replay_endpoint());
    d.send(zmq::str_buffer(""), zmq::send_flags::sndmore);
    const std::string seq8 = Seq8(from);
    d.send(zmq::buffer(seq8), zmq::send_flags::none);
    std::vector<std::pair<uint64_t, std::string>> out;
    *ended = false;
    while (auto f = RecvMultipart(d, std::chrono::seconds(5))) {
      if (f->size() == 4 && (*f)[0].empty() && (*f)[1].empty() &&
          (*f)[2] == std::string(8, '\xff') && (*f)[3].empty()) {
        *ended = true;
        break;
      }
      EXPECT_EQ(f->size(), 4u);
      if (f->size() != 4) break;
      EXPECT_EQ((*f)[0], "");
      EXPECT_EQ((*f)[1], "");  // the topic
      out.emplace_back(SeqOf((*f)[2]), (*f)[3]);
    }
    return out;
  }

  zmq::context_t ctx_;
};

TEST_F(FleetTest, EveryEngineStreamsDecodableContiguousBatchesAndReplays) {
  FleetOptions o = Small(50);
  o.blocks_per_s = 30000;
  Fleet fleet(o);
  ASSERT_TRUE(fleet.Start().ok());
  ASSERT_EQ(fleet.engines().size(), 50u);
  EXPECT_EQ(fleet.engines()[0].address, "127.0.1.1");
  EXPECT_EQ(fleet.engines()[49].address, "127.0.1.50");
  auto subs = Subscribe(fleet);
  std::vector<Seen> seen(50);
  Collect(
      subs, seen,
      [&] {
        for (const auto& s : seen) {
          if (s.batches < 10) return false;
        }
        return true;
      },
      std::chrono::seconds(30));
  for (int i = 0; i < 50; ++i) {
    SCOPED_TRACE(fmt::format("engine {}", i));
    EXPECT_GE(seen[i].batches, 10);
    EXPECT_EQ(seen[i].anomalies(), 0);
  }
  // Replay from 0 returns the buffered range (all of it so far: fewer than buffer_steps),
  // contiguous, byte-identical to what PUB sent, and the post-#45177 end marker.
  for (int i : {0, 17, 49}) {
    SCOPED_TRACE(fmt::format("engine {}", i));
    bool ended = false;
    auto replayed = Replay(fleet.engines()[i], 0, &ended);
    EXPECT_TRUE(ended);
    ASSERT_FALSE(replayed.empty());
    EXPECT_EQ(replayed.front().first, 0u);
    for (size_t k = 0; k < replayed.size(); ++k) EXPECT_EQ(replayed[k].first, k);
    size_t compared = 0;
    for (const auto& [seq, payload] : replayed) {
      auto it = seen[i].payloads.find(seq);
      if (it == seen[i].payloads.end()) continue;
      EXPECT_EQ(it->second, payload);
      ++compared;
    }
    EXPECT_GE(compared, 5u);
    // From a later sequence number: starts exactly there.
    auto tail = Replay(fleet.engines()[i], 5, &ended);
    ASSERT_FALSE(tail.empty());
    EXPECT_EQ(tail.front().first, 5u);
  }
  const FleetStats stats = fleet.stats();
  EXPECT_GT(stats.blocks_stored, 0u);
  EXPECT_GE(stats.replay_requests, 6u);
  EXPECT_EQ(stats.errors, 0u);
  fleet.Stop();
}

TEST_F(FleetTest, EachFaultShowsUpOnItsEngineOnly) {
  FleetOptions o = Small(8);
  o.blocks_per_s = 6000;
  o.fault.every_batches = 5;
  o.fault.huge_message_bytes = 3'000'000;
  o.fault.huge_total_bytes = 6'000'000;  // two messages
  o.fault.hostile_chain_blocks = 2000;
  o.fault.hostile_pairs_per_batch = 4;
  o.fault.hostile_batches_per_s = 50;
  Fleet fleet(o);
  ASSERT_TRUE(fleet.Start().ok());
  auto subs = Subscribe(fleet);
  std::vector<Seen> seen(8);
  // Faults start once every SUB is known to receive (PUB drops what it sends before that).
  Collect(
      subs, seen,
      [&] {
        for (const auto& s : seen) {
          if (s.batches < 1) return false;
        }
        return true;
      },
      std::chrono::seconds(20));
  for (const char* spec :
       {"gap:1", "restart:2", "malformed:3", "garbage:4", "huge:5", "hostile:6"}) {
    ASSERT_TRUE(fleet.AddFault(*ParseFault(spec)).ok());
  }
  Collect(
      subs, seen,
      [&] {
        return seen[1].gaps >= 3 && seen[2].backwards >= 3 && seen[3].bad_frames >= 3 &&
               seen[4].undecodable >= 3 && seen[5].huge >= 2 && seen[6].hostile_pair_batches >= 3;
      },
      std::chrono::seconds(30));
  EXPECT_GE(seen[1].gaps, 3);
  EXPECT_GE(seen[2].backwards, 3);
  EXPECT_EQ(seen[2].backwards_not_to_zero, 0);
  EXPECT_GE(seen[3].bad_frames, 3);
  EXPECT_GE(seen[4].undecodable, 3);
  EXPECT_EQ(seen[5].huge, 2);
  EXPECT_GE(seen[6].long_runs, 2000 / 256);
  EXPECT_GE(seen[6].hostile_pair_batches, 3);
  EXPECT_TRUE(seen[6].pairs_on_head);
  // Nothing else anywhere: each engine shows only its own fault.
  EXPECT_EQ(seen[0].anomalies(), 0);
  EXPECT_EQ(seen[7].anomalies(), 0);
  EXPECT_EQ(seen[1].anomalies(), seen[1].gaps);
  EXPECT_EQ(seen[2].anomalies(), seen[2].backwards);
  EXPECT_EQ(seen[3].anomalies(), seen[3].bad_frames);
  EXPECT_EQ(seen[4].anomalies(), seen[4].undecodable);
  EXPECT_EQ(seen[5].anomalies(), seen[5].huge);
  EXPECT_EQ(seen[6].anomalies(), seen[6].long_runs + seen[6].hostile_pair_batches);
  // The gap engine's replay buffer still has the batches PUB dropped.
  bool ended = false;
  const uint64_t first_seen = seen[1].seqs.front();
  auto replayed = Replay(fleet.engines()[1], first_seen, &ended);
  EXPECT_TRUE(ended);
  ASSERT_FALSE(replayed.empty());
  for (size_t k = 0; k < replayed.size(); ++k) EXPECT_EQ(replayed[k].first, first_seen + k);
  EXPECT_GT(replayed.size(), seen[1].seqs.size());
  // A cleared engine streams normally again.
  fleet.ClearFaults(1);
  const FleetStats stats = fleet.stats();
  EXPECT_GE(stats.gaps, 3u);
  EXPECT_EQ(stats.huge_messages, 2u);
  EXPECT_EQ(stats.hostile_chain_blocks, 2000u);
}

TEST_F(FleetTest, DiscoveryFileLoadsWithTheStaticConfigLoader) {
  Fleet fleet(Small(20));
  ASSERT_TRUE(fleet.Start().ok());
  const std::string path = fmt::format("{}/fleet-test-{}.yaml", ::testing::TempDir(), getpid());
  ASSERT_TRUE(fleet.WriteDiscoveryFile(path).ok());
  auto config = discovery::LoadStaticConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->models.size(), 1u);
  EXPECT_EQ(config->models[0].name, "fleet-model");
  ASSERT_EQ(config->models[0].endpoints.size(), 20u);
  for (int i = 0; i < 20; ++i) {
    const auto& ep = config->models[0].endpoints[i];
    EXPECT_EQ(ep.host, fleet.engines()[i].address);
    EXPECT_TRUE(ep.kv_events);
    EXPECT_EQ(ep.kv_events_port, fleet.engines()[i].pub_port);
    EXPECT_EQ(ep.replay_port, fleet.engines()[i].replay_port);
  }
  EXPECT_EQ(discovery::StaticPods(*config).size(), 20u);
  std::remove(path.c_str());
}

TEST_F(FleetTest, FixedPortsPerAddressAndClearErrors) {
  FleetOptions o = Small(3);
  o.first_address = "127.0.2.254";  // .255 and .0 are skipped
  Fleet a(o);
  ASSERT_TRUE(a.Start().ok());
  EXPECT_EQ(a.engines()[1].address, "127.0.3.1");
  // Same ports on other addresses are fine; on the same address they are busy.
  FleetOptions same = Small(1);
  same.first_address = "127.0.3.1";
  same.pub_port = a.engines()[1].pub_port;
  Fleet b(same);
  const auto st = b.Start();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("127.0.3.1"), std::string::npos) << st;
  FleetOptions other = Small(1);
  other.first_address = "127.0.4.1";
  other.pub_port = a.engines()[1].pub_port;
  Fleet c(other);
  EXPECT_TRUE(c.Start().ok());

  FleetOptions bad = Small(2);
  bad.faults = {Fault{FaultKind::kGap, 2}};
  EXPECT_EQ(Fleet(bad).Start().code(), absl::StatusCode::kInvalidArgument);
  bad = Small(2);
  bad.first_address = "10.0.0.1";
  EXPECT_EQ(Fleet(bad).Start().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.AddFault(Fault{FaultKind::kHuge, 3}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(FleetFaultTest, ParsesKindAndEngine) {
  auto f = ParseFault("hostile:12");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->kind, FaultKind::kHostile);
  EXPECT_EQ(f->engine, 12);
  for (const char* bad : {"hostile", "nope:1", "gap:-1", "gap:x", "gap:1x", ":1"}) {
    EXPECT_FALSE(ParseFault(bad).ok()) << bad;
  }
  for (auto kind : {FaultKind::kGap, FaultKind::kRestart, FaultKind::kMalformed,
                    FaultKind::kGarbage, FaultKind::kHuge, FaultKind::kHostile}) {
    EXPECT_EQ(ParseFault(fmt::format("{}:0", FaultKindName(kind)))->kind, kind);
  }
}

}  // namespace
}  // namespace aibrix::kvpublish
