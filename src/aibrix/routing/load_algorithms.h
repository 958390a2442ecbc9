// The load-based algorithms: random, least-request, and those that read scraped engine
// metrics from the Store (throughput, least-kv-cache, least-gpu-cache, least-latency,
// least-utilization, least-busy-time). docs/routing.md gives each one's inputs, formula and
// missing/stale behaviour.
//
// Thread safety: immutable after construction; Route() may run concurrently.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "aibrix/routing/algorithm.h"
#include "aibrix/routing/pod_metrics.h"

namespace aibrix::routing {

// Uniform choice among the ready pods. Score 0.
class RandomAlgorithm final : public Algorithm {
 public:
  explicit RandomAlgorithm(const AlgorithmEnv& env) : env_(env) {}
  std::string_view name() const override { return kRandom; }
  absl::StatusOr<Decision> Route(const RouteRequest& request,
                                 const store::ModelPods& pods) const override;

 private:
  const AlgorithmEnv& env_;
};

// Fewest requests in flight from this process (PodState::running()); ties random.
// Score = running.
class LeastRequestAlgorithm final : public Algorithm {
 public:
  explicit LeastRequestAlgorithm(const AlgorithmEnv& env) : env_(env) {}
  std::string_view name() const override { return kLeastRequest; }
  absl::StatusOr<Decision> Route(const RouteRequest& request,
                                 const store::ModelPods& pods) const override;

 private:
  const AlgorithmEnv& env_;
};

// Lowest metric-derived score wins, ties random. A pod whose inputs are missing or stale gets
// a NaN score and is skipped; when no pod has a score, least-request decides and the fallback
// is reported (MetricFallback).
class MetricAlgorithm : public Algorithm {
 public:
  // `inputs` names the metrics read, for the fallback log line.
  MetricAlgorithm(const AlgorithmEnv& env, std::string_view name, std::string inputs);
  std::string_view name() const final { return name_; }
  absl::StatusOr<Decision> Route(const RouteRequest& request,
                                 const store::ModelPods& pods) const final;

 protected:
  // Sets candidates[i].score from metrics[i] (NaN = unknown). The spans are parallel.
  virtual void Score(const RouteRequest& request, std::span<PodMetrics> metrics,
                     std::span<Candidate> candidates) const = 0;
  // Called once per decision with the chosen candidate (fallbacks included).
  virtual void OnDecision(const RouteRequest& /*request*/, const Candidate& /*chosen*/) const {}

  const AlgorithmEnv& env_;

 private:
  const std::string_view name_;
  const MetricFallback fallback_;
};

// A MetricAlgorithm whose score of a pod depends on that pod's metrics only.
class PerPodMetricAlgorithm : public MetricAlgorithm {
 public:
  using MetricAlgorithm::MetricAlgorithm;

 protected:
  // The pod's score; nullopt when its inputs are missing or stale.
  virtual std::optional<double> ScorePod(PodMetrics& metrics) const = 0;

 private:
  void Score(const RouteRequest& request, std::span<PodMetrics> metrics,
             std::span<Candidate> candidates) const final;
};

// 2 × mean prompt tokens per request + mean generation tokens per request: the reference's
// avg_prompt_toks_per_req / avg_generation_toks_per_req (PromQL there), taken here from the
// means of the engine's request_prompt_tokens / request_generation_tokens histograms. Both
// required.
class ThroughputAlgorithm final : public PerPodMetricAlgorithm {
 public:
  explicit ThroughputAlgorithm(const AlgorithmEnv& env);

 protected:
  std::optional<double> ScorePod(PodMetrics& metrics) const override;
};

// kv_cache_usage_perc + cpu_cache_usage_perc (cpu missing or stale counts 0; kv required).
class LeastKvCacheAlgorithm final : public PerPodMetricAlgorithm {
 public:
  explicit LeastKvCacheAlgorithm(const AlgorithmEnv& env);

 protected:
  std::optional<double> ScorePod(PodMetrics& metrics) const override;
};

// gpu_cache_usage_perc, else kv_cache_usage_perc (vLLM v1's name for the same gauge).
class LeastGpuCacheAlgorithm final : public PerPodMetricAlgorithm {
 public:
  explicit LeastGpuCacheAlgorithm(const AlgorithmEnv& env);

 protected:
  std::optional<double> ScorePod(PodMetrics& metrics) const override;
};

// engine_utilization (required).
class LeastUtilizationAlgorithm final : public PerPodMetricAlgorithm {
 public:
  explicit LeastUtilizationAlgorithm(const AlgorithmEnv& env);

 protected:
  std::optional<double> ScorePod(PodMetrics& metrics) const override;
};

// Expected seconds for this request:
//   mean queue time + prefill s/token × P + decode s/token × G
// s/token = the pod's mean prefill (decode) time / its mean prompt (generation) tokens per
// request; P = the request's prompt tokens (the fleet's mean when unknown), G = the fleet's
// mean generation tokens per request. Queue, prefill and decode histograms required.
class LeastLatencyAlgorithm final : public MetricAlgorithm {
 public:
  explicit LeastLatencyAlgorithm(const AlgorithmEnv& env);

 protected:
  void Score(const RouteRequest& request, std::span<PodMetrics> metrics,
             std::span<Candidate> candidates) const override;
};

// Seconds of work the engine holds: (num_requests_running + num_requests_waiting) × the pod's
// mean service time (mean prefill + mean decode seconds per request; the fleet's mean when the
// pod has finished no request yet; 1 s when no pod has). Both gauges required. This replaces
// the reference's gpu_busy_time_ratio, which no engine exports.
class LeastBusyTimeAlgorithm final : public MetricAlgorithm {
 public:
  explicit LeastBusyTimeAlgorithm(const AlgorithmEnv& env);

 protected:
  void Score(const RouteRequest& request, std::span<PodMetrics> metrics,
             std::span<Candidate> candidates) const override;
};

}  // namespace aibrix::routing
