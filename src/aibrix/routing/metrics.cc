#include "aibrix/routing/metrics.h"

#include <mutex>
#include <vector>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace aibrix::routing {

namespace {

// 10 µs × 2^k, 15 buckets (the reference's routing latency buckets).
prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  prometheus::Histogram::BucketBoundaries b;
  double v = 10e-6;
  for (int i = 0; i < 15; ++i, v *= 2) b.push_back(v);
  return b;
}

constexpr std::array<const char*, 5> kPercentBuckets = {"0", "1-25", "26-50", "51-75", "76-100"};
constexpr std::array<const char*, 3> kSelections = {"prefix_match", "prefix_match_skipped",
                                                    "least_request_fallback"};
constexpr std::array<const char*, 5> kErrors = {"tokenize_failed", "load_imbalance_no_target",
                                                "no_target_pod", "sync_indexer_unavailable",
                                                "post_route_update_failed"};

}  // namespace

std::string_view FallbackReasonName(FallbackReason reason) {
  return reason == FallbackReason::kStale ? "stale" : "missing";
}

int PrefixSeries::PercentBucket(int percent) {
  if (percent <= 0) return 0;
  if (percent <= 25) return 1;
  if (percent <= 50) return 2;
  if (percent <= 75) return 3;
  return 4;
}

RoutingMetrics::RoutingMetrics(prometheus::Registry* registry, bool has_exact, bool has_approx)
    : registry_(registry) {
  if (registry_ == nullptr) return;
  decisions_ = &prometheus::BuildCounter()
                    .Name("aibrix_routing_decisions_total")
                    .Help("Routing decisions by algorithm and model")
                    .Register(*registry_);
  latency_ = &prometheus::BuildHistogram()
                  .Name("aibrix_routing_latency_seconds")
                  .Help("Time to take one routing decision")
                  .Register(*registry_);
  errors_ = &prometheus::BuildCounter()
                 .Name("aibrix_routing_errors_total")
                 .Help("Routing requests that got no pod, by algorithm and reason")
                 .Register(*registry_);
  fallback_ = &prometheus::BuildCounter()
                   .Name("aibrix_routing_metric_fallback_total")
                   .Help(
                       "Decisions taken without scraped engine metrics because no ready pod "
                       "had them (missing) or all were older than --metric-max-age (stale)")
                   .Register(*registry_);
  pc_decisions_ = &prometheus::BuildCounter()
                       .Name("aibrix_prefix_cache_routing_decisions_total")
                       .Help("Prefix-cache routing decisions by match percentage")
                       .Register(*registry_);
  pc_status_ = &prometheus::BuildGauge()
                    .Name("aibrix_prefix_cache_indexer_status")
                    .Help("1 when the prefix indexer of this type is available")
                    .Register(*registry_);
  pc_latency_ = &prometheus::BuildHistogram()
                     .Name("aibrix_prefix_cache_routing_latency_seconds")
                     .Help("Prefix-cache routing decision latency")
                     .Register(*registry_);
  pc_selection_ = &prometheus::BuildCounter()
                       .Name("aibrix_prefix_cache_routing_selection_total")
                       .Help("How the prefix-cache router chose its target")
                       .Register(*registry_);
  pc_errors_ = &prometheus::BuildCounter()
                    .Name("aibrix_prefix_cache_routing_errors_total")
                    .Help("Prefix-cache routing errors by reason")
                    .Register(*registry_);
  pc_imbalance_ = &prometheus::BuildCounter()
                       .Name("aibrix_prefix_cache_load_imbalance_total")
                       .Help("Decisions taken under the load-imbalance gate")
                       .Register(*registry_);
  pc_status_->Add({{"model", "_init_"}, {"indexer_type", "sync"}}).Set(has_exact ? 1 : 0);
  pc_status_->Add({{"model", "_init_"}, {"indexer_type", "local"}}).Set(has_approx ? 1 : 0);
}

RoutingMetrics::~RoutingMetrics() = default;

const AlgorithmSeries* RoutingMetrics::ForAlgorithm(std::string_view algorithm,
                                                    std::string_view model) {
  if (registry_ == nullptr) return nullptr;
  {
    std::shared_lock lock(mu_);
    auto a = algorithms_.find(algorithm);
    if (a != algorithms_.end()) {
      auto it = a->second.find(model);
      if (it != a->second.end()) return it->second.get();
    }
  }
  std::unique_lock lock(mu_);
  auto& slot = algorithms_[std::string(algorithm)][std::string(model)];
  if (!slot) {
    slot = std::make_unique<AlgorithmSeries>();
    const std::map<std::string, std::string> labels{{"algorithm", std::string(algorithm)},
                                                    {"model", std::string(model)}};
    slot->decisions = &decisions_->Add(labels);
    slot->latency = &latency_->Add(labels, LatencyBuckets());
  }
  return slot.get();
}

const PrefixSeries* RoutingMetrics::ForPrefix(std::string_view model, bool kv_sync) {
  if (registry_ == nullptr) return nullptr;
  auto& by_model = prefix_[kv_sync ? 1 : 0];
  {
    std::shared_lock lock(mu_);
    auto it = by_model.find(model);
    if (it != by_model.end()) return it->second.get();
  }
  std::unique_lock lock(mu_);
  auto& slot = by_model[std::string(model)];
  if (!slot) {
    slot = std::make_unique<PrefixSeries>();
    const std::string m(model);
    const std::string sync = kv_sync ? "true" : "false";
    for (size_t i = 0; i < kPercentBuckets.size(); ++i) {
      slot->decisions[i] = &pc_decisions_->Add(
          {{"model", m}, {"match_percent_bucket", kPercentBuckets[i]}, {"using_kv_sync", sync}});
    }
    slot->latency = &pc_latency_->Add({{"model", m}, {"using_kv_sync", sync}}, LatencyBuckets());
    for (size_t i = 0; i < kSelections.size(); ++i) {
      slot->selection[i] = &pc_selection_->Add(
          {{"model", m}, {"selection", kSelections[i]}, {"using_kv_sync", sync}});
    }
    for (size_t i = 0; i < kErrors.size(); ++i) {
      slot->errors[i] =
          &pc_errors_->Add({{"model", m}, {"reason", kErrors[i]}, {"using_kv_sync", sync}});
    }
    slot->load_imbalance = &pc_imbalance_->Add({{"model", m}, {"using_kv_sync", sync}});
  }
  return slot.get();
}

void RoutingMetrics::CountError(std::string_view algorithm, std::string_view reason) {
  if (registry_ == nullptr) return;
  errors_->Add({{"algorithm", std::string(algorithm)}, {"reason", std::string(reason)}})
      .Increment();
}

void RoutingMetrics::CountPrefixError(std::string_view model, bool kv_sync, PrefixError reason) {
  if (const PrefixSeries* series = ForPrefix(model, kv_sync)) {
    series->errors[static_cast<size_t>(reason)]->Increment();
  }
}

void RoutingMetrics::CountMetricFallback(std::string_view algorithm, FallbackReason reason) {
  if (registry_ == nullptr) return;
  fallback_
      ->Add({{"algorithm", std::string(algorithm)},
             {"reason", std::string(FallbackReasonName(reason))}})
      .Increment();
}

}  // namespace aibrix::routing
