#include "aibrix/prefix/engine_map.h"

#include <deque>
#include <random>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "gtest/gtest.h"

namespace aibrix::prefix {
namespace {

struct Entry {
  BlockKey our;
  uint64_t parent;
  uint8_t meta;
};

// Inserts k (absent) and returns its slot.
size_t Put(EngineMap& m, uint64_t k, const Entry& e) {
  EngineMap::Probe probe;
  const size_t i = m.FindOrPrepare(k, &probe);
  EXPECT_EQ(probe, EngineMap::Probe::kEmpty);
  m.InsertAt(i, k, e.our, e.parent, e.meta);
  return i;
}

// Every model entry is found with its values, every other slot is free, sizes agree.
void ExpectSame(const EngineMap& m, const absl::flat_hash_map<uint64_t, Entry>& model) {
  ASSERT_EQ(m.size(), model.size());
  for (const auto& [k, e] : model) {
    const size_t i = m.Find(k);
    ASSERT_NE(i, EngineMap::kNpos) << k;
    EXPECT_EQ(m.key(i), k);
    EXPECT_EQ(m.our(i), e.our);
    EXPECT_EQ(m.parent(i), EngineMap::Ref(e.parent));
    EXPECT_EQ(m.meta(i), e.meta);
    EXPECT_EQ(m.FindRef(EngineMap::Ref(k)), i);
  }
  size_t used = 0;
  for (size_t i = 0; i < m.capacity(); ++i) used += m.key(i) != 0;
  EXPECT_EQ(used, model.size());
}

TEST(EngineMapTest, InsertFindEraseAndMeta) {
  EngineMap m;
  EXPECT_EQ(m.Find(Mix64(1)), EngineMap::kNpos);
  const size_t a = Put(m, Mix64(1), {11, Mix64(7), EngineMap::kAnchored | 3});
  EXPECT_EQ(m.Find(Mix64(1)), a);
  EXPECT_EQ(m.our(a), 11u);
  EXPECT_EQ(m.parent(a), EngineMap::Ref(Mix64(7)));
  m.meta(a) = static_cast<uint8_t>(m.meta(a) + 1);  // meta shares a word with the parent ref
  EXPECT_EQ(m.meta(a), EngineMap::kAnchored | 4);
  EXPECT_EQ(m.parent(a), EngineMap::Ref(Mix64(7)));
  EngineMap::Probe probe;
  EXPECT_EQ(m.FindOrPrepare(Mix64(1), &probe), a);
  EXPECT_EQ(probe, EngineMap::Probe::kFound);
  m.EraseAt(a);
  EXPECT_EQ(m.size(), 0u);
  EXPECT_EQ(m.Find(Mix64(1)), EngineMap::kNpos);
}

TEST(EngineMapTest, KeysSharingARefConflict) {
  EngineMap m;
  const uint64_t k = Mix64(42);
  Put(m, k, {1, 0, 0});
  EngineMap::Probe probe;
  const size_t i = m.FindOrPrepare(k ^ 0x5, &probe);  // same ref, other low byte
  EXPECT_EQ(probe, EngineMap::Probe::kConflict);
  EXPECT_EQ(m.key(i), k);
  EXPECT_EQ(m.Find(k ^ 0x5), EngineMap::kNpos);
}

// Random inserts and erases (FIFO churn, like engines evicting, and random erases) against a
// model, through growth, deleted-marker clean-ups in place, and shrinking.
TEST(EngineMapTest, RandomChurnMatchesModel) {
  for (const size_t live : {10u, 200u, 5000u}) {
    EngineMap m;
    absl::flat_hash_map<uint64_t, Entry> model;
    std::deque<uint64_t> order;
    std::mt19937_64 rng(live);
    uint64_t next = 1;
    const auto insert = [&] {
      const uint64_t k = Mix64(next++);
      const Entry e{rng(), rng() | 0x100, static_cast<uint8_t>(rng())};
      Put(m, k, e);
      model[k] = e;
      order.push_back(k);
    };
    const auto erase = [&](uint64_t k) {
      const size_t i = m.Find(k);
      ASSERT_NE(i, EngineMap::kNpos);
      m.EraseAt(i);
      model.erase(k);
    };
    for (size_t i = 0; i < live; ++i) insert();
    ExpectSame(m, model);
    for (int step = 0; step < 40 * static_cast<int>(live) + 2000; ++step) {
      insert();
      if (rng() % 4 == 0 && !order.empty()) {  // a random entry
        const size_t j = rng() % order.size();
        if (model.contains(order[j])) erase(order[j]);
      }
      while (model.size() > live) {  // the oldest entries
        if (model.contains(order.front())) erase(order.front());
        order.pop_front();
      }
      if (step % 997 == 0) ExpectSame(m, model);
    }
    ExpectSame(m, model);
    // Drain to a few entries: the map shrinks and keeps everything findable.
    while (model.size() > 3) {
      if (model.contains(order.front())) erase(order.front());
      order.pop_front();
      m.MaybeShrink();
    }
    ExpectSame(m, model);
    EXPECT_LT(m.capacity(), 64u);
  }
}

}  // namespace
}  // namespace aibrix::prefix
