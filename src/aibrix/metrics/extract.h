// Extraction of an engine's registered metrics from parsed /metrics bodies (spec §4.2):
// pod-scope values, and model-scope values keyed by the series' `model_name` label (model
// names are taken whole: they may contain '/').
//
// Merging: the series of one metric that land on the same key (a pod-scope metric's
// several series, one model's series differing in other labels such as `engine` or
// `finished_reason`, and the same series on several data-parallel ports, which are added
// as further bodies) are merged: counters summed, histograms summed (sum, count, each
// bucket), gauges last-wins. A label-query metric (vLLM's lora_requests_info, a gauge whose
// value is the time it was set) takes the label of the newest series (largest value).
// Series whose model_name is missing, empty or "undefined" count for the pod's model (spec
// §4.3); without a pod model they are skipped. NaN values are skipped.
//
// Thread safety: an Extractor is used by one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "aibrix/metrics/exposition.h"
#include "aibrix/metrics/registry.h"
#include "aibrix/store/metric_value.h"

namespace aibrix::metrics {

// The label that carries the model of an engine series.
inline constexpr std::string_view kModelNameLabel = "model_name";

struct ExtractedModelValue {
  std::string model;
  const EngineMetricDef* def = nullptr;
  store::MetricValue value;
};

struct Extracted {
  std::vector<std::pair<const EngineMetricDef*, store::MetricValue>> pod;
  std::vector<ExtractedModelValue> model;
  // Registered raw names found with the wrong type (e.g. a gauge where a histogram is
  // expected): skipped.
  size_t type_mismatches = 0;
};

class Extractor {
 public:
  // `bindings` (from EngineMetricRegistry::BindingsFor) must outlive the extractor;
  // `pod_model` is the model of series without a usable model_name ("" for none).
  Extractor(const std::vector<Binding>& bindings, std::string_view pod_model);

  // Merges the registered metrics of `body`, which must outlive Finish().
  void Add(const ParsedBody& body);
  // Every value found, stamped `scraped_at`.
  Extracted Finish(std::chrono::steady_clock::time_point scraped_at);

 private:
  struct Accum {
    double value = 0;
    double sum = 0;
    double count = 0;
    std::vector<std::pair<double, double>> buckets;  // sorted by bound (HistogramMetric's)
    std::string_view label;
    double label_rank = -std::numeric_limits<double>::infinity();
  };
  const std::vector<Binding>& bindings_;
  const std::string_view pod_model_;
  size_t type_mismatches_ = 0;
  // (model, binding index) -> merged value; model "" for pod scope.
  absl::flat_hash_map<std::pair<std::string_view, uint32_t>, Accum> accums_;
};

}  // namespace aibrix::metrics
