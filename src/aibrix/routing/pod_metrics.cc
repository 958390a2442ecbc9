#include "aibrix/routing/pod_metrics.h"

#include <utility>

namespace aibrix::routing {

std::optional<store::MetricValue> PodMetrics::Get(const std::string& name) {
  std::optional<store::MetricValue> v = pod_->state->ModelMetric(*model_, name);
  if (!v && !pod_->model.empty() && pod_->model != *model_) {
    v = pod_->state->ModelMetric(pod_->model, name);
  }
  if (!v) v = pod_->state->Metric(name);
  if (!v) return std::nullopt;
  if (!v->FreshAt(freshness_.now, freshness_.max_age)) {
    saw_stale_ = true;
    return std::nullopt;
  }
  return v;
}

std::optional<double> PodMetrics::Value(const std::string& name) {
  std::optional<store::MetricValue> v = Get(name);
  if (!v) return std::nullopt;
  if (const store::HistogramMetric* h = v->histogram()) return h->Mean();
  return v->Simple();
}

std::optional<double> PodMetrics::NonEmptyMean(const std::string& name) {
  std::optional<store::MetricValue> v = Get(name);
  if (!v) return std::nullopt;
  const store::HistogramMetric* h = v->histogram();
  if (h == nullptr || !(h->count > 0)) return std::nullopt;
  return h->Mean();
}

MetricFallback::MetricFallback(const AlgorithmEnv& env, std::string_view algorithm,
                               std::string inputs, std::string instead)
    : env_(env),
      algorithm_(algorithm),
      inputs_(std::move(inputs)),
      instead_(std::move(instead)),
      limiter_(5, std::chrono::seconds(1), *env.clock) {}

void MetricFallback::Report(std::string_view model, FallbackReason reason) const {
  if (env_.metrics != nullptr) env_.metrics->CountMetricFallback(algorithm_, reason);
  common::WarnLimited(
      limiter_, "routing", "{}: no ready pod of model {} has {} {}; {}", algorithm_, model,
      reason == FallbackReason::kStale ? "fresh (max age exceeded)" : "scraped", inputs_, instead_);
}

}  // namespace aibrix::routing
