#include "aibrix/prefix/index_core.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace aibrix::prefix {
namespace {

struct TestPod : PodBase {
  using PodBase::PodBase;
  int inits = 0;
  uint64_t score = 0;
};

TEST(PodRegistryTest, CreatesOnceAndInitsOnce) {
  IndexCore core(4, ChainScheme::kMixChain, MatchSource::kEvents, nullptr);
  PodRegistry<TestPod> pods(core);
  EXPECT_EQ(pods.Find("ns/a"), nullptr);
  const auto init = [](TestPod& p) { ++p.inits; };
  auto a = pods.GetOrCreate("ns/a", init);
  auto again = pods.GetOrCreate("ns/a", init);
  EXPECT_EQ(a, again);
  EXPECT_EQ(a->inits, 1);
  EXPECT_EQ(a->pod_key, "ns/a");
  EXPECT_EQ(a->gauge, nullptr);  // no registry
  EXPECT_EQ(pods.Find("ns/a"), a);
}

TEST(PodRegistryTest, LockLiveNeverReturnsARetiredPod) {
  IndexCore core(4, ChainScheme::kMixChain, MatchSource::kRouting, nullptr);
  PodRegistry<TestPod> pods(core);
  std::shared_ptr<TestPod> old;
  {
    auto [pod, lock] = pods.LockLive("ns/a", [](TestPod&) {});
    ASSERT_TRUE(lock.owns_lock());
    core.SetPodBytes(pod->bytes, 100);
    old = pod;
  }
  EXPECT_EQ(core.bytes(), core.table().bytes() + 100);
  auto taken = pods.Take("ns/a");
  ASSERT_EQ(taken, old);
  EXPECT_EQ(pods.Take("ns/a"), nullptr);
  {
    std::lock_guard<std::mutex> lock(taken->mu);
    pods.Retire(*taken);
  }
  EXPECT_TRUE(taken->removed);
  EXPECT_EQ(core.bytes(), core.table().bytes());  // its bytes left the total
  auto [fresh, lock] = pods.LockLive("ns/a", [](TestPod&) {});
  EXPECT_NE(fresh, old);
  EXPECT_FALSE(fresh->removed);
}

TEST(PodRegistryTest, AllStatsSortedAndMax) {
  IndexCore core(4, ChainScheme::kMixChain, MatchSource::kEvents, nullptr);
  PodRegistry<TestPod> pods(core);
  for (const char* key : {"ns/c", "ns/a", "ns/b"}) {
    pods.GetOrCreate(key, [](TestPod&) {})->score = key[3] == 'b' ? 7 : 1;
  }
  std::vector<PodIndexStats> stats = pods.AllStats([](const std::string& key) {
    std::optional<PodIndexStats> s;
    if (key == "ns/c") return s;  // as if ns/c went away meanwhile
    s.emplace();
    s->pod = key;
    return s;
  });
  ASSERT_EQ(stats.size(), 2u);
  EXPECT_EQ(stats[0].pod, "ns/a");
  EXPECT_EQ(stats[1].pod, "ns/b");
  EXPECT_EQ(pods.All().size(), 3u);
  EXPECT_EQ(pods.Max([](const TestPod& p) { return p.score; })->pod_key, "ns/b");
  EXPECT_EQ(pods.Max([](const TestPod&) { return uint64_t{0}; }), nullptr);
}

TEST(IndexCoreTest, MatchesAndAllowsNestedQueries) {
  IndexCore core(4, ChainScheme::kMixChain, MatchSource::kRouting, nullptr);
  const std::vector<uint32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9};  // 2 complete blocks
  const std::vector<BlockKey> keys = core.hasher().Hash(HashContext{"m", "", 0}, tokens);
  ASSERT_EQ(keys.size(), 2u);
  const HolderId a = core.directory().Acquire("ns/a", "GPU");
  const HolderId b = core.directory().Acquire("ns/b", "GPU");
  core.table().Set(keys[0], a);
  core.table().Set(keys[1], a);
  core.table().Set(keys[0], b);
  const std::vector<PodMatch> want = {{"ns/a", 2, "GPU", MatchSource::kRouting},
                                      {"ns/b", 1, "GPU", MatchSource::kRouting}};
  EXPECT_EQ(core.Match(HashContext{"m", "", 0}, tokens), want);
  // A visitor that queries again sees complete answers at both levels.
  std::vector<std::string> outer, inner;
  core.MatchKeys(keys, [&](std::string_view pod, std::string_view, uint32_t) {
    outer.emplace_back(pod);
    core.MatchKeys(keys,
                   [&](std::string_view p, std::string_view, uint32_t) { inner.emplace_back(p); });
  });
  EXPECT_EQ(outer.size(), 2u);
  EXPECT_EQ(inner.size(), 4u);
}

}  // namespace
}  // namespace aibrix::prefix
