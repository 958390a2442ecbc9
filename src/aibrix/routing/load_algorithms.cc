#include "aibrix/routing/load_algorithms.h"

#include <cmath>
#include <limits>
#include <utility>

#include "aibrix/routing/internal.h"
#include "aibrix/routing/metrics.h"

namespace aibrix::routing {

absl::StatusOr<Decision> RandomAlgorithm::Route(const RouteRequest& /*request*/,
                                                const store::ModelPods& pods) const {
  std::vector<Candidate> c = internal::BaseCandidates(pods);
  const int chosen = static_cast<int>(env_.random->Uniform(c.size()));
  return internal::MakeDecision(name(), std::move(c), chosen);
}

absl::StatusOr<Decision> LeastRequestAlgorithm::Route(const RouteRequest& /*request*/,
                                                      const store::ModelPods& pods) const {
  std::vector<Candidate> c = internal::BaseCandidates(pods);
  for (Candidate& x : c) x.score = x.running;
  const int chosen = internal::PickLeastRunning(c, *env_.random);
  return internal::MakeDecision(name(), std::move(c), chosen);
}

absl::StatusOr<Decision> MetricAlgorithm::Route(const RouteRequest& request,
                                                const store::ModelPods& pods) const {
  std::vector<Candidate> c = internal::BaseCandidates(pods);
  for (Candidate& x : c) {
    x.score = Score(*x.pod, request.model).value_or(std::numeric_limits<double>::quiet_NaN());
  }
  int chosen = internal::PickLowest(c, *env_.random);
  if (chosen < 0) {
    // No pod reports the metric yet (fresh pods, scraper not started): fall back to the
    // least-loaded pod rather than a blind pick.
    if (env_.metrics != nullptr) env_.metrics->CountError(name(), "metrics_missing_fallback");
    chosen = internal::PickLeastRunning(c, *env_.random);
  }
  return internal::MakeDecision(name(), std::move(c), chosen);
}

std::optional<double> ThroughputAlgorithm::Score(const store::Pod& pod,
                                                 const std::string& model) const {
  const auto prompt = internal::ReadMetric(pod, model, kMetricPromptThroughput);
  const auto generation = internal::ReadMetric(pod, model, kMetricGenerationThroughput);
  if (!prompt && !generation) return std::nullopt;
  return 2 * prompt.value_or(0) + generation.value_or(0);
}

std::optional<double> LeastKvCacheAlgorithm::Score(const store::Pod& pod,
                                                   const std::string& model) const {
  const auto kv = internal::ReadMetric(pod, model, kMetricKvCacheUsage);
  if (!kv) return std::nullopt;
  return *kv + internal::ReadMetric(pod, model, kMetricCpuCacheUsage).value_or(0);
}

std::optional<double> LeastGpuCacheAlgorithm::Score(const store::Pod& pod,
                                                    const std::string& model) const {
  if (auto gpu = internal::ReadMetric(pod, model, kMetricGpuCacheUsage)) return gpu;
  return internal::ReadMetric(pod, model, kMetricKvCacheUsage);
}

std::optional<double> LeastLatencyAlgorithm::Score(const store::Pod& pod,
                                                   const std::string& model) const {
  const auto queue = internal::ReadMetric(pod, model, kMetricQueueTime);
  const auto prefill = internal::ReadMetric(pod, model, kMetricPrefillTime);
  const auto decode = internal::ReadMetric(pod, model, kMetricDecodeTime);
  if (!queue && !prefill && !decode) return std::nullopt;
  return queue.value_or(0) + prefill.value_or(0) + decode.value_or(0);
}

}  // namespace aibrix::routing
