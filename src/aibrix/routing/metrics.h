// RoutingMetrics: the Prometheus series of the routing module (catalogue in docs/routing.md).
//  - Every algorithm: aibrix_routing_decisions_total{algorithm, model},
//    aibrix_routing_latency_seconds{algorithm, model}, aibrix_routing_errors_total{algorithm,
//    reason}.
//  - Algorithms that read scraped engine metrics: aibrix_routing_metric_fallback_total
//    {algorithm, reason=missing|stale}.
//  - prefix-cache / prefix-cache-kv: the reference's aibrix_prefix_cache_* families (spec §9.3)
//    with using_kv_sync "false" / "true".
// Series are created on first use per (algorithm, model) and cached; a null registry makes
// every method a no-op (tests).
//
// Thread safety: every method may be called concurrently. Series lookups take a shared lock
// (writers only when a model is first seen); prometheus-cpp metrics are thread-safe.
#pragma once

#include <array>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>

namespace prometheus {
class Registry;
class Counter;
class Gauge;
class Histogram;
template <typename T>
class Family;
}  // namespace prometheus

namespace aibrix::routing {

// prefix-cache outcomes (label `selection`).
enum class PrefixSelection { kPrefixMatch = 0, kPrefixMatchSkipped = 1, kLeastRequestFallback = 2 };
// prefix-cache errors (label `reason`).
enum class PrefixError {
  kTokenizeFailed = 0,
  kLoadImbalanceNoTarget = 1,
  kNoTargetPod = 2,
  kSyncIndexerUnavailable = 3,
  kPostRouteUpdateFailed = 4,
};

// Why a decision could not use scraped engine metrics (label `reason`).
enum class FallbackReason { kMissing = 0, kStale = 1 };
std::string_view FallbackReasonName(FallbackReason reason);

// The §9.3 series of one (model, using_kv_sync).
struct PrefixSeries {
  std::array<prometheus::Counter*, 5> decisions{};  // match_percent_bucket 0|1-25|..|76-100
  prometheus::Histogram* latency = nullptr;
  std::array<prometheus::Counter*, 3> selection{};
  std::array<prometheus::Counter*, 5> errors{};
  prometheus::Counter* load_imbalance = nullptr;

  // Index into `decisions` of a match percentage.
  static int PercentBucket(int percent);
};

// The generic series of one (algorithm, model).
struct AlgorithmSeries {
  prometheus::Counter* decisions = nullptr;
  prometheus::Histogram* latency = nullptr;
};

class RoutingMetrics {
 public:
  // `registry` may be null. has_exact / has_approx set aibrix_prefix_cache_indexer_status
  // {model="_init_", indexer_type="sync"|"local"}.
  RoutingMetrics(prometheus::Registry* registry, bool has_exact, bool has_approx);
  ~RoutingMetrics();
  RoutingMetrics(const RoutingMetrics&) = delete;
  RoutingMetrics& operator=(const RoutingMetrics&) = delete;

  // Null when there is no registry. Pointers stay valid for the RoutingMetrics' lifetime.
  const AlgorithmSeries* ForAlgorithm(std::string_view algorithm, std::string_view model);
  const PrefixSeries* ForPrefix(std::string_view model, bool kv_sync);
  // aibrix_routing_errors_total{algorithm, reason}.
  void CountError(std::string_view algorithm, std::string_view reason);
  // aibrix_routing_metric_fallback_total{algorithm, reason}.
  void CountMetricFallback(std::string_view algorithm, FallbackReason reason);
  // aibrix_prefix_cache_routing_errors_total{model, reason, using_kv_sync}. `model` must be a
  // model the Store knows (series are created per model).
  void CountPrefixError(std::string_view model, bool kv_sync, PrefixError reason);

 private:
  prometheus::Registry* const registry_;
  prometheus::Family<prometheus::Counter>* decisions_ = nullptr;
  prometheus::Family<prometheus::Histogram>* latency_ = nullptr;
  prometheus::Family<prometheus::Counter>* errors_ = nullptr;
  prometheus::Family<prometheus::Counter>* fallback_ = nullptr;
  prometheus::Family<prometheus::Counter>* pc_decisions_ = nullptr;
  prometheus::Family<prometheus::Gauge>* pc_status_ = nullptr;
  prometheus::Family<prometheus::Histogram>* pc_latency_ = nullptr;
  prometheus::Family<prometheus::Counter>* pc_selection_ = nullptr;
  prometheus::Family<prometheus::Counter>* pc_errors_ = nullptr;
  prometheus::Family<prometheus::Counter>* pc_imbalance_ = nullptr;

  // std::shared_mutex (not absl::Mutex) so TSan sees it. Guards the two caches.
  std::shared_mutex mu_;
  // algorithm -> model -> series.
  std::map<std::string, std::map<std::string, std::unique_ptr<AlgorithmSeries>, std::less<>>,
           std::less<>>
      algorithms_;
  // kv_sync -> model -> series.
  std::array<std::map<std::string, std::unique_ptr<PrefixSeries>, std::less<>>, 2> prefix_;
};

}  // namespace aibrix::routing
