// The engine metric registry (spec §4.6): each internal metric name the cache knows, its
// type, its scope (per pod, or per pod and model), whether the scraper fetches it, and the
// raw series names each engine (vllm, sglang, trtllm, xllm) exposes it under. Where an
// engine renamed a series, both names are listed, the current one first; the first present
// in a body wins (vLLM's `kv_cache_usage_perc` / `gpu_cache_usage_perc`, the prefix-cache
// counters with and without `gpu_`, `inter_token_latency_seconds` /
// `time_per_output_token_seconds`).
//
// Thread safety: immutable after construction; Default() is built once.
#pragma once

#include <array>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"

namespace aibrix::metrics {

enum class EngineMetricType {
  kGauge,
  kCounter,
  kHistogram,
  kLabelQuery,  // the value is a label of the series (vLLM's lora_requests_info)
};

enum class MetricScope {
  kPod,       // one value per pod
  kPodModel,  // one value per pod and model (series grouped by their `model_name` label)
};

// The series names of one metric on one engine, in order of preference.
struct RawNames {
  std::string_view engine;
  std::array<std::string_view, 2> names{};
};

struct EngineMetricDef {
  std::string_view name;  // internal name, also the re-exported name (spec §9.1)
  EngineMetricType type = EngineMetricType::kGauge;
  MetricScope scope = MetricScope::kPodModel;
  bool fetched = false;  // read by the scraper
  std::vector<RawNames> raw;
  std::string_view label_key;  // kLabelQuery: the label holding the value
  // Only series whose label `only_label` is absent or equals `only_value` count (vLLM's
  // engine_sleep_state has one series per state; the `awake` one is the metric).
  std::string_view only_label;
  std::string_view only_value;
  std::string_view help;
};

// One fetched metric as an engine exposes it.
struct Binding {
  const EngineMetricDef* def = nullptr;
  std::array<std::string_view, 2> names{};
};

// The raw names of `bindings`: the families a scrape parses (ParseOptions::only_families).
// The views point into the registry's definitions.
absl::flat_hash_set<std::string_view> BoundNames(const std::vector<Binding>& bindings);

class EngineMetricRegistry {
 public:
  // The registry of spec §4.6.
  static const EngineMetricRegistry& Default();

  explicit EngineMetricRegistry(std::vector<EngineMetricDef> defs);
  EngineMetricRegistry(const EngineMetricRegistry&) = delete;
  EngineMetricRegistry& operator=(const EngineMetricRegistry&) = delete;

  const std::vector<EngineMetricDef>& defs() const { return defs_; }
  // The definition of internal name `name`, or null.
  const EngineMetricDef* Find(std::string_view name) const;
  // The fetched metrics `engine` exposes (empty for an engine the registry does not know).
  std::vector<Binding> BindingsFor(std::string_view engine) const;
  // Whether `engine` is known.
  bool Knows(std::string_view engine) const;
  // The metrics path of `engine`: /prometheus/metrics for trtllm, else /metrics.
  static std::string_view MetricsPath(std::string_view engine);

 private:
  const std::vector<EngineMetricDef> defs_;
  absl::flat_hash_map<std::string_view, const EngineMetricDef*> index_;  // by internal name
};

}  // namespace aibrix::metrics
