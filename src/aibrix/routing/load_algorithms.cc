#include "aibrix/routing/load_algorithms.h"

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "aibrix/routing/internal.h"
#include "fmt/format.h"

namespace aibrix::routing {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The mean of the values present, or `fallback` when none is.
double MeanOr(std::span<const std::optional<double>> values, double fallback) {
  double sum = 0;
  int n = 0;
  for (const auto& v : values) {
    if (v) {
      sum += *v;
      ++n;
    }
  }
  return n > 0 ? sum / n : fallback;
}

// The fresh, non-empty histogram mean of `name` for every pod, kept only when positive.
std::vector<std::optional<double>> PositiveMeans(std::span<PodMetrics> metrics,
                                                 std::string_view name) {
  std::vector<std::optional<double>> out(metrics.size());
  for (size_t i = 0; i < metrics.size(); ++i) {
    auto mean = metrics[i].NonEmptyMean(name);
    if (mean && *mean > 0) out[i] = mean;
  }
  return out;
}

}  // namespace

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

MetricAlgorithm::MetricAlgorithm(const AlgorithmEnv& env, std::string_view name, std::string inputs)
    : env_(env), name_(name), fallback_(env, name, std::move(inputs), "routing by least-request") {}

absl::StatusOr<Decision> MetricAlgorithm::Route(const RouteRequest& request,
                                                const store::ModelPods& pods) const {
  std::vector<Candidate> c = internal::BaseCandidates(pods);
  const Freshness freshness{env_.clock->Now(), env_.options.metric_max_age};
  std::vector<PodMetrics> metrics;
  metrics.reserve(c.size());
  for (const Candidate& x : c) metrics.emplace_back(*x.pod, request.model, freshness);
  Score(request, metrics, c);
  int chosen = internal::PickLowest(c, *env_.random);
  if (chosen < 0) {
    bool stale = false;
    for (const PodMetrics& m : metrics) stale = stale || m.saw_stale();
    fallback_.Report(request.model, stale ? FallbackReason::kStale : FallbackReason::kMissing);
    chosen = internal::PickLeastRunning(c, *env_.random);
  }
  OnDecision(request, c[chosen]);
  return internal::MakeDecision(name(), std::move(c), chosen);
}

void PerPodMetricAlgorithm::Score(const RouteRequest& /*request*/, std::span<PodMetrics> metrics,
                                  std::span<Candidate> candidates) const {
  for (size_t i = 0; i < candidates.size(); ++i) {
    candidates[i].score = ScorePod(metrics[i]).value_or(kNaN);
  }
}

ThroughputAlgorithm::ThroughputAlgorithm(const AlgorithmEnv& env)
    : PerPodMetricAlgorithm(
          env, kThroughput,
          fmt::format("{} and {}", kMetricPromptTokens, kMetricGenerationTokens)) {}

std::optional<double> ThroughputAlgorithm::ScorePod(PodMetrics& metrics) const {
  const auto prompt = metrics.Value(kMetricPromptTokens);
  const auto generation = metrics.Value(kMetricGenerationTokens);
  if (!prompt || !generation) return std::nullopt;
  return 2 * *prompt + *generation;
}

LeastKvCacheAlgorithm::LeastKvCacheAlgorithm(const AlgorithmEnv& env)
    : PerPodMetricAlgorithm(env, kLeastKvCache, kMetricKvCacheUsage) {}

std::optional<double> LeastKvCacheAlgorithm::ScorePod(PodMetrics& metrics) const {
  const auto kv = metrics.Value(kMetricKvCacheUsage);
  if (!kv) return std::nullopt;
  // vLLM v1 has no CPU swap space and no longer exports the CPU gauge.
  return *kv + metrics.Value(kMetricCpuCacheUsage).value_or(0);
}

LeastGpuCacheAlgorithm::LeastGpuCacheAlgorithm(const AlgorithmEnv& env)
    : PerPodMetricAlgorithm(env, kLeastGpuCache,
                            fmt::format("{} or {}", kMetricGpuCacheUsage, kMetricKvCacheUsage)) {}

std::optional<double> LeastGpuCacheAlgorithm::ScorePod(PodMetrics& metrics) const {
  if (auto gpu = metrics.Value(kMetricGpuCacheUsage)) return gpu;
  return metrics.Value(kMetricKvCacheUsage);
}

LeastUtilizationAlgorithm::LeastUtilizationAlgorithm(const AlgorithmEnv& env)
    : PerPodMetricAlgorithm(env, kLeastUtilization, kMetricEngineUtilization) {}

std::optional<double> LeastUtilizationAlgorithm::ScorePod(PodMetrics& metrics) const {
  return metrics.Value(kMetricEngineUtilization);
}

LeastLatencyAlgorithm::LeastLatencyAlgorithm(const AlgorithmEnv& env)
    : MetricAlgorithm(
          env, kLeastLatency,
          fmt::format("{}, {} and {}", kMetricQueueTime, kMetricPrefillTime, kMetricDecodeTime)) {}

void LeastLatencyAlgorithm::Score(const RouteRequest& request, std::span<PodMetrics> metrics,
                                  std::span<Candidate> candidates) const {
  // Tokens per request: each pod's own means where known, the fleet's mean elsewhere (the
  // reference's guesses, 10 and 100, when no pod knows).
  const auto prompt = PositiveMeans(metrics, kMetricPromptTokens);
  const auto generation = PositiveMeans(metrics, kMetricGenerationTokens);
  const double fleet_prompt = MeanOr(prompt, 10);
  const double fleet_generation = MeanOr(generation, 100);
  const double request_prompt =
      request.tokens.empty() ? fleet_prompt : static_cast<double>(request.tokens.size());
  for (size_t i = 0; i < candidates.size(); ++i) {
    const auto queue = metrics[i].Value(kMetricQueueTime);
    const auto prefill = metrics[i].Value(kMetricPrefillTime);
    const auto decode = metrics[i].Value(kMetricDecodeTime);
    if (!queue || !prefill || !decode) {
      candidates[i].score = kNaN;
      continue;
    }
    const double prefill_per_token = *prefill / prompt[i].value_or(fleet_prompt);
    const double decode_per_token = *decode / generation[i].value_or(fleet_generation);
    candidates[i].score =
        *queue + prefill_per_token * request_prompt + decode_per_token * fleet_generation;
  }
}

LeastBusyTimeAlgorithm::LeastBusyTimeAlgorithm(const AlgorithmEnv& env)
    : MetricAlgorithm(env, kLeastBusyTime,
                      fmt::format("{} and {}", kMetricRunning, kMetricWaiting)) {}

void LeastBusyTimeAlgorithm::Score(const RouteRequest& /*request*/, std::span<PodMetrics> metrics,
                                   std::span<Candidate> candidates) const {
  std::vector<std::optional<double>> service(metrics.size());
  for (size_t i = 0; i < metrics.size(); ++i) {
    const auto prefill = metrics[i].NonEmptyMean(kMetricPrefillTime);
    const auto decode = metrics[i].NonEmptyMean(kMetricDecodeTime);
    if (prefill && decode) service[i] = *prefill + *decode;
  }
  const double fleet_service = MeanOr(service, 1.0);
  for (size_t i = 0; i < candidates.size(); ++i) {
    const auto running = metrics[i].Value(kMetricRunning);
    const auto waiting = metrics[i].Value(kMetricWaiting);
    candidates[i].score =
        running && waiting ? (*running + *waiting) * service[i].value_or(fleet_service) : kNaN;
  }
}

}  // namespace aibrix::routing
