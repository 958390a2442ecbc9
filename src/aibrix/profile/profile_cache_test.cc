#include "aibrix/profile/profile_cache.h"

#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace aibrix::profile {
namespace {

GpuProfile Profile(double created, std::string deployment = "a100") {
  GpuProfile p;
  p.deployment = std::move(deployment);
  p.created = created;
  p.indexes = {{0}, {0}};
  return p;
}

TEST(ProfileCacheTest, KeyFormat) {
  EXPECT_EQ(ProfileKey("llama-3", "a100"), "aibrix:profile_llama-3_a100");
  EXPECT_EQ(ProfileKey("org/model", "h100"), "aibrix:profile_org/model_h100");
}

TEST(ProfileCacheTest, UpdateStoresOnlyNewerUnlessForced) {
  ProfileCache cache;
  const std::string key = ProfileKey("m", "a100");
  EXPECT_TRUE(cache.Update(key, Profile(10)));
  EXPECT_FALSE(cache.Update(key, Profile(10, "same-created")));
  EXPECT_FALSE(cache.Update(key, Profile(5, "older")));
  EXPECT_EQ(cache.Find("m", "a100")->deployment, "a100");
  EXPECT_TRUE(cache.Update(key, Profile(5, "forced"), ProfileCache::Force::kYes));
  EXPECT_EQ(cache.Find("m", "a100")->deployment, "forced");
  EXPECT_TRUE(cache.Update(key, Profile(11, "newer")));
  EXPECT_EQ(cache.Find("m", "a100")->deployment, "newer");
  EXPECT_EQ(cache.Find("m", "h100"), nullptr);
}

TEST(ProfileCacheTest, RefreshAddsUpdatesByCreatedAndDropsKeysGoneFromTheSource) {
  ProfileCache cache;
  const std::string a = ProfileKey("m", "a100");
  const std::string h = ProfileKey("m", "h100");
  const std::string l = ProfileKey("m", "l4");
  auto r = cache.Refresh({a, h}, {{a, Profile(1)}, {h, Profile(1, "h100")}});
  EXPECT_EQ(r.added, 2u);
  EXPECT_EQ(cache.size(), 2u);
  const ProfileMapRef before = cache.snapshot();

  // a: same created (kept as is); h: newer (updated); l: new.
  r = cache.Refresh(
      {a, h, l}, {{a, Profile(1, "ignored")}, {h, Profile(2, "h100-v2")}, {l, Profile(1, "l4")}});
  EXPECT_EQ(r.added, 1u);
  EXPECT_EQ(r.updated, 1u);
  EXPECT_EQ(r.removed, 0u);
  EXPECT_EQ(cache.Find("m", "a100")->deployment, "a100");
  EXPECT_EQ(cache.Find("m", "h100")->deployment, "h100-v2");
  // A snapshot taken earlier is unchanged.
  EXPECT_EQ(before->size(), 2u);
  EXPECT_EQ(before->at(h)->deployment, "h100");

  // h is still in the source but unreadable this time: it keeps its profile. l is gone.
  r = cache.Refresh({a, h}, {{a, Profile(1)}});
  EXPECT_EQ(r.removed, 1u);
  EXPECT_EQ(cache.Find("m", "l4"), nullptr);
  EXPECT_EQ(cache.Find("m", "h100")->deployment, "h100-v2");

  // A loaded profile for a key not listed as present is ignored.
  r = cache.Refresh({}, {{a, Profile(9)}});
  EXPECT_EQ(r.removed, 2u);
  EXPECT_EQ(cache.size(), 0u);
}

TEST(ProfileCacheTest, ReadersSeeWholeSnapshotsWhileTheLoaderRefreshes) {
  ProfileCache cache;
  const std::string a = ProfileKey("m", "a100");
  const std::string h = ProfileKey("m", "h100");
  std::atomic<bool> stop{false};
  std::thread loader([&] {
    for (int i = 1; i <= 2000; ++i) {
      if (i % 2 == 0) {
        cache.Refresh({a, h}, {{a, Profile(i)}, {h, Profile(i)}});
      } else {
        cache.Refresh({}, {});
      }
    }
    stop = true;
  });
  while (!stop) {
    const ProfileMapRef snap = cache.snapshot();
    ASSERT_TRUE(snap->empty() || snap->size() == 2u);
  }
  loader.join();
}

}  // namespace
}  // namespace aibrix::profile
