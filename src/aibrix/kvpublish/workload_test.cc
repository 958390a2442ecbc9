#include "aibrix/kvpublish/workload.h"

#include <gtest/gtest.h>

#include <set>
#include <variant>

#include "aibrix/kvpublish/encoder.h"

namespace aibrix::kvpublish {
namespace {

TEST(WorkloadTest, DeterministicBySeedAndEngine) {
  WorkloadOptions o;
  o.seed = 42;
  EngineWorkload a(o, 3), b(o, 3), other(o, 4);
  bool differs = false;
  for (int i = 0; i < 200; ++i) {
    const auto ba = a.NextBatch(1.0);
    EXPECT_EQ(EncodeBatch(ba, WireFormat::kMap), EncodeBatch(b.NextBatch(1.0), WireFormat::kMap));
    differs |=
        EncodeBatch(ba, WireFormat::kMap) != EncodeBatch(other.NextBatch(1.0), WireFormat::kMap);
  }
  EXPECT_TRUE(differs);
}

// Every BlockStored chains to a block the engine holds (or starts at token 0), carries
// block_size tokens per block that are the shared prompt's, and every BlockRemoved removes
// held blocks, chain tails before their parents; the engine stays within its capacity.
TEST(WorkloadTest, RealisticShapesAndConsistentState) {
  WorkloadOptions o;
  o.seed = 7;
  o.capacity_blocks = 600;
  o.clear_every_batches = 300;
  EngineWorkload w(o, 0);
  std::set<kv::EngineHash> held;
  size_t stored_events = 0, removed_events = 0, clears = 0, multi_block = 0, batches_multi = 0;
  for (int i = 0; i < 5000; ++i) {
    const kv::EventBatch batch = w.NextBatch(1.0);
    ASSERT_FALSE(batch.events.empty());
    if (batch.events.size() > 1) ++batches_multi;
    for (const auto& event : batch.events) {
      if (const auto* s = std::get_if<kv::BlockStored>(&event)) {
        ++stored_events;
        ASSERT_FALSE(s->block_hashes.empty());
        if (s->block_hashes.size() > 1) ++multi_block;
        EXPECT_EQ(s->block_size, 16);
        EXPECT_EQ(s->token_ids.size(), s->block_hashes.size() * 16);
        if (s->parent_block_hash) {
          EXPECT_TRUE(held.count(*s->parent_block_hash));
        }
        for (auto h : s->block_hashes) EXPECT_TRUE(held.insert(h).second);
      } else if (const auto* r = std::get_if<kv::BlockRemoved>(&event)) {
        ++removed_events;
        for (auto h : r->block_hashes) EXPECT_EQ(held.erase(h), 1u);
      } else {
        ++clears;
        held.clear();
      }
    }
    ASSERT_LE(static_cast<int64_t>(held.size()), o.capacity_blocks);
    ASSERT_EQ(static_cast<int64_t>(held.size()), w.cached_blocks());
  }
  EXPECT_GT(stored_events, 5000u);
  EXPECT_GT(removed_events, 100u);
  EXPECT_GT(clears, 2u);
  EXPECT_GT(multi_block, stored_events / 2);
  EXPECT_GT(batches_multi, 1000u);
}

TEST(WorkloadTest, PromptTokensAreSharedAcrossEnginesAndMatchStoredTokens) {
  WorkloadOptions o;
  o.seed = 9;
  o.prompts = 1;
  o.clear_every_batches = 0;
  EngineWorkload w(o, 5);
  const auto batch = w.NextBatch(1.0);
  const auto& s = std::get<kv::BlockStored>(batch.events.at(0));
  ASSERT_FALSE(s.parent_block_hash.has_value());
  const auto tokens = PromptTokens(o.seed, 0, static_cast<int>(s.block_hashes.size()));
  EXPECT_EQ(s.token_ids, tokens);
}

}  // namespace
}  // namespace aibrix::kvpublish
