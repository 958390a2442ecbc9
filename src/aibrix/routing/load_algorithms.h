// The load-based algorithms: random, least-request, and the four that read engine metrics
// from the Store (throughput, least-kv-cache, least-latency, least-gpu-cache). See
// docs/routing.md for each one's inputs, formula and missing-metric behaviour.
//
// Thread safety: immutable after construction; Route() may run concurrently.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "aibrix/routing/algorithm.h"

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

// Lowest metric-derived score wins, ties random. Pods whose score is unknown (nullopt) get a
// NaN score and are skipped; when no pod has a score, least-request decides.
class MetricAlgorithm : public Algorithm {
 public:
  explicit MetricAlgorithm(const AlgorithmEnv& env) : env_(env) {}
  absl::StatusOr<Decision> Route(const RouteRequest& request,
                                 const store::ModelPods& pods) const final;

 protected:
  // The pod's score for a request naming `model`; nullopt when the inputs are missing.
  virtual std::optional<double> Score(const store::Pod& pod, const std::string& model) const = 0;

 private:
  const AlgorithmEnv& env_;
};

// 2 × avg_prompt_throughput_toks_per_s + avg_generation_throughput_toks_per_s (prompt tokens
// weigh double, as in the reference); one missing term counts 0, both missing = unknown.
class ThroughputAlgorithm final : public MetricAlgorithm {
 public:
  using MetricAlgorithm::MetricAlgorithm;
  std::string_view name() const override { return kThroughput; }

 protected:
  std::optional<double> Score(const store::Pod& pod, const std::string& model) const override;
};

// kv_cache_usage_perc + cpu_cache_usage_perc (cpu missing counts 0; kv missing = unknown).
class LeastKvCacheAlgorithm final : public MetricAlgorithm {
 public:
  using MetricAlgorithm::MetricAlgorithm;
  std::string_view name() const override { return kLeastKvCache; }

 protected:
  std::optional<double> Score(const store::Pod& pod, const std::string& model) const override;
};

// gpu_cache_usage_perc, else kv_cache_usage_perc (vLLM v1's name for the same gauge).
class LeastGpuCacheAlgorithm final : public MetricAlgorithm {
 public:
  using MetricAlgorithm::MetricAlgorithm;
  std::string_view name() const override { return kLeastGpuCache; }

 protected:
  std::optional<double> Score(const store::Pod& pod, const std::string& model) const override;
};

// Expected seconds: mean(request_queue_time_seconds) + mean(request_prefill_time_seconds) +
// mean(request_decode_time_seconds); a missing histogram counts 0, all three missing = unknown.
class LeastLatencyAlgorithm final : public MetricAlgorithm {
 public:
  using MetricAlgorithm::MetricAlgorithm;
  std::string_view name() const override { return kLeastLatency; }

 protected:
  std::optional<double> Score(const store::Pod& pod, const std::string& model) const override;
};

// Metric names the algorithms read.
inline constexpr char kMetricPromptThroughput[] = "avg_prompt_throughput_toks_per_s";
inline constexpr char kMetricGenerationThroughput[] = "avg_generation_throughput_toks_per_s";
inline constexpr char kMetricKvCacheUsage[] = "kv_cache_usage_perc";
inline constexpr char kMetricCpuCacheUsage[] = "cpu_cache_usage_perc";
inline constexpr char kMetricGpuCacheUsage[] = "gpu_cache_usage_perc";
inline constexpr char kMetricQueueTime[] = "request_queue_time_seconds";
inline constexpr char kMetricPrefillTime[] = "request_prefill_time_seconds";
inline constexpr char kMetricDecodeTime[] = "request_decode_time_seconds";

}  // namespace aibrix::routing
