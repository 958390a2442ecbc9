#include "aibrix/prefix/match.h"

#include <numeric>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace aibrix::prefix {
namespace {

constexpr int kBs = 4;

TEST(PrefixMatcherTest, MergesBothSourcesAndSerialises) {
  ExactIndexOptions eo;
  eo.block_size = kBs;
  ExactIndex exact(eo);
  ApproxIndexOptions ao;
  ao.block_size = kBs;
  ApproxIndex approx(ao);
  auto matcher = PrefixMatcher::Create(&exact, &approx);
  ASSERT_TRUE(matcher.ok()) << matcher.status();

  std::vector<uint32_t> t(3 * kBs + 2);
  std::iota(t.begin(), t.end(), 1);
  kv::BlockStored s;
  s.block_hashes = {11, 12, 13};
  s.token_ids.assign(t.begin(), t.begin() + 3 * kBs);
  s.block_size = kBs;
  kv::EventBatch b;
  b.events.push_back(s);
  exact.ApplyBatch(kv::PodSource{"ns/a", "m", -1}, b);
  const auto keys = matcher->Keys("m", "", t);
  approx.RecordKeys(std::span(keys).first(2), "ns/b");

  const MatchResponse r = matcher->Match("m", "", t);
  const nlohmann::json j = r;
  EXPECT_EQ(j, nlohmann::json::parse(R"({
    "block_size": 4, "total_blocks": 3,
    "pods": [
      {"pod": "ns/a", "matched_blocks": 3, "tier": "GPU", "source": "events"},
      {"pod": "ns/b", "matched_blocks": 2, "tier": "GPU", "source": "routing"}]})"));
  EXPECT_TRUE(matcher->Match("m", "other-lora", t).pods.empty());

  // The routers' allocation-free call visits the same holders (in no given order).
  std::vector<PodMatch> visited;
  matcher->VisitKeys(
      keys, [&](std::string_view pod, std::string_view tier, uint32_t blocks, MatchSource source) {
        visited.push_back(PodMatch{std::string(pod), blocks, std::string(tier), source});
      });
  EXPECT_THAT(visited, ::testing::UnorderedElementsAreArray(r.pods));

  std::string text;
  AppendJson(&text, *exact.Stats("ns/a"));
  const nlohmann::json stats = nlohmann::json::parse(text);  // valid JSON
  EXPECT_EQ(stats["blocks"], 3);
  EXPECT_EQ(stats["tiers"]["GPU"], 3);
  EXPECT_EQ(stats["source"], "events");
  EXPECT_EQ(stats["pod"], "ns/a");
  EXPECT_EQ(stats["model"], "m");
  for (const char* key :
       {"bytes", "unplaceable_blocks", "unknown_removes", "skipped_events", "evicted_blocks"}) {
    EXPECT_TRUE(stats[key].is_number_unsigned()) << key;
  }
}

TEST(PrefixMatcherTest, RejectsIndexesThatHashDifferently) {
  ExactIndexOptions eo;
  eo.block_size = 16;
  ExactIndex exact(eo);
  ApproxIndexOptions ao;
  ao.block_size = 4;
  ApproxIndex approx(ao);
  EXPECT_FALSE(PrefixMatcher::Create(&exact, &approx).ok());
  EXPECT_FALSE(PrefixMatcher::Create(nullptr, nullptr).ok());
  EXPECT_TRUE(PrefixMatcher::Create(&exact, nullptr).ok());
}

}  // namespace
}  // namespace aibrix::prefix
