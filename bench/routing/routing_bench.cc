// routing-bench: the cost of one routing decision with 64 ready pods and an 8k-token prompt,
// per algorithm (Google Benchmark), then `figure route_decision_us <p50>` lines for the
// prefix-aware algorithms (see docs/routing.md). Indexes are pre-filled: every pod holds a
// different 4k-token prefix in the exact index and the approximate index, and the prompt
// shares 4k tokens with one of them. Then the long-context case: a 128k-token prompt, every
// pod holding its own 64k-token prefix in both indexes and the prompt sharing 64k tokens
// with one pod, printed as `figure route_decision_128k_us <p50> us <algorithm>`. Runs in well
// under a minute.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <vector>

#include "aibrix/prefix/approx_index.h"
#include "aibrix/prefix/exact_index.h"
#include "aibrix/prefix/match.h"
#include "aibrix/routing/algorithm.h"
#include "aibrix/store/store.h"
#include "benchmark/benchmark.h"
#include "fmt/format.h"

namespace aibrix::routing {
namespace {

constexpr int kPods = 64;
constexpr int kBlockSize = 16;
constexpr char kModel[] = "llama";

std::vector<uint32_t> Tokens(uint32_t seed, int n) {
  std::vector<uint32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = seed * 100'003u + static_cast<uint32_t>(i);
  return t;
}

struct World {
  // Every pod holds its own `shared_tokens` prefix; the prompt is `prompt_tokens` long and
  // starts with pod-16's prefix.
  World(int prompt_tokens, int shared_tokens)
      : exact(ExactOpts()),
        approx(ApproxOpts()),
        matcher(*prefix::PrefixMatcher::Create(&exact, &approx)),
        router(store, RouterDeps{&matcher, &approx}, RouterOptions{.seed = 1}) {
    for (int i = 0; i < kPods; ++i) {
      store::PodObject p;
      p.ns = "bench";
      p.name = fmt::format("pod-{:02}", i);
      p.uid = p.name;
      p.labels[store::kModelNameLabel] = kModel;
      p.ip = fmt::format("10.0.{}.{}", i / 200, i % 200 + 1);
      p.phase = "Running";
      p.ready_condition = true;
      (void)store.AddPod(p);
      const std::string key = p.ns + "/" + p.name;
      const std::vector<uint32_t> prefix = Tokens(i + 1, shared_tokens);
      kv::BlockStored s;
      for (int b = 0; b < shared_tokens / kBlockSize; ++b) {
        s.block_hashes.push_back(uint64_t{1'000'000} * i + b);
      }
      s.token_ids = prefix;
      s.block_size = kBlockSize;
      kv::EventBatch batch;
      batch.events.push_back(s);
      exact.ApplyBatch(kv::PodSource{key, kModel, -1}, batch);
      approx.Record(prefix::HashContext{kModel, "", 0}, prefix, key);
      for (int r = 0; r < i % 4; ++r) {
        (void)store.AddRequest(fmt::format("{}-{}", key, r), key, kModel);
      }
    }
    prompt = Tokens(17, shared_tokens);  // pod-16's prefix
    const std::vector<uint32_t> tail = Tokens(999, prompt_tokens - shared_tokens);
    prompt.insert(prompt.end(), tail.begin(), tail.end());
  }
  static prefix::ExactIndexOptions ExactOpts() {
    prefix::ExactIndexOptions o;
    o.block_size = kBlockSize;
    return o;
  }
  static prefix::ApproxIndexOptions ApproxOpts() {
    prefix::ApproxIndexOptions o;
    o.block_size = kBlockSize;
    return o;
  }
  RouteRequest Request() const {
    RouteRequest r;
    r.model = kModel;
    r.tokens = prompt;
    return r;
  }

  store::Store store;
  prefix::ExactIndex exact;
  prefix::ApproxIndex approx;
  prefix::PrefixMatcher matcher;
  Router router;
  std::vector<uint32_t> prompt;
};

World& TheWorld() {
  static World* w = new World(8192, 4096);
  return *w;
}

World& LongWorld() {
  static World* w = new World(131072, 65536);
  return *w;
}

void BM_Route(benchmark::State& state, const char* algorithm) {
  World& w = TheWorld();
  const RouteRequest req = w.Request();
  for (auto _ : state) {
    auto d = w.router.Route(algorithm, req);
    if (!d.ok()) state.SkipWithError("route failed");
    benchmark::DoNotOptimize(d);
  }
}

BENCHMARK_CAPTURE(BM_Route, random, "random");
BENCHMARK_CAPTURE(BM_Route, least_request, "least-request");
BENCHMARK_CAPTURE(BM_Route, least_kv_cache, "least-kv-cache");
BENCHMARK_CAPTURE(BM_Route, prefix_cache, "prefix-cache");
BENCHMARK_CAPTURE(BM_Route, prefix_cache_kv, "prefix-cache-kv");
BENCHMARK_CAPTURE(BM_Route, kv_aware, "kv-aware");

// p50 / p99 of single decisions, in microseconds, after a few untimed ones (the first
// decision of a prompt records its new blocks: the steady state is timed).
std::pair<double, double> Percentiles(World& w, const char* algorithm, int n) {
  const RouteRequest req = w.Request();
  for (int i = 0; i < 3; ++i) benchmark::DoNotOptimize(w.router.Route(algorithm, req));
  std::vector<double> us;
  us.reserve(n);
  for (int i = 0; i < n; ++i) {
    const auto start = std::chrono::steady_clock::now();
    auto d = w.router.Route(algorithm, req);
    benchmark::DoNotOptimize(d);
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
                     .count());
  }
  std::sort(us.begin(), us.end());
  return {us[n / 2], us[n * 99 / 100]};
}

}  // namespace
}  // namespace aibrix::routing

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  using aibrix::routing::Percentiles;
  aibrix::routing::World& w = aibrix::routing::TheWorld();
  const auto [pc50, pc99] = Percentiles(w, "prefix-cache", 5000);
  const auto [kv50, kv99] = Percentiles(w, "prefix-cache-kv", 5000);
  const auto [ka50, ka99] = Percentiles(w, "kv-aware", 5000);
  std::printf("prefix-cache p99 %.1f us, prefix-cache-kv p99 %.1f us, kv-aware p99 %.1f us\n", pc99,
              kv99, ka99);
  std::printf("figure route_decision_us %.1f us\n", std::max({pc50, kv50, ka50}));
  std::printf("figure route_decision_prefix_cache_us %.1f us\n", pc50);
  std::printf("figure route_decision_prefix_cache_kv_us %.1f us\n", kv50);
  std::printf("figure route_decision_kv_aware_us %.1f us\n", ka50);
  // Long context: 128k-token prompt (8,192 blocks), both indexes holding 64 x 4,096 blocks.
  aibrix::routing::World& lw = aibrix::routing::LongWorld();
  for (const char* algorithm : {"prefix-cache", "prefix-cache-kv", "kv-aware"}) {
    const auto [p50, p99] = Percentiles(lw, algorithm, 300);
    std::printf("%s 128k p99 %.1f us\n", algorithm, p99);
    std::printf("figure route_decision_128k_us %.1f us %s\n", p50, algorithm);
  }
  // A new conversation: the same 64k prefix, then 64k tokens no pod holds (4,096 blocks the
  // routing-fed algorithms record as new).
  for (const char* algorithm : {"prefix-cache", "kv-aware"}) {
    std::vector<double> us;
    for (uint32_t i = 0; i < 40; ++i) {
      std::vector<uint32_t> prompt(lw.prompt.begin(), lw.prompt.begin() + 65536);
      const std::vector<uint32_t> tail = aibrix::routing::Tokens(5000 + i, 65536);
      prompt.insert(prompt.end(), tail.begin(), tail.end());
      aibrix::routing::RouteRequest req = lw.Request();
      req.tokens = prompt;
      const auto start = std::chrono::steady_clock::now();
      benchmark::DoNotOptimize(lw.router.Route(algorithm, req));
      us.push_back(
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
              .count());
    }
    std::sort(us.begin(), us.end());
    std::printf("%s 128k with 64k new tokens: p50 %.1f us, max %.1f us\n", algorithm,
                us[us.size() / 2], us.back());
  }
  return 0;
}
