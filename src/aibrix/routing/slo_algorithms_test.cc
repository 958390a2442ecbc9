// The load-aware algorithms (least-load, pack-load, slo-*) and the PendingLoadProvider, on
// pods of two deployments (GPU types) with profiles seeded in a ProfileCache.
#include "aibrix/routing/slo_algorithms.h"

#include <cmath>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "aibrix/routing/pending_load.h"
#include "aibrix/store/test_pods.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"

namespace aibrix::routing {
namespace {

constexpr char kModel[] = "m";

// A one-cell profile: every request has consumption 1 / (tput × e2e).
profile::GpuProfile OneCell(const std::string& gpu, double tput, double e2e, double slo_e2e) {
  profile::GpuProfile p;
  p.deployment = gpu;
  p.indexes = {{0}, {0}};
  p.tputs = profile::Table{{tput}};
  p.e2e = profile::Table{{e2e}};
  p.slos.e2e = slo_e2e;
  return p;
}

double ErrorCount(prometheus::Registry& registry, const std::string& algorithm,
                  const std::string& reason) {
  for (const auto& family : registry.Collect()) {
    if (family.name != "aibrix_routing_errors_total") continue;
    for (const auto& metric : family.metric) {
      std::map<std::string, std::string> labels;
      for (const auto& l : metric.label) labels[l.name] = l.value;
      if (labels["algorithm"] == algorithm && labels["reason"] == reason) {
        return metric.counter.value;
      }
    }
  }
  return 0;
}

class LoadAlgorithmTest : public ::testing::Test {
 protected:
  LoadAlgorithmTest() : tracker_(clock_), provider_(profiles_, tracker_) {
    // a100: p0, p1 (consumption 1 / (10 × 0.5) = 0.2); l4: p2, p3 (1 / (4 × 1) = 0.25).
    for (int i = 0; i < 4; ++i) {
      store::PodObject pod = store::testing::MakePod(fmt::format("p{}", i), kModel,
                                                     fmt::format("10.0.0.{}", i + 1), "ns");
      pod.deployment = i < 2 ? "a100" : "l4";
      store_.AddPod(pod);
    }
    SetProfile("a100", OneCell("a100", 10, 0.5, /*slo_e2e=*/1.0));  // rank -0.5
    SetProfile("l4", OneCell("l4", 4, 1.0, /*slo_e2e=*/0.8));       // rank +0.2
    tokens_.resize(100);
    std::iota(tokens_.begin(), tokens_.end(), 1);
  }

  void SetProfile(const std::string& deployment, profile::GpuProfile p) {
    profiles_.Update(profile::ProfileKey(kModel, deployment), std::move(p),
                     profile::ProfileCache::Force::kYes);
  }
  // Puts load `load` on `pod` (one in-flight request).
  void Load(const std::string& pod, double load) {
    const std::string key = "ns/" + pod;
    ASSERT_TRUE(store_
                    .AddRequest(fmt::format("r{}", next_id_++), *store_.GetPod(key),
                                store_.ReadyPods(kModel), {.pending_load = load})
                    .ok());
  }
  std::unique_ptr<Router> MakeRouter(const PendingLoadProvider* provider) {
    return std::make_unique<Router>(store_, RouterDeps{nullptr, nullptr, provider},
                                    RouterOptions{.seed = 9}, &registry_);
  }
  Decision Route(const Router& router, const std::string& algorithm) {
    RouteRequest request;
    request.model = kModel;
    request.tokens = tokens_;
    auto d = router.Route(algorithm, request);
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *d : Decision{};
  }
  std::string Pick(const Router& router, const std::string& algorithm) {
    Decision d = Route(router, algorithm);
    return d.pod ? d.pod->name() : "";
  }

  common::FakeClock clock_;
  store::Store store_;
  profile::ProfileCache profiles_;
  tracking::RequestTracker tracker_;
  PendingLoadProvider provider_;
  prometheus::Registry registry_;
  std::vector<uint32_t> tokens_;
  int next_id_ = 0;
};

TEST_F(LoadAlgorithmTest, ConsumptionIsOneOverThroughputTimesLatency) {
  auto view = provider_.ViewFor(kModel, provider_.Features(kModel, 100));
  EXPECT_EQ(view.features().prompt_tokens, 100);
  EXPECT_EQ(view.features().output_tokens, 1);  // no history: the optimistic cold start
  EXPECT_DOUBLE_EQ(*view.Consumption(**store_.GetPod("ns/p0")), 0.2);
  EXPECT_DOUBLE_EQ(*view.Consumption(**store_.GetPod("ns/p2")), 0.25);
  EXPECT_DOUBLE_EQ(*view.SloRank(*profiles_.Find(kModel, "a100")), -0.5);
  EXPECT_NEAR(*view.SloRank(*profiles_.Find(kModel, "l4")), 0.2, 1e-12);
}

TEST_F(LoadAlgorithmTest, ConsumptionErrorsAreErrorsNotZero) {
  store::PodObject bare = store::testing::MakePod("bare", kModel, "10.0.0.9", "ns");
  store_.AddPod(bare);  // no deployment label
  profile::GpuProfile no_latency = OneCell("a100", 10, 0.5, 1);
  no_latency.e2e.reset();
  SetProfile("a100", no_latency);
  SetProfile("l4", OneCell("l4", 0, 1, 1));
  auto view = provider_.ViewFor(kModel, provider_.Features(kModel, 100));
  EXPECT_EQ(view.Consumption(**store_.GetPod("ns/bare")).status().code(),
            absl::StatusCode::kNotFound);
  // The reference returned (0, nil) here.
  EXPECT_EQ(view.Consumption(**store_.GetPod("ns/p0")).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(view.Consumption(**store_.GetPod("ns/p2")).status().code(),
            absl::StatusCode::kFailedPrecondition);  // zero throughput: SLO failure
  profile::GpuProfile zero_latency = OneCell("a100", 10, 0, 1);
  SetProfile("a100", zero_latency);
  view = provider_.ViewFor(kModel, provider_.Features(kModel, 100));
  EXPECT_EQ(view.Consumption(**store_.GetPod("ns/p0")).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(LoadAlgorithmTest, FeaturesUseTheOutputPredictorAndPickTheGridCell) {
  // Output grid {1, 64} tokens, input grid {16, 1024}; long outputs halve the throughput.
  profile::GpuProfile p;
  p.deployment = "a100";
  p.indexes = {{0, 6}, {4, 10}};  // log2 of {1, 64} and {16, 1024}
  p.tputs = profile::Table{{10, 5}, {5, 2}};
  p.e2e = profile::Table{{1, 1}, {1, 1}};
  SetProfile("a100", p);
  const auto consumption = [&](int64_t prompt) {
    auto view = provider_.ViewFor(kModel, provider_.Features(kModel, prompt));
    return *view.Consumption(**store_.GetPod("ns/p0"));
  };
  EXPECT_DOUBLE_EQ(consumption(16), 0.1);    // [1 out, 16 in]
  EXPECT_DOUBLE_EQ(consumption(1000), 0.2);  // [1 out, 1024 in]
  // Finished requests with 16-token prompts produced 64 tokens: the predictor says 64.
  for (int i = 0; i < 20; ++i) tracker_.OnFinished(kModel, 16, 64);
  EXPECT_EQ(provider_.Features(kModel, 16).output_tokens, 64);
  EXPECT_DOUBLE_EQ(consumption(16), 0.2);    // [64 out, 16 in]
  EXPECT_DOUBLE_EQ(consumption(1000), 0.2);  // no history for long prompts: 1 out
}

TEST_F(LoadAlgorithmTest, LeastLoadTakesTheLowestLoadThatFits) {
  Load("p0", 0.6);  // 0.8 with the request
  Load("p1", 0.2);  // 0.4
  Load("p3", 0.9);  // 1.15: over capacity
  auto router = MakeRouter(&provider_);
  const Decision d = Route(*router, "least-load");
  EXPECT_EQ(d.pod->name(), "p2");  // 0 + 0.25
  ASSERT_TRUE(d.pending_load.has_value());
  EXPECT_DOUBLE_EQ(*d.pending_load, 0.25);
  EXPECT_NEAR(d.candidates[0].score, 0.8, 1e-9);
  EXPECT_NEAR(d.candidates[3].score, 1.15, 1e-9);
}

TEST_F(LoadAlgorithmTest, PackLoadFillsTheFullestPodThatFits) {
  Load("p0", 0.6);  // 0.8: fits, the fullest
  Load("p3", 0.8);  // 1.05: does not fit
  auto router = MakeRouter(&provider_);
  EXPECT_EQ(Pick(*router, "pack-load"), "p0");
  Load("p0", 0.2);  // now 1.0 after the request: still fits exactly
  EXPECT_EQ(Pick(*router, "pack-load"), "p0");
  Load("p0", 0.1);
  const std::string pick = Pick(*router, "pack-load");  // p1 0.2, p2 and p3 0.25: fuller
  EXPECT_TRUE(pick == "p2" || pick == "p3") << pick;
}

TEST_F(LoadAlgorithmTest, SloFamilyPrefersTheDeploymentThatMeetsTheSlo) {
  Load("p0", 0.5);
  auto router = MakeRouter(&provider_);
  // a100 (rank -0.5) before l4 (rank +0.2), even though l4's p2/p3 are idle.
  EXPECT_EQ(Pick(*router, "slo"), "p1");  // least-load within a100
  EXPECT_EQ(Pick(*router, "slo-least-load-pulling"), "p1");
  EXPECT_EQ(Pick(*router, "slo-pack-load"), "p0");  // pack within a100
  Load("p1", 0.7);
  EXPECT_EQ(Pick(*router, "slo-least-load"), "p0");  // push: lowest utilization
  // a100 full: l4 would miss the SLO (rank > 0), so no second group — the fallback takes
  // the pod least loaded after the request (an l4 pod).
  Load("p0", 0.4);
  Load("p1", 0.2);
  std::string pick = Pick(*router, "slo");
  EXPECT_TRUE(pick == "p2" || pick == "p3") << pick;
  EXPECT_EQ(ErrorCount(registry_, "slo", "capacity_reached_fallback"), 1);
  // With l4 meeting its SLO too (rank -0.2) it is the second choice, no fallback.
  SetProfile("l4", OneCell("l4", 4, 1.0, /*slo_e2e=*/1.2));
  pick = Pick(*router, "slo");
  EXPECT_TRUE(pick == "p2" || pick == "p3") << pick;
  EXPECT_EQ(ErrorCount(registry_, "slo", "capacity_reached_fallback"), 1);
}

TEST_F(LoadAlgorithmTest, ProfilesWithoutSlosRouteOverEveryPod) {
  SetProfile("a100", OneCell("a100", 10, 0.5, 0));
  SetProfile("l4", OneCell("l4", 4, 1.0, 0));
  Load("p0", 0.5);
  Load("p1", 0.5);
  auto router = MakeRouter(&provider_);
  const std::string pick = Pick(*router, "slo");
  EXPECT_TRUE(pick == "p2" || pick == "p3") << pick;
}

TEST_F(LoadAlgorithmTest, WithoutProfilesTheyRouteLikeLeastRequest) {
  auto router = MakeRouter(nullptr);
  ASSERT_TRUE(store_.AddRequest("x", "ns/p0", kModel).ok());
  ASSERT_TRUE(store_.AddRequest("y", "ns/p1", kModel).ok());
  ASSERT_TRUE(store_.AddRequest("z", "ns/p2", kModel).ok());
  for (const char* algorithm : {"least-load", "pack-load", "slo", "slo-least-load",
                                "slo-least-load-pulling", "slo-pack-load"}) {
    const Decision d = Route(*router, algorithm);
    EXPECT_EQ(d.pod->name(), "p3") << algorithm;
    EXPECT_FALSE(d.pending_load.has_value());
    EXPECT_EQ(ErrorCount(registry_, algorithm, "profile_missing_fallback"), 1) << algorithm;
  }
  // A provider whose cache holds no profile for this model's pods: the same.
  profile::ProfileCache other;
  other.Update(profile::ProfileKey("another-model", "a100"), OneCell("a100", 1, 1, 1));
  PendingLoadProvider unrelated(other, tracker_);
  auto router2 = MakeRouter(&unrelated);
  EXPECT_EQ(Pick(*router2, "least-load"), "p3");
}

TEST_F(LoadAlgorithmTest, EveryDecisionCarriesItsLoadWhenAProfileGivesOne) {
  auto router = MakeRouter(&provider_);
  const Decision d = Route(*router, "least-request");
  ASSERT_TRUE(d.pending_load.has_value());
  EXPECT_DOUBLE_EQ(*d.pending_load, d.pod->name() < "p2" ? 0.2 : 0.25);
}

TEST_F(LoadAlgorithmTest, SloFailureAndProfilelessPodsAreNotCandidates) {
  SetProfile("l4", OneCell("l4", 0, 1.0, 1));  // l4 cannot meet the SLO at all
  Load("p0", 0.9);
  Load("p1", 0.9);
  auto router = MakeRouter(&provider_);
  // a100 has no room, l4 has zero throughput: the fallback stays on the pods with a load.
  const Decision d = Route(*router, "least-load");
  EXPECT_TRUE(std::isnan(d.candidates[2].score));
  EXPECT_TRUE(d.pod->name() == "p0" || d.pod->name() == "p1") << d.pod->name();
  EXPECT_EQ(ErrorCount(registry_, "least-load", "capacity_reached_fallback"), 1);
}

}  // namespace
}  // namespace aibrix::routing
