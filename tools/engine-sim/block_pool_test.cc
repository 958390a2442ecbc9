#include "block_pool.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <numeric>

namespace aibrix::enginesim {
namespace {

using ::testing::ElementsAre;

constexpr int kB = 4;  // block size in these tests

std::vector<uint32_t> Tokens(uint32_t first, int n) {
  std::vector<uint32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

std::vector<BlockHash> Chain(const std::vector<uint32_t>& tokens, uint64_t seed = 0) {
  std::vector<BlockHash> h;
  ExtendBlockHashes(tokens, kB, seed, &h);
  return h;
}

// Allocates, caches and frees the full blocks of `tokens`, like a finished request.
std::vector<int> RunRequest(BlockPool& pool, const std::vector<uint32_t>& tokens) {
  std::vector<BlockHash> hashes = Chain(tokens);
  const int hit = pool.CountCachedPrefix(hashes);
  std::vector<int> blocks = pool.TouchCached(hashes, hit);
  while (blocks.size() < hashes.size()) blocks.push_back(pool.Allocate());
  pool.CacheFullBlocks(blocks, hashes, tokens, hit, static_cast<int>(hashes.size()));
  pool.Free(blocks);
  return blocks;
}

TEST(BlockHashTest, ChainIsDeterministicAndPrefixDependent) {
  auto a = Chain(Tokens(0, 12));
  EXPECT_EQ(a.size(), 3u);
  EXPECT_EQ(a, Chain(Tokens(0, 12)));
  EXPECT_EQ(a, Chain(Tokens(0, 14)));  // partial trailing block is not hashed
  EXPECT_EQ(a[0], HashBlock(NoneHash(0), std::vector<uint32_t>{0, 1, 2, 3}, 0));
  EXPECT_EQ(a[1], HashBlock(a[0], std::vector<uint32_t>{4, 5, 6, 7}, 0));
  auto other = Tokens(0, 12);
  other[0] = 99;  // changing block 0 changes every later hash
  auto b = Chain(other);
  for (int i = 0; i < 3; ++i) EXPECT_NE(a[i], b[i]);
  EXPECT_NE(a, Chain(Tokens(0, 12), /*seed=*/1));
}

TEST(BlockHashTest, LoraAdapterNameChangesEveryHash) {
  auto t = Tokens(0, 8);
  std::vector<BlockHash> base, lora;
  ExtendBlockHashes(t, kB, 0, &base);
  ExtendBlockHashes(t, kB, 0, &lora, "sql-lora");
  ASSERT_EQ(lora.size(), 2u);
  EXPECT_NE(base[0], lora[0]);
  EXPECT_NE(base[1], lora[1]);
  EXPECT_EQ(lora[1], HashBlock(lora[0], std::vector<uint32_t>{4, 5, 6, 7}, 0, "sql-lora"));
}

TEST(BlockPoolTest, LoraBlocksCarryTheAdapterInEventsAndSnapshot) {
  BlockPool pool(4, kB);
  auto t = Tokens(0, 4);
  std::vector<BlockHash> h;
  ExtendBlockHashes(t, kB, 0, &h, "a");
  std::vector<int> blocks = {pool.Allocate()};
  pool.CacheFullBlocks(blocks, h, t, 0, 1, "a", 3);
  auto events = pool.TakeEvents();
  ASSERT_EQ(events.size(), 1u);
  const auto& s = std::get<kv::BlockStored>(events[0]);
  EXPECT_EQ(s.lora_name, "a");
  EXPECT_EQ(s.lora_id, 3);
  EXPECT_EQ(pool.Snapshot()[0].lora_name, "a");
}

TEST(BlockPoolTest, StoredEventsDescribeNewlyCachedRuns) {
  BlockPool pool(8, kB);
  auto tokens = Tokens(100, 10);  // 2 full blocks + 2 tokens
  auto hashes = Chain(tokens);
  std::vector<int> blocks = {pool.Allocate(), pool.Allocate(), pool.Allocate()};
  pool.CacheFullBlocks(blocks, hashes, tokens, 0, 1);
  pool.CacheFullBlocks(blocks, hashes, tokens, 1, 2);
  auto events = pool.TakeEvents();
  ASSERT_EQ(events.size(), 2u);
  const auto& s0 = std::get<kv::BlockStored>(events[0]);
  EXPECT_THAT(s0.block_hashes, ElementsAre(hashes[0]));
  EXPECT_FALSE(s0.parent_block_hash.has_value());
  EXPECT_THAT(s0.token_ids, ElementsAre(100, 101, 102, 103));
  EXPECT_EQ(s0.block_size, kB);
  EXPECT_EQ(s0.medium, "GPU");
  EXPECT_FALSE(s0.lora_name.has_value());
  EXPECT_FALSE(s0.lora_id.has_value());
  const auto& s1 = std::get<kv::BlockStored>(events[1]);
  EXPECT_THAT(s1.block_hashes, ElementsAre(hashes[1]));
  EXPECT_EQ(s1.parent_block_hash, hashes[0]);
  EXPECT_THAT(s1.token_ids, ElementsAre(104, 105, 106, 107));
  EXPECT_TRUE(pool.TakeEvents().empty());
  EXPECT_EQ(pool.num_free(), 5);
  EXPECT_DOUBLE_EQ(pool.usage(), 3.0 / 8);
}

TEST(BlockPoolTest, CachedPrefixSurvivesFreeAndIsReused) {
  BlockPool pool(8, kB);
  auto tokens = Tokens(0, 12);
  RunRequest(pool, tokens);
  pool.TakeEvents();
  EXPECT_EQ(pool.num_free(), 8);
  EXPECT_EQ(pool.num_cached(), 3);
  auto longer = Tokens(0, 20);
  auto hashes = Chain(longer);
  EXPECT_EQ(pool.CountCachedPrefix(hashes), 3);
  EXPECT_EQ(pool.CountFreeAmongCached(hashes, 3), 3);
  auto ids = pool.TouchCached(hashes, 3);
  EXPECT_EQ(pool.num_free(), 5);
  EXPECT_EQ(pool.CountFreeAmongCached(hashes, 3), 0);
  EXPECT_TRUE(pool.TakeEvents().empty());  // a hit announces nothing
  pool.Free(ids);
}

TEST(BlockPoolTest, EvictsLeastRecentlyFreedFirstAndChainTailsFirst) {
  BlockPool pool(4, kB);
  auto a = Tokens(0, 8);    // chain A: 2 blocks
  auto b = Tokens(100, 8);  // chain B: 2 blocks, freed after A
  auto ha = Chain(a), hb = Chain(b);
  RunRequest(pool, a);
  RunRequest(pool, b);
  pool.TakeEvents();
  // Free queue now: A1, A0, B1, B0 (each request frees its blocks in reverse order).
  std::vector<BlockHash> removed;
  for (int i = 0; i < 4; ++i) {
    pool.Allocate();
    for (auto& e : pool.TakeEvents()) {
      const auto& r = std::get<kv::BlockRemoved>(e);
      ASSERT_EQ(r.block_hashes.size(), 1u);
      EXPECT_EQ(r.medium, "GPU");
      removed.push_back(r.block_hashes[0]);
    }
  }
  EXPECT_THAT(removed, ElementsAre(ha[1], ha[0], hb[1], hb[0]));
  EXPECT_EQ(pool.num_cached(), 0);
}

TEST(BlockPoolTest, TouchingAPrefixMovesItToTheBackOfTheQueue) {
  BlockPool pool(4, kB);
  auto a = Tokens(0, 8), b = Tokens(100, 8);
  auto ha = Chain(a), hb = Chain(b);
  RunRequest(pool, a);
  RunRequest(pool, b);
  RunRequest(pool, a);  // A hit again: its blocks are freed after B's now
  pool.TakeEvents();
  auto snap = pool.Snapshot();
  ASSERT_EQ(snap.size(), 4u);
  EXPECT_EQ(snap[0].hash, hb[1]);  // next victim first
  EXPECT_EQ(snap[1].hash, hb[0]);
  EXPECT_EQ(snap[2].hash, ha[1]);
  EXPECT_EQ(snap[3].hash, ha[0]);
  EXPECT_EQ(snap[2].parent, ha[0]);
  EXPECT_EQ(snap[2].block_index, 1);
  EXPECT_FALSE(snap[3].parent.has_value());
  EXPECT_THAT(snap[3].tokens, ElementsAre(0, 1, 2, 3));
}

TEST(BlockPoolTest, SameHashIsCachedOnce) {
  BlockPool pool(8, kB);
  auto t = Tokens(0, 4);
  auto h = Chain(t);
  std::vector<int> first = {pool.Allocate()};
  std::vector<int> second = {pool.Allocate()};
  pool.CacheFullBlocks(first, h, t, 0, 1);
  pool.CacheFullBlocks(second, h, t, 0, 1);  // computed concurrently by another request
  auto events = pool.TakeEvents();
  EXPECT_EQ(events.size(), 1u);
  EXPECT_EQ(pool.num_cached(), 1);
  pool.Free(second);
  pool.Free(first);
  // Reusing the duplicate physical block evicts nothing: it was never cached.
  pool.Allocate();
  EXPECT_TRUE(pool.TakeEvents().empty());
  EXPECT_EQ(pool.num_cached(), 1);
}

TEST(BlockPoolTest, ResetOnlyWhenNothingInUse) {
  BlockPool pool(4, kB);
  RunRequest(pool, Tokens(0, 8));
  pool.TakeEvents();
  int held = pool.Allocate();
  pool.TakeEvents();
  EXPECT_FALSE(pool.ResetPrefixCache());
  EXPECT_TRUE(pool.TakeEvents().empty());
  pool.Free(std::vector<int>{held});
  ASSERT_TRUE(pool.ResetPrefixCache());
  auto events = pool.TakeEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<kv::AllBlocksCleared>(events[0]));
  EXPECT_EQ(pool.num_cached(), 0);
  EXPECT_TRUE(pool.Snapshot().empty());
}

TEST(BlockPoolTest, DropAllForgetsSilently) {
  BlockPool pool(4, kB);
  RunRequest(pool, Tokens(0, 8));
  pool.DropAll();
  EXPECT_TRUE(pool.TakeEvents().empty());
  EXPECT_EQ(pool.num_cached(), 0);
  EXPECT_EQ(pool.num_free(), 4);
}

}  // namespace
}  // namespace aibrix::enginesim
