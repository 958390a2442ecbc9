// Reading the scraped engine metrics of one pod for one routing decision, with freshness: a
// value counts only if it was scraped within RouterOptions::metric_max_age of the decision's
// time. And the one way every algorithm reports a decision it could not base on scraped
// metrics (a counter and a rate-limited log line).
//
// Thread safety: PodMetrics is a per-decision value used by one thread. MetricFallback may be
// used from any thread (prometheus-cpp counters and common::RateLimiter are thread-safe).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "aibrix/common/logging.h"
#include "aibrix/routing/algorithm.h"
#include "aibrix/routing/metrics.h"
#include "aibrix/store/pod.h"

namespace aibrix::routing {

// Metric names the algorithms read (spec §4.6 internal names; the scraper stores them).
inline constexpr char kMetricKvCacheUsage[] = "kv_cache_usage_perc";
inline constexpr char kMetricCpuCacheUsage[] = "cpu_cache_usage_perc";
inline constexpr char kMetricGpuCacheUsage[] = "gpu_cache_usage_perc";
inline constexpr char kMetricEngineUtilization[] = "engine_utilization";
inline constexpr char kMetricRunning[] = "num_requests_running";
inline constexpr char kMetricWaiting[] = "num_requests_waiting";
inline constexpr char kMetricQueueTime[] = "request_queue_time_seconds";
inline constexpr char kMetricPrefillTime[] = "request_prefill_time_seconds";
inline constexpr char kMetricDecodeTime[] = "request_decode_time_seconds";
inline constexpr char kMetricPromptTokens[] = "request_prompt_tokens";
inline constexpr char kMetricGenerationTokens[] = "request_generation_tokens";

// When a decision happens and how old a scraped value may be.
struct Freshness {
  std::chrono::steady_clock::time_point now;
  std::chrono::steady_clock::duration max_age;
};

// The scraped metrics of one pod as seen by one decision. A metric is looked up in model
// scope under the request's model, then under the pod's base model, then in pod scope; the
// first value found is the pod's, and it is used only when fresh.
class PodMetrics {
 public:
  // `pod` and `request_model` must outlive this object.
  PodMetrics(const store::Pod& pod, const std::string& request_model, Freshness freshness)
      : pod_(&pod), model_(&request_model), freshness_(freshness) {}

  // The fresh value of `name` as a number (a histogram's mean); nullopt when the pod has none
  // or it is stale (then saw_stale() turns true).
  std::optional<double> Value(std::string_view name);
  // The fresh histogram's mean when it has observed at least one value; nullopt otherwise
  // (missing, stale, not a histogram, or empty).
  std::optional<double> NonEmptyMean(std::string_view name);

  // Whether any lookup found a value that was too old.
  bool saw_stale() const { return saw_stale_; }
  const store::Pod& pod() const { return *pod_; }

 private:
  std::optional<store::MetricSample> Fresh(std::string_view name);

  const store::Pod* pod_;
  const std::string* model_;
  Freshness freshness_;
  bool saw_stale_ = false;
};

// Counts aibrix_routing_metric_fallback_total{algorithm, reason} and logs, at most a few
// lines per second per algorithm, which metrics were missing and what was done instead.
class MetricFallback {
 public:
  // `inputs` names the metrics the algorithm needs; `instead` says what it does without them
  // (both for the log line).
  MetricFallback(const AlgorithmEnv& env, std::string_view algorithm, std::string inputs,
                 std::string instead);
  void Report(std::string_view model, FallbackReason reason) const;

 private:
  const AlgorithmEnv& env_;
  const std::string algorithm_;
  const std::string inputs_;
  const std::string instead_;
  mutable common::RateLimiter limiter_;
};

}  // namespace aibrix::routing
