#include "aibrix/prefix/approx_index.h"

#include <map>
#include <numeric>
#include <random>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aibrix::prefix {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr int kBs = 4;

std::vector<uint32_t> Tokens(size_t blocks, uint32_t salt = 0) {
  std::vector<uint32_t> v(blocks * kBs);
  std::iota(v.begin(), v.end(), salt * 100000);
  return v;
}

PodMatch M(std::string pod, uint32_t blocks) {
  return PodMatch{std::move(pod), blocks, "GPU", MatchSource::kRouting};
}

class ApproxIndexTest : public ::testing::Test {
 protected:
  ApproxIndexOptions Options(uint64_t cap = 1000) {
    ApproxIndexOptions o;
    o.block_size = kBs;
    o.max_blocks_per_pod = cap;
    o.ttl = std::chrono::minutes(20);
    o.clock = &clock_;
    return o;
  }
  const HashContext ctx_{"m", "", 0};
  common::FakeClock clock_;
};

TEST_F(ApproxIndexTest, RecordThenMatch) {
  ApproxIndex index(Options());
  const auto t = Tokens(5);
  index.Record(ctx_, std::span(t).first(3 * kBs), "ns/a");
  index.Record(ctx_, t, "ns/b");
  EXPECT_THAT(index.Match(ctx_, t), ElementsAre(M("ns/b", 5), M("ns/a", 3)));
  EXPECT_THAT(index.Match(HashContext{"other-model", "", 0}, t), IsEmpty());
  EXPECT_THAT(index.Match(HashContext{"m", "lora", 0}, t), IsEmpty());
  EXPECT_EQ(index.memberships(), 8u);
  // Recording the same prompt again adds nothing.
  index.Record(ctx_, t, "ns/b");
  EXPECT_EQ(index.memberships(), 8u);
}

TEST_F(ApproxIndexTest, CapacityEvictsLeastRecentTailsAndKeepsPrefixes) {
  ApproxIndex index(Options(/*cap=*/6));
  const auto a = Tokens(4, 1), b = Tokens(4, 2);
  index.Record(ctx_, a, "ns/p");
  index.Record(ctx_, b, "ns/p");  // 8 > 6: two tail blocks of `a` go
  EXPECT_EQ(index.memberships(), 6u);
  EXPECT_THAT(index.Match(ctx_, b), ElementsAre(M("ns/p", 4)));
  EXPECT_THAT(index.Match(ctx_, a), ElementsAre(M("ns/p", 2)));
  // A prompt longer than the capacity keeps its first blocks.
  const auto c = Tokens(10, 3);
  index.Record(ctx_, c, "ns/q");
  EXPECT_THAT(index.Match(ctx_, c), ElementsAre(M("ns/q", 6)));
  EXPECT_EQ(index.Stats("ns/q")->evicted_blocks, 4u);
}

TEST_F(ApproxIndexTest, SharedPrefixStaysWhileItsBranchesAge) {
  ApproxIndex index(Options(/*cap=*/5));
  auto a = Tokens(4, 1);
  auto b = a;
  for (size_t i = 2 * kBs; i < b.size(); ++i) b[i] += 7;  // shares blocks 0..1 with a
  index.Record(ctx_, a, "ns/p");
  index.Record(ctx_, b, "ns/p");  // 6 distinct blocks > 5: a's last block goes
  EXPECT_THAT(index.Match(ctx_, a), ElementsAre(M("ns/p", 3)));
  EXPECT_THAT(index.Match(ctx_, b), ElementsAre(M("ns/p", 4)));
}

TEST_F(ApproxIndexTest, TtlExpiresOnSweepAndOnRecord) {
  ApproxIndex index(Options());
  const auto a = Tokens(3, 1), b = Tokens(3, 2);
  index.Record(ctx_, a, "ns/p");
  clock_.Advance(std::chrono::minutes(15));
  index.Record(ctx_, b, "ns/p");
  clock_.Advance(std::chrono::minutes(6));  // a is 21 min old, b 6 min
  EXPECT_EQ(index.Sweep(), 3u);
  EXPECT_THAT(index.Match(ctx_, a), IsEmpty());
  EXPECT_THAT(index.Match(ctx_, b), ElementsAre(M("ns/p", 3)));
  clock_.Advance(std::chrono::minutes(30));
  index.Record(ctx_, a, "ns/p");  // b expires on this record
  EXPECT_THAT(index.Match(ctx_, b), IsEmpty());
  EXPECT_THAT(index.Match(ctx_, a), ElementsAre(M("ns/p", 3)));
}

TEST_F(ApproxIndexTest, RemovePodForgetsIt) {
  ApproxIndex index(Options());
  const auto t = Tokens(3);
  index.Record(ctx_, t, "ns/a");
  index.Record(ctx_, t, "ns/b");
  index.RemovePod("ns/a");
  EXPECT_THAT(index.Match(ctx_, t), ElementsAre(M("ns/b", 3)));
  EXPECT_EQ(index.memberships(), 3u);
  EXPECT_FALSE(index.Stats("ns/a").has_value());
  EXPECT_EQ(index.Stats("ns/b")->blocks, 3u);
}

TEST_F(ApproxIndexTest, PromptsEndingOrBranchingInsideARunSplitIt) {
  ApproxIndex index(Options(/*cap=*/9));
  const auto a = Tokens(6, 1);
  auto b = a;
  for (size_t i = 4 * kBs; i < b.size(); ++i) b[i] += 7;  // shares blocks 0..3
  index.Record(ctx_, a, "ns/p");
  index.Record(ctx_, std::span(a).first(2 * kBs), "ns/p");  // ends inside a's run
  index.Record(ctx_, b, "ns/p");                            // branches after block 3
  EXPECT_EQ(index.memberships(), 8u);
  EXPECT_THAT(index.Match(ctx_, a), ElementsAre(M("ns/p", 6)));
  EXPECT_THAT(index.Match(ctx_, b), ElementsAre(M("ns/p", 6)));
  // Over capacity: a's branch (touched before b) loses its tail first.
  const auto c = Tokens(3, 2);
  index.Record(ctx_, c, "ns/p");
  EXPECT_EQ(index.memberships(), 9u);
  EXPECT_THAT(index.Match(ctx_, a), ElementsAre(M("ns/p", 4)));
  EXPECT_THAT(index.Match(ctx_, b), ElementsAre(M("ns/p", 6)));
  EXPECT_THAT(index.Match(ctx_, c), ElementsAre(M("ns/p", 3)));
}

// The radix tree evicts exactly as a per-block LRU that touches each prompt's blocks from the
// last to the first (the index's documented order), on random prompts sharing prefixes.
TEST_F(ApproxIndexTest, EvictsExactlyAsAPerBlockLru) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE(seed);
    std::mt19937_64 rng(seed);
    const uint64_t cap = 5 + rng() % 30;
    ApproxIndex index(Options(cap));
    const BlockHasher& hasher = index.hasher();
    // A pool of prompts: each continues a prefix of an earlier one with fresh blocks.
    std::vector<std::vector<uint32_t>> pool;
    for (int i = 0; i < 24; ++i) {
      std::vector<uint32_t> t;
      if (!pool.empty() && rng() % 4 != 0) {
        const auto& base = pool[rng() % pool.size()];
        t.assign(base.begin(),
                 base.begin() + static_cast<ptrdiff_t>(kBs * (rng() % (base.size() / kBs + 1))));
      }
      const size_t more = rng() % 8;
      for (size_t j = 0; j < more * kBs; ++j) t.push_back(static_cast<uint32_t>(rng()));
      if (t.empty()) t = Tokens(1, static_cast<uint32_t>(i + 1));
      pool.push_back(std::move(t));
    }
    // Reference: key -> (record number, -position); the smallest is evicted first.
    std::map<BlockKey, std::pair<uint64_t, int64_t>> ref;
    for (uint64_t r = 1; r <= 200; ++r) {
      const auto& t = pool[rng() % pool.size()];
      index.Record(ctx_, t, "ns/p");
      const std::vector<BlockKey> keys = hasher.Hash(ctx_, t);
      for (size_t k = 0; k < keys.size(); ++k) ref[keys[k]] = {r, -static_cast<int64_t>(k)};
      while (ref.size() > cap) {
        auto oldest = std::min_element(ref.begin(), ref.end(), [](const auto& x, const auto& y) {
          return x.second < y.second;
        });
        ref.erase(oldest);
      }
      ASSERT_EQ(index.memberships(), ref.size()) << "record " << r;
      for (const auto& q : pool) {
        const std::vector<BlockKey> keys = hasher.Hash(ctx_, q);
        uint32_t held = 0;
        while (held < keys.size() && ref.count(keys[held])) ++held;
        const std::vector<PodMatch> got = index.Match(ctx_, q);
        ASSERT_EQ(got.empty() ? 0u : got[0].matched_blocks, held) << "record " << r;
      }
    }
  }
}

TEST_F(ApproxIndexTest, ConcurrentRecordsAndQueries) {
  ApproxIndex index(Options(/*cap=*/50));
  std::vector<std::thread> threads;
  for (int w = 0; w < 3; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < 500; ++i) {
        index.Record(ctx_, Tokens(8, static_cast<uint32_t>(i % 20)), "ns/p" + std::to_string(w));
        if (i % 100 == 50) index.RemovePod("ns/p" + std::to_string(w));
      }
    });
  }
  threads.emplace_back([&] {
    for (int i = 0; i < 500; ++i) {
      for (const PodMatch& m : index.Match(ctx_, Tokens(8, static_cast<uint32_t>(i % 20)))) {
        EXPECT_GE(m.matched_blocks, 1u);
        EXPECT_LE(m.matched_blocks, 8u);
      }
    }
  });
  for (auto& t : threads) t.join();
  for (int w = 0; w < 3; ++w) {
    const auto s = index.Stats("ns/p" + std::to_string(w));
    ASSERT_TRUE(s.has_value());
    EXPECT_LE(s->blocks, 50u);
  }
}

}  // namespace
}  // namespace aibrix::prefix
