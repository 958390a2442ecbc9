#include "aibrix/routing/pod_metrics.h"

#include <utility>

namespace aibrix::routing {

std::optional<store::MetricSample> PodMetrics::Fresh(std::string_view name) {
  const std::string_view models[] = {*model_, pod_->model};
  const size_t n = pod_->model.empty() || pod_->model == *model_ ? 1 : 2;
  std::optional<store::MetricSample> s =
      pod_->state->Sample(std::span<const std::string_view>(models, n), name);
  if (!s) return std::nullopt;
  if (!store::ScrapedWithin(s->scraped_at, freshness_.now, freshness_.max_age)) {
    saw_stale_ = true;
    return std::nullopt;
  }
  return s;
}

std::optional<double> PodMetrics::Value(std::string_view name) {
  std::optional<store::MetricSample> s = Fresh(name);
  if (!s) return std::nullopt;
  return s->value;
}

std::optional<double> PodMetrics::NonEmptyMean(std::string_view name) {
  std::optional<store::MetricSample> s = Fresh(name);
  if (!s || !s->histogram || !(s->count > 0)) return std::nullopt;
  return s->value;
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
