#include <cmath>
#include <map>
#include <numeric>
#include <thread>

#include "aibrix/common/clock.h"
#include "aibrix/common/strings.h"
#include "aibrix/prefix/approx_index.h"
#include "aibrix/prefix/exact_index.h"
#include "aibrix/prefix/match.h"
#include "aibrix/routing/algorithm.h"
#include "aibrix/routing/vtc.h"
#include "aibrix/store/test_pods.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"

namespace aibrix::routing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kBs = 4;
constexpr char kModel[] = "m";

prefix::ExactIndexOptions ExactOpts() {
  prefix::ExactIndexOptions o;
  o.block_size = kBs;
  return o;
}
prefix::ApproxIndexOptions ApproxOpts() {
  prefix::ApproxIndexOptions o;
  o.block_size = kBs;
  return o;
}

double CounterValue(const std::vector<prometheus::MetricFamily>& fams, const std::string& name,
                    const std::map<std::string, std::string>& want) {
  for (const auto& f : fams) {
    if (f.name != name) continue;
    for (const auto& m : f.metric) {
      std::map<std::string, std::string> labels;
      for (const auto& l : m.label) labels[l.name] = l.value;
      bool ok = true;
      for (const auto& [k, v] : want) ok = ok && labels[k] == v;
      if (ok) return m.counter.value;
    }
  }
  return -1;
}

std::string Msg(const absl::Status& s) { return std::string(common::AsStd(s.message())); }

class RouterTest : public ::testing::Test {
 protected:
  RouterTest()
      : exact_(ExactOpts()),
        approx_(ApproxOpts()),
        matcher_(*prefix::PrefixMatcher::Create(&exact_, &approx_)) {}

  // Pods ns/p0 .. ns/p{n-1}, ready, serving `model`.
  void AddPods(int n, const std::string& model = kModel) {
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(store_.AddPod(store::testing::MakePod(fmt::format("p{}", i), model,
                                                        fmt::format("10.0.0.{}", i + 1), "ns")));
    }
  }
  // Puts `n` requests in flight on `pod`.
  void SetRunning(const std::string& pod, int n) {
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(store_.AddRequest(fmt::format("{}-{}", pod, next_id_++), pod, kModel).ok());
    }
  }
  std::unique_ptr<Router> MakeRouter(RouterOptions o = {}, prometheus::Registry* reg = nullptr) {
    if (o.seed == 0) o.seed = 42;
    if (o.clock == nullptr) o.clock = &clock_;
    return std::make_unique<Router>(store_, RouterDeps{&matcher_, &approx_}, o, reg);
  }
  // The engine on `pod` reports holding the first `blocks` blocks of `tokens`.
  void StoreExact(const std::string& pod, const std::vector<uint32_t>& tokens, int blocks) {
    kv::BlockStored s;
    for (int i = 0; i < blocks; ++i) s.block_hashes.push_back(1000 + i);
    s.token_ids.assign(tokens.begin(), tokens.begin() + blocks * kBs);
    s.block_size = kBs;
    kv::EventBatch b;
    b.events.push_back(s);
    exact_.ApplyBatch(kv::PodSource{pod, kModel, -1}, b);
  }
  void RecordApprox(const std::string& pod, const std::vector<uint32_t>& tokens, int blocks) {
    const auto keys = matcher_.Keys(kModel, "", tokens);
    approx_.RecordKeys(std::span(keys).first(blocks), pod);
  }
  static std::vector<uint32_t> Prompt(int tokens, uint32_t first = 1) {
    std::vector<uint32_t> t(tokens);
    std::iota(t.begin(), t.end(), first);
    return t;
  }
  RouteRequest Req(const std::vector<uint32_t>& tokens) {
    RouteRequest r;
    r.model = kModel;
    r.tokens = tokens;
    return r;
  }
  std::string RouteKey(const Router& router, std::string_view algo, const RouteRequest& req) {
    auto d = router.Route(algo, req);
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? d->pod->key : "";
  }
  // How often each pod is chosen over `n` decisions.
  std::map<std::string, int> Histogram(const Router& router, std::string_view algo,
                                       const RouteRequest& req, int n) {
    std::map<std::string, int> h;
    for (int i = 0; i < n; ++i) ++h[RouteKey(router, algo, req)];
    return h;
  }

  // Metric values scraped now, by the fake clock.
  store::MetricValue Simple(double v) const {
    return store::MetricValue{store::SimpleMetric{v, {}}, clock_.Now()};
  }
  store::MetricValue Hist(double sum, double count) const {
    store::HistogramMetric h;
    h.sum = sum;
    h.count = count;
    return store::MetricValue{h, clock_.Now()};
  }
  // Model-scope (under `model`) and pod-scope metric writes, as the scraper does them.
  void SetModel(const std::string& pod, const std::string& name, store::MetricValue v,
                const std::string& model = kModel) {
    ASSERT_TRUE(store_.SetPodModelMetric(pod, model, name, std::move(v)).ok());
  }
  void SetPod(const std::string& pod, const std::string& name, store::MetricValue v) {
    ASSERT_TRUE(store_.SetPodMetric(pod, name, std::move(v)).ok());
  }
  double Fallbacks(prometheus::Registry& reg, const std::string& algorithm,
                   const std::string& reason) {
    return CounterValue(reg.Collect(), "aibrix_routing_metric_fallback_total",
                        {{"algorithm", algorithm}, {"reason", reason}});
  }

  common::FakeClock clock_;
  store::Store store_;
  prefix::ExactIndex exact_;
  prefix::ApproxIndex approx_;
  prefix::PrefixMatcher matcher_;
  int next_id_ = 0;
};

// --- Registry -------------------------------------------------------------------------------

TEST_F(RouterTest, NamesAreSortedAndFound) {
  auto router = MakeRouter();
  EXPECT_THAT(
      router->Names(),
      ElementsAre("kv-aware", "least-busy-time", "least-gpu-cache", "least-kv-cache",
                  "least-latency", "least-load", "least-request", "least-utilization", "pack-load",
                  "prefix-cache", "prefix-cache-kv", "random", "slo", "slo-least-load",
                  "slo-least-load-pulling", "slo-pack-load", "throughput", "vtc-basic"));
  for (const std::string& n : router->Names()) {
    ASSERT_NE(router->Find(n), nullptr);
    EXPECT_EQ(router->Find(n)->name(), n);
  }
  EXPECT_FALSE(router->Has("prefix"));
}

TEST_F(RouterTest, UnknownAlgorithmListsTheKnownOnes) {
  AddPods(1);
  auto router = MakeRouter();
  const auto t = Prompt(8);
  auto d = router->Route("fastest", Req(t));
  ASSERT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Msg(d.status()),
            "unknown algorithm 'fastest' (known: kv-aware, least-busy-time, least-gpu-cache, "
            "least-kv-cache, least-latency, least-load, least-request, least-utilization, "
            "pack-load, prefix-cache, prefix-cache-kv, random, slo, slo-least-load, "
            "slo-least-load-pulling, slo-pack-load, throughput, vtc-basic)");
}

TEST_F(RouterTest, UnknownModelIsNotFound) {
  AddPods(1);
  auto router = MakeRouter();
  RouteRequest req;
  req.model = "nope";
  auto d = router->Route("random", req);
  ASSERT_EQ(d.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(d.status()), HasSubstr("nope"));
}

TEST_F(RouterTest, NoReadyPodIsUnavailable) {
  store::PodObject pod = store::testing::MakePod("p0", kModel, "10.0.0.1", "ns");
  pod.ready_condition = false;
  ASSERT_TRUE(store_.AddPod(pod));
  auto router = MakeRouter();
  for (const std::string& algo : router->Names()) {
    auto d = router->Route(algo, Req(Prompt(8)));
    ASSERT_EQ(d.status().code(), absl::StatusCode::kUnavailable) << algo;
    EXPECT_EQ(Msg(d.status()), "no ready pod for model m");
  }
}

TEST_F(RouterTest, ExcludedPodsAreNeverChosen) {
  AddPods(3);
  auto router = MakeRouter();
  const auto t = Prompt(16);
  RouteRequest req = Req(t);
  req.exclude_pods = {"ns/p0", "ns/p2"};
  for (const std::string& algo : router->Names()) {
    for (int i = 0; i < 20; ++i) EXPECT_EQ(RouteKey(*router, algo, req), "ns/p1") << algo;
  }
  req.exclude_pods.push_back("ns/p1");
  EXPECT_EQ(router->Route("random", req).status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(RouterTest, UnreadyPodsAreNeverCandidates) {
  AddPods(2);
  store::PodObject down = store::testing::MakePod("p9", kModel, "", "ns");  // no IP: not ready
  ASSERT_TRUE(store_.AddPod(down));
  const auto t = Prompt(16);
  StoreExact("ns/p9", t, 4);  // the unready pod holds the whole prompt
  RecordApprox("ns/p9", t, 4);
  auto router = MakeRouter();
  for (const std::string& algo : router->Names()) {
    for (int i = 0; i < 20; ++i) {
      auto d = router->Route(algo, Req(t));
      ASSERT_TRUE(d.ok()) << d.status();
      EXPECT_NE(d->pod->key, "ns/p9") << algo;
      EXPECT_EQ(d->candidates.size(), 2u) << algo;
    }
  }
}

// --- random / least-request -----------------------------------------------------------------

TEST_F(RouterTest, RandomIsSeededAndCoversEveryPod) {
  AddPods(3);
  const auto t = Prompt(4);
  auto a = MakeRouter({.seed = 7});
  auto b = MakeRouter({.seed = 7});
  std::vector<std::string> sa, sb;
  for (int i = 0; i < 50; ++i) {
    sa.push_back(RouteKey(*a, "random", Req(t)));
    sb.push_back(RouteKey(*b, "random", Req(t)));
  }
  EXPECT_EQ(sa, sb);
  const auto h = Histogram(*a, "random", Req(t), 3000);
  ASSERT_EQ(h.size(), 3u);
  for (const auto& [pod, n] : h) EXPECT_GT(n, 800) << pod;
}

TEST_F(RouterTest, LeastRequestPicksFewestInFlightAndBreaksTiesRandomly) {
  AddPods(3);
  SetRunning("ns/p0", 2);
  SetRunning("ns/p1", 1);
  SetRunning("ns/p2", 1);
  auto router = MakeRouter();
  const auto t = Prompt(4);
  auto d = router->Route("least-request", Req(t));
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->candidates.size(), 3u);
  EXPECT_EQ(d->candidates[0].running, 2);
  EXPECT_EQ(d->candidates[0].score, 2);
  EXPECT_EQ(d->algorithm, "least-request");
  const auto h = Histogram(*router, "least-request", Req(t), 400);
  EXPECT_EQ(h.count("ns/p0"), 0u);
  EXPECT_GT(h.at("ns/p1"), 100);
  EXPECT_GT(h.at("ns/p2"), 100);
  // Settling a request on p0 does not change the picture; settling two does.
  ASSERT_TRUE(store_.DoneRequest("ns/p0-0").ok());
  ASSERT_TRUE(store_.DoneRequest("ns/p0-1").ok());
  EXPECT_EQ(RouteKey(*router, "least-request", Req(t)), "ns/p0");
}

TEST_F(RouterTest, RunningCountsIncludeOtherReplicasReports) {
  AddPods(2);
  SetRunning("ns/p0", 1);
  // Another gateway replica reports 3 requests on p1 (Redis replica sync): p0 is less loaded.
  (*store_.GetPod("ns/p1"))->state->set_remote_running(3);
  auto router = MakeRouter();
  const auto t = Prompt(4);
  for (const char* algo : {"least-request", "prefix-cache", "kv-aware"}) {
    auto d = router->Route(algo, Req(t));
    ASSERT_TRUE(d.ok()) << algo;
    EXPECT_EQ(d->pod->key, "ns/p0") << algo;
    EXPECT_EQ(d->candidates[1].running, 3) << algo;
  }
}

// --- metric algorithms ----------------------------------------------------------------------

TEST_F(RouterTest, ThroughputReadsTokensPerRequestHistogramMeans) {
  AddPods(3);
  // p0: 2*100 + 10 = 210; p1: 2*10 + 150 = 170; p2: prompt tokens only (skipped).
  SetModel("ns/p0", "request_prompt_tokens", Hist(1000, 10));
  SetModel("ns/p0", "request_generation_tokens", Hist(100, 10));
  SetModel("ns/p1", "request_prompt_tokens", Hist(100, 10));
  SetModel("ns/p1", "request_generation_tokens", Hist(1500, 10));
  SetModel("ns/p2", "request_prompt_tokens", Hist(10, 10));
  auto router = MakeRouter();
  auto d = router->Route("throughput", Req(Prompt(4)));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->pod->key, "ns/p1");
  EXPECT_DOUBLE_EQ(d->candidates[0].score, 210);
  EXPECT_DOUBLE_EQ(d->candidates[1].score, 170);
  EXPECT_TRUE(std::isnan(d->candidates[2].score));
}

TEST_F(RouterTest, MetricAlgorithmsFallBackToLeastRequestWhenNoPodHasTheMetric) {
  AddPods(3);
  SetRunning("ns/p0", 1);
  SetRunning("ns/p2", 1);
  prometheus::Registry reg;
  auto router = MakeRouter({}, &reg);
  const auto t = Prompt(4);
  for (const char* algo : {"throughput", "least-kv-cache", "least-latency", "least-gpu-cache",
                           "least-utilization", "least-busy-time", "vtc-basic"}) {
    for (int i = 0; i < 10; ++i) EXPECT_EQ(RouteKey(*router, algo, Req(t)), "ns/p1") << algo;
    EXPECT_EQ(Fallbacks(reg, algo, "missing"), 10) << algo;
    EXPECT_EQ(Fallbacks(reg, algo, "stale"), -1) << algo;  // never counted
  }
}

TEST_F(RouterTest, StaleValuesAreSkippedAndAllStaleFallsBackCountingStale) {
  AddPods(2);
  SetRunning("ns/p1", 1);
  prometheus::Registry reg;
  auto router = MakeRouter({}, &reg);  // max age 1 s
  SetModel("ns/p0", "kv_cache_usage_perc", Simple(0.1));
  clock_.Advance(std::chrono::milliseconds(600));
  SetModel("ns/p1", "kv_cache_usage_perc", Simple(0.5));
  EXPECT_EQ(RouteKey(*router, "least-kv-cache", Req(Prompt(4))), "ns/p0");
  // p0's value is 1.1 s old: skipped, although it is lower.
  clock_.Advance(std::chrono::milliseconds(500));
  auto d = router->Route("least-kv-cache", Req(Prompt(4)));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->pod->key, "ns/p1");
  EXPECT_TRUE(std::isnan(d->candidates[0].score));
  EXPECT_DOUBLE_EQ(d->candidates[1].score, 0.5);
  EXPECT_EQ(Fallbacks(reg, "least-kv-cache", "stale"), -1);
  // Both stale: least-request (p0 has nothing in flight), counted as stale.
  clock_.Advance(std::chrono::milliseconds(600));
  EXPECT_EQ(RouteKey(*router, "least-kv-cache", Req(Prompt(4))), "ns/p0");
  EXPECT_EQ(Fallbacks(reg, "least-kv-cache", "stale"), 1);
  EXPECT_EQ(Fallbacks(reg, "least-kv-cache", "missing"), -1);
  // A new scrape makes the pod usable again.
  SetModel("ns/p1", "kv_cache_usage_perc", Simple(0.9));
  EXPECT_EQ(RouteKey(*router, "least-kv-cache", Req(Prompt(4))), "ns/p1");
  EXPECT_EQ(Fallbacks(reg, "least-kv-cache", "stale"), 1);
}

TEST_F(RouterTest, MaxAgeIsInclusiveAndConfigurable) {
  AddPods(2);
  SetRunning("ns/p0", 1);
  auto router = MakeRouter({.metric_max_age = std::chrono::milliseconds(50)});
  SetModel("ns/p0", "kv_cache_usage_perc", Simple(0.1));
  SetModel("ns/p1", "kv_cache_usage_perc", Simple(0.9));
  clock_.Advance(std::chrono::milliseconds(50));
  EXPECT_EQ(RouteKey(*router, "least-kv-cache", Req(Prompt(4))), "ns/p0");
  clock_.Advance(std::chrono::nanoseconds(1));
  EXPECT_EQ(RouteKey(*router, "least-kv-cache", Req(Prompt(4))), "ns/p1");  // least-request
}

TEST_F(RouterTest, AValueWithoutScrapeTimeIsNeverUsed) {
  AddPods(2);
  prometheus::Registry reg;
  auto router = MakeRouter({}, &reg);
  SetModel("ns/p0", "kv_cache_usage_perc", store::MetricValue{store::SimpleMetric{0.1, {}}});
  SetModel("ns/p1", "kv_cache_usage_perc", Simple(0.9));
  EXPECT_EQ(RouteKey(*router, "least-kv-cache", Req(Prompt(4))), "ns/p1");
}

TEST_F(RouterTest, LeastKvCacheAddsCpuUsageAndReadsPodScopeToo) {
  AddPods(3);
  SetModel("ns/p0", "kv_cache_usage_perc", Simple(0.3));
  SetModel("ns/p0", "cpu_cache_usage_perc", Simple(0.5));
  SetPod("ns/p1", "kv_cache_usage_perc", Simple(0.6));  // pod scope
  SetModel("ns/p2", "cpu_cache_usage_perc", Simple(0));
  auto router = MakeRouter();
  auto d = router->Route("least-kv-cache", Req(Prompt(4)));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->pod->key, "ns/p1");  // 0.6 < 0.8; p2 has no kv metric
  EXPECT_DOUBLE_EQ(d->candidates[0].score, 0.8);
  EXPECT_TRUE(std::isnan(d->candidates[2].score));
  // A stale CPU gauge counts 0 (vLLM v1 does not export it at all).
  clock_.Advance(std::chrono::milliseconds(600));
  SetModel("ns/p0", "kv_cache_usage_perc", Simple(0.3));
  SetPod("ns/p1", "kv_cache_usage_perc", Simple(0.6));
  clock_.Advance(std::chrono::milliseconds(500));
  d = router->Route("least-kv-cache", Req(Prompt(4)));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->pod->key, "ns/p0");
  EXPECT_DOUBLE_EQ(d->candidates[0].score, 0.3);
}

TEST_F(RouterTest, ModelScopeUnderTheRequestModelThenBaseModelThenPodScope) {
  AddPods(2);
  store_.AddModelAdapter(store::ModelAdapterObject{"ns", "lora-a", {"p0", "p1"}});
  SetModel("ns/p0", "kv_cache_usage_perc", Simple(0.9), "lora-a");
  SetModel("ns/p0", "kv_cache_usage_perc", Simple(0.1), kModel);
  SetPod("ns/p0", "kv_cache_usage_perc", Simple(0.0));
  SetModel("ns/p1", "kv_cache_usage_perc", Simple(0.5), kModel);
  SetPod("ns/p1", "kv_cache_usage_perc", Simple(0.0));
  auto router = MakeRouter();
  RouteRequest adapter = Req(Prompt(4));
  adapter.model = "lora-a";
  auto d = router->Route("least-kv-cache", adapter);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_DOUBLE_EQ(d->candidates[0].score, 0.9);  // the adapter's own value
  EXPECT_DOUBLE_EQ(d->candidates[1].score, 0.5);  // the base model's
  EXPECT_EQ(d->pod->key, "ns/p1");
  d = router->Route("least-kv-cache", Req(Prompt(4)));
  ASSERT_TRUE(d.ok());
  EXPECT_DOUBLE_EQ(d->candidates[0].score, 0.1);
  EXPECT_EQ(d->pod->key, "ns/p0");
}

TEST_F(RouterTest, LeastGpuCachePrefersAFreshGpuGaugeThenTheKvGauge) {
  AddPods(3);
  SetModel("ns/p0", "gpu_cache_usage_perc", Simple(0.4));
  SetModel("ns/p0", "kv_cache_usage_perc", Simple(0.0));
  SetModel("ns/p1", "kv_cache_usage_perc", Simple(0.2));
  SetModel("ns/p2", "gpu_cache_usage_perc", Simple(0.9));
  auto router = MakeRouter();
  auto d = router->Route("least-gpu-cache", Req(Prompt(4)));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->pod->key, "ns/p1");
  EXPECT_DOUBLE_EQ(d->candidates[0].score, 0.4);
  // p0's GPU gauge goes stale while its KV gauge is refreshed: the KV gauge counts.
  clock_.Advance(std::chrono::milliseconds(600));
  SetModel("ns/p0", "kv_cache_usage_perc", Simple(0.05));
  SetModel("ns/p1", "kv_cache_usage_perc", Simple(0.2));
  clock_.Advance(std::chrono::milliseconds(500));
  d = router->Route("least-gpu-cache", Req(Prompt(4)));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->pod->key, "ns/p0");
  EXPECT_DOUBLE_EQ(d->candidates[0].score, 0.05);
  EXPECT_TRUE(std::isnan(d->candidates[2].score));
}

TEST_F(RouterTest, LeastLatencyScalesPerTokenTimesToThisRequest) {
  AddPods(3);
  // p0: queue 0.1 s, prefill 0.2 s per 100-token prompt, decode 1.0 s per 50 tokens.
  SetModel("ns/p0", "request_queue_time_seconds", Hist(1, 10));
  SetModel("ns/p0", "request_prefill_time_seconds", Hist(2, 10));
  SetModel("ns/p0", "request_decode_time_seconds", Hist(10, 10));
  SetModel("ns/p0", "request_prompt_tokens", Hist(1000, 10));
  SetModel("ns/p0", "request_generation_tokens", Hist(500, 10));
  // p1: queue 0.5 s, prefill 0.1 s, decode 0.3 s; no token histograms: the fleet's means
  // (100 prompt tokens, 50 generated) stand in.
  SetModel("ns/p1", "request_queue_time_seconds", Hist(5, 10));
  SetModel("ns/p1", "request_prefill_time_seconds", Hist(1, 10));
  SetModel("ns/p1", "request_decode_time_seconds", Hist(3, 10));
  // p2: queue time only: skipped.
  SetModel("ns/p2", "request_queue_time_seconds", Hist(0, 10));
  auto router = MakeRouter();
  // A 20-token prompt; 50 tokens expected out.
  auto d = router->Route("least-latency", Req(Prompt(20)));
  ASSERT_TRUE(d.ok());
  EXPECT_NEAR(d->candidates[0].score, 0.1 + 0.002 * 20 + 0.02 * 50, 1e-12);   // 1.14
  EXPECT_NEAR(d->candidates[1].score, 0.5 + 0.001 * 20 + 0.006 * 50, 1e-12);  // 0.82
  EXPECT_TRUE(std::isnan(d->candidates[2].score));
  EXPECT_EQ(d->pod->key, "ns/p1");
  // Without a tokenized prompt the fleet's mean prompt (100 tokens) is assumed.
  const std::vector<uint32_t> none;
  d = router->Route("least-latency", Req(none));
  ASSERT_TRUE(d.ok());
  EXPECT_NEAR(d->candidates[0].score, 0.1 + 0.2 + 1.0, 1e-12);
  EXPECT_NEAR(d->candidates[1].score, 0.5 + 0.1 + 0.3, 1e-12);
}

TEST_F(RouterTest, LeastUtilizationReadsEngineUtilization) {
  AddPods(3);
  SetModel("ns/p0", "engine_utilization", Simple(0.7));
  SetModel("ns/p1", "engine_utilization", Simple(0.2));
  SetPod("ns/p2", "engine_utilization", Simple(0.5));
  auto router = MakeRouter();
  auto d = router->Route("least-utilization", Req(Prompt(4)));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->pod->key, "ns/p1");
  EXPECT_DOUBLE_EQ(d->candidates[2].score, 0.5);
}

TEST_F(RouterTest, LeastBusyTimeIsQueuedWorkTimesServiceTime) {
  AddPods(4);
  // p0: 3 requests × (0.1 + 0.9) s = 3 s.
  SetModel("ns/p0", "num_requests_running", Simple(2));
  SetModel("ns/p0", "num_requests_waiting", Simple(1));
  SetModel("ns/p0", "request_prefill_time_seconds", Hist(1, 10));
  SetModel("ns/p0", "request_decode_time_seconds", Hist(9, 10));
  // p1: 2 requests × (0.3 + 2.7) s = 6 s.
  SetModel("ns/p1", "num_requests_running", Simple(1));
  SetModel("ns/p1", "num_requests_waiting", Simple(1));
  SetModel("ns/p1", "request_prefill_time_seconds", Hist(3, 10));
  SetModel("ns/p1", "request_decode_time_seconds", Hist(27, 10));
  // p2: nothing finished yet: the fleet's mean service time, 2 s; 1 request = 2 s.
  SetModel("ns/p2", "num_requests_running", Simple(1));
  SetModel("ns/p2", "num_requests_waiting", Simple(0));
  SetModel("ns/p2", "request_prefill_time_seconds", Hist(0, 0));
  // p3: no waiting gauge: skipped.
  SetModel("ns/p3", "num_requests_running", Simple(0));
  auto router = MakeRouter();
  auto d = router->Route("least-busy-time", Req(Prompt(4)));
  ASSERT_TRUE(d.ok());
  EXPECT_DOUBLE_EQ(d->candidates[0].score, 3);
  EXPECT_DOUBLE_EQ(d->candidates[1].score, 6);
  EXPECT_DOUBLE_EQ(d->candidates[2].score, 2);
  EXPECT_TRUE(std::isnan(d->candidates[3].score));
  EXPECT_EQ(d->pod->key, "ns/p2");
}

TEST_F(RouterTest, MetricTiesAreBrokenRandomly) {
  AddPods(3);
  for (const char* p : {"ns/p0", "ns/p1", "ns/p2"}) SetModel(p, "kv_cache_usage_perc", Simple(0.5));
  auto router = MakeRouter();
  EXPECT_EQ(Histogram(*router, "least-kv-cache", Req(Prompt(4)), 300).size(), 3u);
}

// --- vtc-basic ------------------------------------------------------------------------------

TEST(VtcTokenTrackerTest, CountsOverASlidingWindowOfMinuteBuckets) {
  common::FakeClock clock;
  VtcTokenTracker tracker(clock, /*window_minutes=*/3, /*max_users=*/10);
  tracker.Add("a", 10);
  tracker.Add("", 99);  // anonymous: ignored
  EXPECT_EQ(tracker.Tokens("a"), 10);
  EXPECT_EQ(tracker.Tokens(""), 0);
  EXPECT_EQ(tracker.users(), 1u);
  clock.Advance(std::chrono::minutes(1));
  tracker.Add("a", 5);
  EXPECT_EQ(tracker.Tokens("a"), 15);
  clock.Advance(std::chrono::minutes(2));  // the first bucket leaves the 3-minute window
  EXPECT_EQ(tracker.Tokens("a"), 5);
  clock.Advance(std::chrono::minutes(1));
  EXPECT_EQ(tracker.Tokens("a"), 0);
  EXPECT_EQ(tracker.Tokens("nobody"), 0);
}

TEST(VtcTokenTrackerTest, ForgetsTheLeastRecentlyUpdatedUserPastTheCap) {
  common::FakeClock clock;
  VtcTokenTracker tracker(clock, 60, /*max_users=*/2);
  tracker.Add("a", 1);
  tracker.Add("b", 2);
  tracker.Add("a", 1);  // a is now the most recent
  tracker.Add("c", 3);  // evicts b
  EXPECT_EQ(tracker.users(), 2u);
  EXPECT_EQ(tracker.Tokens("a"), 2);
  EXPECT_EQ(tracker.Tokens("b"), 0);
  EXPECT_EQ(tracker.Tokens("c"), 3);
}

TEST_F(RouterTest, VtcBasicWalksAUserAcrossPodsAsItsTokensGrow) {
  AddPods(4);
  for (int i = 0; i < 4; ++i) {
    SetModel(fmt::format("ns/p{}", i), "num_requests_running", Simple(0));
  }
  auto router = MakeRouter();
  const auto* vtc = dynamic_cast<const VtcBasicAlgorithm*>(router->Find("vtc-basic"));
  ASSERT_NE(vtc, nullptr);
  const auto t = Prompt(40);  // each request adds 1 × 40 + 2 × ⌈1.5 × 40⌉ = 160 tokens
  RouteRequest req = Req(t);
  req.user = "alice";
  // position = (tokens mod 400) / 100: 0 → p0, 1.6 → p2, 3.2 → p3, 0.8 → p1.
  std::vector<std::string> chosen;
  for (int i = 0; i < 4; ++i) chosen.push_back(RouteKey(*router, "vtc-basic", req));
  EXPECT_THAT(chosen, ElementsAre("ns/p0", "ns/p2", "ns/p3", "ns/p1"));
  EXPECT_EQ(vtc->tracker().Tokens("alice"), 640);
  auto d = router->Route("vtc-basic", req);  // position 2.4: p2 at distance 0.4
  ASSERT_TRUE(d.ok());
  EXPECT_DOUBLE_EQ(d->candidates[2].score, 0.5 * 0.4);
  EXPECT_DOUBLE_EQ(d->candidates[0].score, 0.5 * 2.4);
}

TEST_F(RouterTest, VtcBasicSteersAwayFromLoadedPodsAndAnonymousRequestsFollowLoad) {
  AddPods(4);
  SetModel("ns/p0", "num_requests_running", Simple(10));
  SetModel("ns/p1", "num_requests_running", Simple(0));
  SetModel("ns/p2", "num_requests_running", Simple(3));
  SetModel("ns/p3", "num_requests_running", Simple(1));
  auto router = MakeRouter({.vtc_utilization_weight = 1.0, .vtc_max_pod_load = 10});
  const auto* vtc = dynamic_cast<const VtcBasicAlgorithm*>(router->Find("vtc-basic"));
  RouteRequest req = Req(Prompt(4));
  req.user = "bob";  // position 0: p0 (fairness 0, load 1.0 → 1.0) loses to p1 (0.5 + 0)
  auto d = router->Route("vtc-basic", req);
  ASSERT_TRUE(d.ok());
  EXPECT_DOUBLE_EQ(d->candidates[0].score, 1.0);
  EXPECT_DOUBLE_EQ(d->candidates[1].score, 0.5);
  EXPECT_EQ(d->pod->key, "ns/p1");
  // Anonymous: no fairness term, no tokens counted; the least loaded engine wins.
  req.user.clear();
  d = router->Route("vtc-basic", req);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->pod->key, "ns/p1");
  EXPECT_DOUBLE_EQ(d->candidates[3].score, 0.1);
  EXPECT_EQ(vtc->tracker().users(), 1u);
}

// --- kv-aware with engine load --------------------------------------------------------------

TEST_F(RouterTest, KvAwareLoadIsTheLargerOfLocalAndEngineCounts) {
  AddPods(3);
  SetRunning("ns/p0", 1);
  SetModel("ns/p0", "num_requests_running", Simple(0));  // the scrape lags our request
  SetModel("ns/p0", "num_requests_waiting", Simple(0));
  SetModel("ns/p1", "num_requests_running", Simple(2));  // another gateway's requests
  SetModel("ns/p1", "num_requests_waiting", Simple(1));
  prometheus::Registry reg;
  auto router = MakeRouter({.kv_aware_prefill_weight = 1.0, .kv_aware_decode_weight = 256}, &reg);
  const auto t = Prompt(16 * kBs);  // 64 uncached tokens everywhere
  auto d = router->Route("kv-aware", Req(t));
  ASSERT_TRUE(d.ok());
  EXPECT_DOUBLE_EQ(d->candidates[0].score, 64 + 256 * 1);
  EXPECT_DOUBLE_EQ(d->candidates[1].score, 64 + 256 * 3);
  EXPECT_DOUBLE_EQ(d->candidates[2].score, 64);  // no engine counts: local only
  EXPECT_EQ(d->pod->key, "ns/p2");
  EXPECT_EQ(Fallbacks(reg, "kv-aware", "stale"), -1);
  EXPECT_EQ(Fallbacks(reg, "kv-aware", "missing"), -1);
  // Stale engine counts are ignored: local counts only, reported as a fallback.
  clock_.Advance(std::chrono::seconds(2));
  d = router->Route("kv-aware", Req(t));
  ASSERT_TRUE(d.ok());
  EXPECT_DOUBLE_EQ(d->candidates[1].score, 64);
  EXPECT_EQ(Fallbacks(reg, "kv-aware", "stale"), 1);
}

// --- prefix-cache ---------------------------------------------------------------------------

TEST_F(RouterTest, PrefixCacheRecordsItsDecisionAndFollowsIt) {
  AddPods(4);
  auto router = MakeRouter();
  const auto t = Prompt(4 * kBs + 1);  // 4 complete blocks
  auto first = router->Route("prefix-cache", Req(t));
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->matched_blocks, 0u);
  EXPECT_EQ(first->total_blocks, 4u);
  // The index now credits the chosen pod with the prompt.
  const auto m = matcher_.Match(kModel, "", t);
  ASSERT_EQ(m.pods.size(), 1u);
  EXPECT_EQ(m.pods[0].pod, first->pod->key);
  EXPECT_EQ(m.pods[0].matched_blocks, 4u);
  for (int i = 0; i < 10; ++i) {
    auto d = router->Route("prefix-cache", Req(t));
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->pod->key, first->pod->key);
    EXPECT_EQ(d->matched_blocks, 4u);
    const int idx = first->pod->key.back() - '0';
    EXPECT_EQ(d->candidates[idx].score, 100);
  }
}

TEST_F(RouterTest, PrefixCachePrefersLongerMatchThenLowerLoad) {
  AddPods(3);
  const auto t = Prompt(4 * kBs);
  RecordApprox("ns/p0", t, 1);  // 25 %
  RecordApprox("ns/p1", t, 3);  // 75 %
  RecordApprox("ns/p2", t, 3);  // 75 %
  SetRunning("ns/p1", 1);
  auto router = MakeRouter();
  auto d = router->Route("prefix-cache", Req(t));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->pod->key, "ns/p2");
  EXPECT_EQ(d->candidates[0].score, 25);
  EXPECT_EQ(d->candidates[1].score, 75);
  EXPECT_EQ(d->candidates[1].matched_blocks, 3u);
}

TEST_F(RouterTest, PrefixCacheStdDevRuleSkipsAnOverloadedHolder) {
  AddPods(3);
  const auto t = Prompt(4 * kBs);
  RecordApprox("ns/p0", t, 4);
  // running {2, 2, 0}: mean 1.33, sample sd 1.15, limit 2.49 -> p0 qualifies.
  SetRunning("ns/p0", 2);
  SetRunning("ns/p1", 2);
  auto router = MakeRouter();
  EXPECT_EQ(RouteKey(*router, "prefix-cache", Req(t)), "ns/p0");
  // running {5, 2, 0}: mean 2.33, sd 2.52, limit 4.85 -> p0 skipped, least-request wins.
  SetRunning("ns/p0", 3);  // routing itself adds no request: only the caller's AddRequest
  EXPECT_EQ(store_.ReadyPods(kModel)->ready[0]->state->running(), 5);
  EXPECT_EQ(RouteKey(*router, "prefix-cache", Req(t)), "ns/p2");
}

TEST_F(RouterTest, PrefixCacheStdDevFactorIsConfigurable) {
  AddPods(3);
  const auto t = Prompt(4 * kBs);
  RecordApprox("ns/p0", t, 4);
  SetRunning("ns/p0", 5);
  SetRunning("ns/p1", 2);
  // limit = 2.33 + 2 * 2.52 = 7.4 -> p0 qualifies.
  auto router = MakeRouter({.std_dev_factor = 2.0});
  EXPECT_EQ(RouteKey(*router, "prefix-cache", Req(t)), "ns/p0");
}

TEST_F(RouterTest, PrefixCacheLoadImbalanceGate) {
  AddPods(2);
  const auto t = Prompt(4 * kBs);
  RecordApprox("ns/p0", t, 4);
  // max - min = 8: not imbalanced; 2 pods {8, 0}: mean 4, sd 5.66 -> p0 (the holder) wins.
  SetRunning("ns/p0", 8);
  auto router = MakeRouter();
  EXPECT_EQ(RouteKey(*router, "prefix-cache", Req(t)), "ns/p0");
  // max - min = 9 > 8: only pods at the minimum are eligible.
  SetRunning("ns/p0", 1);
  EXPECT_EQ(RouteKey(*router, "prefix-cache", Req(t)), "ns/p1");
  // (That decision recorded t on p1 too.) A higher threshold lets a sole holder win again.
  const auto t2 = Prompt(4 * kBs, 100);
  RecordApprox("ns/p0", t2, 4);
  auto lenient = MakeRouter({.imbalance_abs_count = 9});
  EXPECT_EQ(RouteKey(*lenient, "prefix-cache", Req(t2)), "ns/p0");
}

TEST_F(RouterTest, PrefixCacheUnderTheGateStillPrefersAHolderAmongTheLeastLoaded) {
  AddPods(3);
  const auto t = Prompt(4 * kBs);
  RecordApprox("ns/p2", t, 2);
  SetRunning("ns/p0", 9);
  auto router = MakeRouter();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(RouteKey(*router, "prefix-cache", Req(t)), "ns/p2");
}

TEST_F(RouterTest, PrefixCacheWithoutMatchIsLeastRequestWithRandomTies) {
  AddPods(3);
  SetRunning("ns/p1", 1);
  // Prompts shorter than a block hash to nothing: nothing is recorded either.
  auto router = MakeRouter();
  const auto t = Prompt(kBs - 1);
  const auto h = Histogram(*router, "prefix-cache", Req(t), 200);
  EXPECT_EQ(h.count("ns/p1"), 0u);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_EQ(approx_.memberships(), 0u);
}

TEST_F(RouterTest, PrefixCacheUsesTheRequestedAdapter) {
  AddPods(2);
  const auto t = Prompt(4 * kBs);
  auto router = MakeRouter();
  RouteRequest lora = Req(t);
  lora.lora = "sql";
  const std::string chosen = RouteKey(*router, "prefix-cache", lora);
  // The blocks were recorded under the adapter, not the base model.
  EXPECT_TRUE(matcher_.Match(kModel, "", t).pods.empty());
  ASSERT_EQ(matcher_.Match(kModel, "sql", t).pods.size(), 1u);
  EXPECT_EQ(matcher_.Match(kModel, "sql", t).pods[0].pod, chosen);
  // Load the adapter's pod a little: the adapter request still follows its blocks.
  SetRunning(chosen, 1);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(RouteKey(*router, "prefix-cache", lora), chosen);
}

TEST_F(RouterTest, PrefixCacheDerivesTheAdapterFromAnAdapterModelName) {
  AddPods(2);
  store_.AddModelAdapter({"ns", "sql", {"p0", "p1"}});
  const auto t = Prompt(2 * kBs);
  auto router = MakeRouter();
  RouteRequest req = Req(t);
  req.model = "sql";
  const std::string chosen = RouteKey(*router, "prefix-cache", req);
  ASSERT_EQ(matcher_.Match(kModel, "sql", t).pods.size(), 1u);
  EXPECT_EQ(matcher_.Match(kModel, "sql", t).pods[0].pod, chosen);
}

TEST_F(RouterTest, PrefixCacheIgnoresExactIndexAndKvVariantIgnoresApprox) {
  AddPods(3);
  const auto t = Prompt(4 * kBs);
  StoreExact("ns/p1", t, 4);
  RecordApprox("ns/p2", t, 4);
  auto router = MakeRouter();
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(RouteKey(*router, "prefix-cache-kv", Req(t)), "ns/p1");
    EXPECT_EQ(RouteKey(*router, "prefix-cache", Req(t)), "ns/p2");
  }
  // prefix-cache-kv records nothing in the approximate index.
  const uint64_t before = approx_.memberships();
  ASSERT_TRUE(router->Route("prefix-cache-kv", Req(Prompt(4 * kBs, 500))).ok());
  EXPECT_EQ(approx_.memberships(), before);
}

TEST_F(RouterTest, PrefixCacheKvUsesTheBestTier) {
  AddPods(2);
  const auto t = Prompt(4 * kBs);
  StoreExact("ns/p0", t, 2);
  auto router = MakeRouter();
  auto d = router->Route("prefix-cache-kv", Req(t));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->pod->key, "ns/p0");
  EXPECT_EQ(d->matched_blocks, 2u);
  EXPECT_EQ(d->candidates[0].score, 50);
}

// --- kv-aware -------------------------------------------------------------------------------

TEST_F(RouterTest, KvAwareCostIsUncachedPrefillPlusDecodeLoad) {
  AddPods(3);
  const auto t = Prompt(16 * kBs);  // 64 tokens, 16 blocks
  StoreExact("ns/p0", t, 16);       // all cached, running 1
  RecordApprox("ns/p1", t, 8);      // half cached, running 0
  SetRunning("ns/p0", 1);
  SetRunning("ns/p2", 0);
  // Light decode weight: the full holder wins (the decision re-records t on p0 only).
  {
    auto router = MakeRouter({.kv_aware_prefill_weight = 1.0, .kv_aware_decode_weight = 16});
    auto d = router->Route("kv-aware", Req(t));
    ASSERT_TRUE(d.ok());
    EXPECT_DOUBLE_EQ(d->candidates[0].score, 16);
    EXPECT_EQ(d->pod->key, "ns/p0");
  }
  // Heavy decode weight: one running request outweighs 32 uncached tokens.
  {
    auto router = MakeRouter({.kv_aware_prefill_weight = 1.0, .kv_aware_decode_weight = 256});
    auto d = router->Route("kv-aware", Req(t));
    ASSERT_TRUE(d.ok());
    EXPECT_DOUBLE_EQ(d->candidates[0].score, 256);  // 0 uncached + 256 * 1
    EXPECT_DOUBLE_EQ(d->candidates[1].score, 32);   // 32 uncached
    EXPECT_DOUBLE_EQ(d->candidates[2].score, 64);   // 64 uncached
    EXPECT_EQ(d->candidates[0].matched_blocks, 16u);
    EXPECT_EQ(d->candidates[1].matched_blocks, 8u);
    EXPECT_EQ(d->pod->key, "ns/p1");
  }
}

TEST_F(RouterTest, KvAwarePricesThePrefillQueuedOnEachPod) {
  AddPods(2);
  const auto t = Prompt(16 * kBs);  // 64 tokens
  StoreExact("ns/p0", t, 16);       // p0 holds all of it, p1 none
  auto router = MakeRouter(
      {.kv_aware_prefill_weight = 1.0, .kv_aware_decode_weight = 16, .kv_aware_queue_weight = 1.0});
  auto d = router->Route("kv-aware", Req(t));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->pod->key, "ns/p0");
  EXPECT_EQ(d->uncached_tokens, 0);

  // 100 prompt tokens still to prefill on p0 (a request whose answer has not begun): waiting
  // for them costs more than prefilling the whole prompt on the idle p1.
  const store::PodRef p0 = *store_.GetPod("ns/p0");
  ASSERT_TRUE(
      store_.AddRequest("long", p0, store_.ReadyPods(kModel), {.prefill_tokens = 100}).ok());
  d = router->Route("kv-aware", Req(t));
  ASSERT_TRUE(d.ok());
  EXPECT_DOUBLE_EQ(d->candidates[0].score, 100 + 16);  // queued + one running request
  EXPECT_DOUBLE_EQ(d->candidates[1].score, 64);
  EXPECT_EQ(d->pod->key, "ns/p1");
  EXPECT_EQ(d->uncached_tokens, 64);

  // Its answer began: p0 costs its running request only (p1 now holds the prompt too: the
  // decision above recorded it there).
  ASSERT_TRUE(store_.PrefillDone("long").ok());
  d = router->Route("kv-aware", Req(t));
  ASSERT_TRUE(d.ok());
  EXPECT_DOUBLE_EQ(d->candidates[0].score, 16);
  EXPECT_DOUBLE_EQ(d->candidates[1].score, 0);
}

TEST_F(RouterTest, KvAwareTakesTheBestOfBothIndexesAndRecords) {
  AddPods(2);
  const auto t = Prompt(8 * kBs);
  StoreExact("ns/p0", t, 2);
  RecordApprox("ns/p0", t, 6);
  auto router = MakeRouter();
  auto d = router->Route("kv-aware", Req(t));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->pod->key, "ns/p0");
  EXPECT_EQ(d->candidates[0].matched_blocks, 6u);
  EXPECT_DOUBLE_EQ(d->candidates[0].score, 8);
  EXPECT_EQ(d->total_blocks, 8u);
  // The decision was recorded: the approximate index now holds the whole prompt on p0.
  uint32_t approx_p0 = 0;
  for (const auto& m : matcher_.Match(kModel, "", t).pods) {
    if (m.pod == "ns/p0" && m.source == prefix::MatchSource::kRouting) approx_p0 = m.matched_blocks;
  }
  EXPECT_EQ(approx_p0, 8u);
}

TEST_F(RouterTest, KvAwareTiesAreRandom) {
  AddPods(4);
  auto router = MakeRouter();
  EXPECT_EQ(Histogram(*router, "kv-aware", Req(Prompt(kBs - 1)), 400).size(), 4u);
}

TEST_F(RouterTest, WorksWithoutAnyIndex) {
  AddPods(2);
  SetRunning("ns/p0", 1);
  Router router(store_, RouterDeps{}, RouterOptions{.seed = 1});
  const auto t = Prompt(4 * kBs);
  for (const char* algo : {"prefix-cache", "prefix-cache-kv", "kv-aware"}) {
    auto d = router.Route(algo, Req(t));
    ASSERT_TRUE(d.ok()) << algo << d.status();
    EXPECT_EQ(d->pod->key, "ns/p1") << algo;
    EXPECT_EQ(d->total_blocks, 0u);
  }
}

// --- metrics and concurrency ----------------------------------------------------------------

TEST_F(RouterTest, ExportsRoutingMetrics) {
  AddPods(2);
  prometheus::Registry reg;
  auto router = MakeRouter({}, &reg);
  const auto t = Prompt(4 * kBs);
  ASSERT_TRUE(router->Route("prefix-cache", Req(t)).ok());  // no match: fallback
  ASSERT_TRUE(router->Route("prefix-cache", Req(t)).ok());  // 100 % match
  ASSERT_FALSE(router->Route("nope", Req(t)).ok());
  const auto fams = reg.Collect();
  EXPECT_EQ(
      CounterValue(fams, "aibrix_prefix_cache_routing_decisions_total",
                   {{"model", "m"}, {"match_percent_bucket", "0"}, {"using_kv_sync", "false"}}),
      1);
  EXPECT_EQ(CounterValue(fams, "aibrix_prefix_cache_routing_decisions_total",
                         {{"model", "m"}, {"match_percent_bucket", "76-100"}}),
            1);
  EXPECT_EQ(CounterValue(fams, "aibrix_prefix_cache_routing_selection_total",
                         {{"selection", "prefix_match"}, {"using_kv_sync", "false"}}),
            1);
  EXPECT_EQ(CounterValue(fams, "aibrix_prefix_cache_routing_selection_total",
                         {{"selection", "least_request_fallback"}, {"using_kv_sync", "false"}}),
            1);
  EXPECT_EQ(CounterValue(fams, "aibrix_routing_decisions_total",
                         {{"algorithm", "prefix-cache"}, {"model", "m"}}),
            2);
  EXPECT_EQ(CounterValue(fams, "aibrix_routing_errors_total", {{"reason", "unknown_algorithm"}}),
            1);
}

TEST_F(RouterTest, PrefixCacheRoutingErrorsCountRealErrors) {
  AddPods(2);
  prometheus::Registry reg;
  RouterOptions o;
  o.exact_index_fed = false;  // no KV event sync
  auto router = MakeRouter(o, &reg);
  const auto t = Prompt(4 * kBs);
  const auto errors = [&](const std::string& reason, const std::string& kv_sync) {
    return CounterValue(reg.Collect(), "aibrix_prefix_cache_routing_errors_total",
                        {{"model", "m"}, {"reason", reason}, {"using_kv_sync", kv_sync}});
  };
  // A successful decision counts no error.
  ASSERT_TRUE(router->Route("prefix-cache", Req(t)).ok());
  EXPECT_EQ(errors("no_target_pod", "false"), 0);
  // Every ready pod excluded: no target.
  RouteRequest all_excluded = Req(t);
  all_excluded.exclude_pods = {"ns/p0", "ns/p1"};
  EXPECT_FALSE(router->Route("prefix-cache", all_excluded).ok());
  EXPECT_EQ(errors("no_target_pod", "false"), 1);
  // prefix-cache-kv without a fed exact index still routes (least-request) and says why.
  ASSERT_TRUE(router->Route("prefix-cache-kv", Req(t)).ok());
  ASSERT_TRUE(router->Route("prefix-cache-kv", Req(t)).ok());
  EXPECT_EQ(errors("sync_indexer_unavailable", "true"), 2);
  // The indexer status says the sync indexer is not there.
  bool found = false;
  for (const auto& f : reg.Collect()) {
    if (f.name != "aibrix_prefix_cache_indexer_status") continue;
    for (const auto& m : f.metric) {
      for (const auto& l : m.label) {
        if (l.name == "indexer_type" && l.value == "sync") {
          EXPECT_EQ(m.gauge.value, 0);
          found = true;
        }
      }
    }
  }
  EXPECT_TRUE(found);
  // Tokenization failures reported by the caller: counted for prefix algorithms of known
  // models only (no series for arbitrary model names).
  router->CountTokenizeFailure("prefix-cache", "m");
  router->CountTokenizeFailure("least-request", "m");
  router->CountTokenizeFailure("prefix-cache", "no-such-model");
  EXPECT_EQ(errors("tokenize_failed", "false"), 1);
  EXPECT_EQ(CounterValue(reg.Collect(), "aibrix_prefix_cache_routing_errors_total",
                         {{"model", "no-such-model"}}),
            -1);
}

TEST_F(RouterTest, ConcurrentRoutingWithRequestAccounting) {
  AddPods(8);
  prometheus::Registry reg;
  auto router = MakeRouter({}, &reg);
  std::vector<std::thread> threads;
  for (int th = 0; th < 4; ++th) {
    threads.emplace_back([&, th] {
      const std::vector<std::string> names = router->Names();
      for (int i = 0; i < 300; ++i) {
        const auto t = Prompt(8 * kBs, static_cast<uint32_t>(1 + (i % 5) * 1000));
        RouteRequest req = Req(t);
        req.request_id = fmt::format("t{}-{}", th, i);
        req.user = fmt::format("u{}", i % 3);
        auto d = router->Route(names[(i + th) % names.size()], req);
        ASSERT_TRUE(d.ok()) << d.status();
        ASSERT_TRUE(store_.AddRequest(req.request_id, d->pod, store_.ReadyPods(kModel)).ok());
        if (i % 2 == 0) {
          ASSERT_TRUE(store_.DoneRequest(req.request_id).ok());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(store_.InFlightRequests(), 4u * 150u);
}

}  // namespace
}  // namespace aibrix::routing
