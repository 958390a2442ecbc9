#include "aibrix/store/pod_list.h"

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aibrix::store {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

PodRef Record(const std::string& key, int generation = 0) {
  auto pod = std::make_shared<Pod>();
  pod->key = key;
  pod->object.uid = std::to_string(generation);
  return pod;
}

std::vector<std::string> Keys(const PodList& list) {
  std::vector<std::string> keys;
  for (const PodRef& pod : list) keys.push_back(pod->key);
  return keys;
}

// Every read of `list` agrees with `want` (key -> record).
void ExpectSame(const PodList& list, const std::map<std::string, PodRef>& want) {
  ASSERT_EQ(list.size(), want.size());
  EXPECT_EQ(list.empty(), want.empty());
  size_t i = 0;
  for (const auto& [key, pod] : want) {
    ASSERT_EQ(list[i], pod) << "index " << i;
    ASSERT_EQ(list.begin()[static_cast<std::ptrdiff_t>(i)], pod);
    const PodRef* found = list.Find(key);
    ASSERT_NE(found, nullptr) << key;
    EXPECT_EQ(*found, pod);
    ++i;
  }
  i = 0;
  for (auto it = list.begin(); it != list.end(); ++it, ++i) {
    EXPECT_EQ(static_cast<size_t>(it - list.begin()), i);
  }
  EXPECT_EQ(i, want.size());
  if (!want.empty()) {
    EXPECT_EQ(list.front(), want.begin()->second);
    EXPECT_EQ(list.back(), want.rbegin()->second);
  }
}

TEST(PodListTest, EmptyList) {
  PodList list;
  EXPECT_TRUE(list.empty());
  EXPECT_EQ(list.size(), 0u);
  EXPECT_EQ(list.begin(), list.end());
  EXPECT_EQ(list.Find("ns/a"), nullptr);
  EXPECT_FALSE(list.Erase("ns/a"));
  EXPECT_TRUE(PodList(std::vector<PodRef>{}).empty());
}

TEST(PodListTest, PutInsertsInKeyOrderAndReplacesByKey) {
  PodList list;
  list.Put(Record("ns/b"));
  list.Put(Record("ns/a"));
  list.Put(Record("ns/c"));
  EXPECT_THAT(Keys(list), ElementsAre("ns/a", "ns/b", "ns/c"));
  const PodRef replacement = Record("ns/b", 1);
  list.Put(replacement);
  EXPECT_THAT(Keys(list), ElementsAre("ns/a", "ns/b", "ns/c"));
  EXPECT_EQ(list[1], replacement);
  EXPECT_TRUE(list.Erase("ns/b"));
  EXPECT_FALSE(list.Erase("ns/b"));
  EXPECT_THAT(Keys(list), ElementsAre("ns/a", "ns/c"));
  EXPECT_TRUE(list.Erase("ns/a"));
  EXPECT_TRUE(list.Erase("ns/c"));
  EXPECT_TRUE(list.empty());
  EXPECT_THAT(Keys(list), IsEmpty());
}

TEST(PodListTest, CopiesAreIndependentVersions) {
  std::vector<PodRef> pods;
  for (int i = 0; i < 500; ++i) pods.push_back(Record(fmt::format("ns/p{:04}", i)));
  const PodList before{pods};
  PodList after = before;
  after.Put(Record("ns/p0100", 1));
  after.Erase("ns/p0200");
  after.Put(Record("ns/p0200x"));
  // The earlier version is unchanged.
  std::map<std::string, PodRef> want;
  for (const PodRef& pod : pods) want[pod->key] = pod;
  ExpectSame(before, want);
  want["ns/p0100"] = after[100];
  EXPECT_EQ(after[100]->object.uid, "1");
  want.erase("ns/p0200");
  want["ns/p0200x"] = *after.Find("ns/p0200x");
  ExpectSame(after, want);
}

TEST(PodListTest, LowerBoundWorksOnTheIterators) {
  std::vector<PodRef> pods;
  for (int i = 0; i < 300; i += 2) pods.push_back(Record(fmt::format("ns/p{:04}", i)));
  const PodList list{pods};
  const auto find = [&](const std::string& key) {
    return std::lower_bound(list.begin(), list.end(), key,
                            [](const PodRef& pod, const std::string& k) { return pod->key < k; }) -
           list.begin();
  };
  EXPECT_EQ(find("ns/p0000"), 0);
  EXPECT_EQ(find("ns/p0101"), 51);
  EXPECT_EQ(find("ns/p0298"), 149);
  EXPECT_EQ(find("ns/z"), 150);
}

// Random puts and erases on successive copies against a std::map, over chunk splits and
// chunks emptied; every earlier version stays as it was.
TEST(PodListTest, RandomChangesMatchAMap) {
  std::mt19937 rng(7);
  std::map<std::string, PodRef> want;
  PodList list;
  std::vector<std::pair<PodList, std::map<std::string, PodRef>>> versions;
  for (int step = 0; step < 4000; ++step) {
    const std::string key = fmt::format("ns/p{:04}", rng() % 600);
    PodList next = list;
    if (rng() % 3 == 0) {
      EXPECT_EQ(next.Erase(key), want.erase(key) == 1);
    } else {
      PodRef pod = Record(key, step);
      want[key] = pod;
      next.Put(std::move(pod));
    }
    list = std::move(next);
    if (step % 400 == 0) versions.emplace_back(list, want);
    if (step % 97 == 0) ExpectSame(list, want);
  }
  ExpectSame(list, want);
  for (const auto& [version, contents] : versions) ExpectSame(version, contents);
  // A list built in one go from the same pods reads the same.
  std::vector<PodRef> sorted;
  for (const auto& [key, pod] : want) sorted.push_back(pod);
  ExpectSame(PodList(std::move(sorted)), want);
  // Erased down to nothing.
  for (const auto& [key, pod] : want) ASSERT_TRUE(list.Erase(key));
  EXPECT_TRUE(list.empty());
}

}  // namespace
}  // namespace aibrix::store
