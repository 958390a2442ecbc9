#include "aibrix/profile/gpu_profile.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aibrix::profile {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Output grid 4..64 tokens, input grid 8..1024 tokens.
constexpr char kProfile[] = R"({
  "gpu": "llama-a100", "cost": 1.5, "created": 1700000000.5,
  "indexes": [[4, 8, 16, 32, 64], [8, 64, 128, 1024]],
  "tputs": [[10, 9, 8, 7], [6, 5, 4, 3], [2, 1, 0.5, 0.25], [1, 1, 1, 1], [0, 0, 0, 0]],
  "e2e": [[0.1, 0.2, 0.3, 0.4], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]],
  "ttft": [[0.01, 0.02, 0.03, 0.04]],
  "slos": {"percentile": 99, "tpot": 0.05, "ttft": 1.0},
  "future_field": {"ignored": true}
})";

GpuProfile Parse(const std::string& json = kProfile) {
  auto profile = ParseGpuProfile(json);
  EXPECT_TRUE(profile.ok()) << profile.status();
  return profile.ok() ? *profile : GpuProfile{};
}

TEST(GpuProfileTest, ParsesFieldsAndTakesLog2OfIndexes) {
  const GpuProfile p = Parse();
  EXPECT_EQ(p.deployment, "llama-a100");
  EXPECT_EQ(p.cost, 1.5);
  EXPECT_EQ(p.created, 1700000000.5);
  EXPECT_THAT(p.indexes, ElementsAre(ElementsAre(2, 3, 4, 5, 6), ElementsAre(3, 6, 7, 10)));
  ASSERT_TRUE(p.tputs.has_value());
  EXPECT_EQ((*p.tputs)[0][0], 10);
  EXPECT_FALSE(p.tpot.has_value());  // absent table: no data
  EXPECT_EQ(p.slos.percentile, 99);
  EXPECT_EQ(p.slos.tpot, 0.05);
  EXPECT_EQ(p.slos.ttft, 1.0);
  EXPECT_EQ(p.slos.e2e, 0);
}

TEST(GpuProfileTest, SignaturePicksTheNearestGridPointInLog2) {
  const GpuProfile p = Parse();
  const auto sig = [&](double out, double in) {
    const std::vector<double> features{out, in};
    auto s = p.Signature(features);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : std::vector<int>{};
  };
  EXPECT_THAT(sig(16, 128), ElementsAre(2, 2));        // exact hits
  EXPECT_THAT(sig(4, 8), ElementsAre(0, 0));           // first points
  EXPECT_THAT(sig(64, 1024), ElementsAre(4, 3));       // last points
  EXPECT_THAT(sig(1, 2), ElementsAre(0, 0));           // below the grid
  EXPECT_THAT(sig(4096, 1 << 20), ElementsAre(4, 3));  // above the grid
  EXPECT_THAT(sig(0, 0), ElementsAre(0, 0));           // log2(0) = -inf: the first point
  // Between 64 (6) and 128 (7): log2(90) = 6.49 → 64; log2(91) = 6.51 → 128.
  EXPECT_THAT(sig(4, 90), ElementsAre(0, 1));
  EXPECT_THAT(sig(4, 91), ElementsAre(0, 2));
  // Exactly halfway between 128 (7) and 1024 (10) is 2^8.5: the upper point.
  EXPECT_THAT(sig(4, std::exp2(8.5)), ElementsAre(0, 3));
  EXPECT_THAT(sig(4, std::exp2(8.49)), ElementsAre(0, 2));
}

TEST(GpuProfileTest, SignatureRejectsBadFeaturesWithoutCrashing) {
  const GpuProfile p = Parse();
  EXPECT_EQ(p.Signature({}).status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<double> negative{-1, 8};
  EXPECT_EQ(p.Signature(negative).status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<double> nan{std::nan(""), 8};
  EXPECT_EQ(p.Signature(nan).status().code(), absl::StatusCode::kInvalidArgument);
  // More features than index rows: the reference indexed out of range here.
  const std::vector<double> three{4, 8, 16};
  auto s = p.Signature(three);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("3 features"));
}

TEST(GpuProfileTest, TableLookupsAndTheirErrors) {
  const GpuProfile p = Parse();
  const std::vector<int> sig{1, 2};
  EXPECT_EQ(*p.Throughput(sig), 4);
  EXPECT_EQ(*p.Latency(sig), 3);
  EXPECT_EQ(p.Tpot(sig).status().code(), absl::StatusCode::kNotFound);    // no table
  EXPECT_EQ(p.Ttft(sig).status().code(), absl::StatusCode::kOutOfRange);  // one row only
  EXPECT_EQ(*p.Ttft(std::vector<int>{0, 3}), 0.04);
  EXPECT_EQ(p.Latency(std::vector<int>{1}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(p.Latency(std::vector<int>{5, 0}).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(p.Latency(std::vector<int>{0, -1}).status().code(), absl::StatusCode::kOutOfRange);
}

TEST(GpuProfileTest, GarbageIsRejectedWithTheField) {
  const auto error = [](const std::string& json) {
    auto p = ParseGpuProfile(json);
    EXPECT_FALSE(p.ok()) << json;
    return p.ok() ? std::string() : std::string(p.status().message());
  };
  EXPECT_THAT(error("not json"), HasSubstr("not JSON"));
  EXPECT_THAT(error(""), HasSubstr("not JSON"));
  EXPECT_THAT(error("[1, 2]"), HasSubstr("not a JSON object"));
  EXPECT_THAT(error(R"({"tputs": [[1]]})"), HasSubstr("'indexes': missing"));
  EXPECT_THAT(error(R"({"indexes": [[1, 2]]})"), HasSubstr("input-token row"));
  EXPECT_THAT(error(R"({"indexes": [[1], []]})"), HasSubstr("empty row"));
  EXPECT_THAT(error(R"({"indexes": [[1], [0]]})"), HasSubstr("<= 0"));
  EXPECT_THAT(error(R"({"indexes": [[4, 2], [1]]})"), HasSubstr("does not ascend"));
  EXPECT_THAT(error(R"({"indexes": [[1], ["8"]]})"), HasSubstr("not a number"));
  EXPECT_THAT(error(R"({"indexes": [[1], [8]], "tputs": [1, 2]})"), HasSubstr("'tputs'"));
  EXPECT_THAT(error(R"({"indexes": [[1], [8]], "e2e": {"a": 1}})"), HasSubstr("'e2e'"));
  EXPECT_THAT(error(R"({"indexes": [[1], [8]], "gpu": 7})"), HasSubstr("'gpu'"));
  EXPECT_THAT(error(R"({"indexes": [[1], [8]], "created": "now"})"), HasSubstr("'created'"));
  EXPECT_THAT(error(R"({"indexes": [[1], [8]], "slos": [1]})"), HasSubstr("'slos'"));
  EXPECT_THAT(error(R"({"indexes": [[1], [8]], "slos": {"percentile": 400}})"),
              HasSubstr("percentile"));
  EXPECT_THAT(error(R"({"indexes": [[1], [8]], "tputs": [[1e999]]})"), HasSubstr("not JSON"));
  // Deep nesting is an error, not a stack overflow.
  EXPECT_FALSE(ParseGpuProfile(std::string(100000, '[') + std::string(100000, ']')).ok());
  // Null tables and fields are "no data".
  auto p = ParseGpuProfile(R"({"indexes": [[1], [8]], "tputs": null, "gpu": null})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->tputs.has_value());
}

}  // namespace
}  // namespace aibrix::profile
