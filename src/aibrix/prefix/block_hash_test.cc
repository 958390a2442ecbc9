#include "aibrix/prefix/block_hash.h"

#include <numeric>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aibrix::prefix {
namespace {

std::vector<uint32_t> Iota(size_t n, uint32_t start = 0) {
  std::vector<uint32_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

TEST(BlockHashTest, OnlyCompleteBlocksAreHashed) {
  BlockHasher h(16);
  EXPECT_EQ(h.Hash({"m", "", 0}, Iota(15)).size(), 0u);
  EXPECT_EQ(h.Hash({"m", "", 0}, Iota(16)).size(), 1u);
  EXPECT_EQ(h.Hash({"m", "", 0}, Iota(47)).size(), 2u);
  // The partial tail does not change the complete blocks' keys.
  EXPECT_EQ(h.Hash({"m", "", 0}, Iota(47)), h.Hash({"m", "", 0}, Iota(32)));
}

TEST(BlockHashTest, KeysAreChained) {
  BlockHasher h(4);
  auto a = Iota(16);
  auto b = a;
  b[0] = 999;  // first block differs: every later key differs
  const auto ka = h.Hash({"m", "", 0}, a);
  const auto kb = h.Hash({"m", "", 0}, b);
  for (size_t i = 0; i < ka.size(); ++i) EXPECT_NE(ka[i], kb[i]) << i;
  auto c = a;
  c[8] = 999;  // third block differs: first two keys equal
  const auto kc = h.Hash({"m", "", 0}, c);
  EXPECT_EQ(ka[0], kc[0]);
  EXPECT_EQ(ka[1], kc[1]);
  EXPECT_NE(ka[2], kc[2]);
  EXPECT_NE(ka[3], kc[3]);
}

TEST(BlockHashTest, ContextSeparatesModelsAdaptersAndGroups) {
  BlockHasher h(4);
  const auto t = Iota(8);
  std::set<BlockKey> firsts;
  for (const HashContext& ctx :
       {HashContext{"m", "", 0}, HashContext{"m2", "", 0}, HashContext{"m", "lora-a", 0},
        HashContext{"m", "lora-b", 0}, HashContext{"m", "", 1}, HashContext{"ml", "ora-a", 0}}) {
    firsts.insert(h.Hash(ctx, t)[0]);
  }
  EXPECT_EQ(firsts.size(), 6u);
}

TEST(BlockHashTest, SchemesAreDeterministicAndDiffer) {
  BlockHasher mix(16, ChainScheme::kMixChain);
  BlockHasher seeded(16, ChainScheme::kSeededChain);
  const auto t = Iota(64);
  EXPECT_EQ(mix.Hash({"m", "", 0}, t), mix.Hash({"m", "", 0}, t));
  EXPECT_NE(mix.Hash({"m", "", 0}, t), seeded.Hash({"m", "", 0}, t));
  // Next() and HashInto() agree.
  for (const BlockHasher* h : {&mix, &seeded}) {
    const auto keys = h->Hash({"m", "", 0}, t);
    BlockKey k = ContextRoot({"m", "", 0});
    for (size_t i = 0; i < keys.size(); ++i) {
      k = h->Next(k, std::span<const uint32_t>(t).subspan(i * 16, 16));
      EXPECT_EQ(k, keys[i]);
    }
  }
}

TEST(BlockHashTest, PinnedValues) {
  // Our own scheme (not vLLM's, not the Go reference's XXH64): pinned so that a change, which
  // would make replicas of different versions disagree, is deliberate. Tokens are hashed as
  // little-endian u32; the context is length-prefixed model, adapter and KV group.
  const HashContext ctx{"meta-llama/Llama-3.1-8B-Instruct", "", 0};
  EXPECT_EQ(ContextRoot(ctx), 0x191eebfef3c52a39ULL);
  EXPECT_THAT(BlockHasher(16, ChainScheme::kMixChain).Hash(ctx, Iota(32)),
              ::testing::ElementsAre(0x1a443a7d7ad82ca9ULL, 0xe222448182836920ULL));
  EXPECT_THAT(BlockHasher(16, ChainScheme::kSeededChain).Hash(ctx, Iota(32)),
              ::testing::ElementsAre(0x2b893955833b168eULL, 0xcfb1f8e5b087eef9ULL));
}

TEST(Mix64Test, UnMix64InvertsIt) {
  for (const uint64_t x : std::vector<uint64_t>{0, 1, 42, ~uint64_t{0}, uint64_t{1} << 63}) {
    EXPECT_EQ(UnMix64(Mix64(x)), x);
    EXPECT_EQ(Mix64(UnMix64(x)), x);
  }
}

}  // namespace
}  // namespace aibrix::prefix
