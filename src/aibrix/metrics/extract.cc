#include "aibrix/metrics/extract.h"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace aibrix::metrics {
namespace {

bool TypeFits(EngineMetricType want, MetricType got) {
  if (want == EngineMetricType::kHistogram) return got == MetricType::kHistogram;
  return got == MetricType::kCounter || got == MetricType::kGauge || got == MetricType::kUntyped;
}

// A label-query value as a number: the label itself when numeric (max_lora="4"), else the
// number of comma-separated names it lists (running_lora_adapters="a,b").
double LabelNumber(std::string_view label) {
  double number = 0;
  const auto [end, ec] = std::from_chars(label.data(), label.data() + label.size(), number);
  if (ec == std::errc() && end == label.data() + label.size()) return number;
  double items = 0;
  size_t start = 0;
  while (start <= label.size()) {
    size_t comma = label.find(',', start);
    if (comma == std::string_view::npos) comma = label.size();
    if (comma > start) ++items;
    start = comma + 1;
  }
  return items;
}

// Adds `count` to the bucket of `bound` in `buckets` (sorted by bound), inserting it where it
// belongs. A body lists a series' buckets in order, so this is an append or one comparison.
void AddBucket(std::vector<std::pair<double, double>>& buckets, double bound, double count) {
  if (buckets.empty() || buckets.back().first < bound) {
    buckets.emplace_back(bound, count);
    return;
  }
  auto it =
      std::lower_bound(buckets.begin(), buckets.end(), bound,
                       [](const std::pair<double, double>& b, double v) { return b.first < v; });
  if (it != buckets.end() && it->first == bound) {
    it->second += count;
  } else {
    buckets.insert(it, {bound, count});
  }
}

}  // namespace

Extractor::Extractor(const std::vector<Binding>& bindings, std::string_view pod_model)
    : bindings_(bindings), pod_model_(pod_model) {}

void Extractor::Add(const ParsedBody& body) {
  for (uint32_t i = 0; i < bindings_.size(); ++i) {
    const Binding& binding = bindings_[i];
    const EngineMetricDef& def = *binding.def;
    const Family* family = nullptr;
    for (std::string_view name : binding.names) {
      if (name.empty()) continue;
      family = body.Find(name);
      if (family != nullptr) break;
    }
    if (family == nullptr) continue;
    if (!TypeFits(def.type, family->type)) {
      ++type_mismatches_;
      continue;
    }
    for (const Series& series : family->series) {
      if (!def.only_label.empty()) {
        const auto only = body.LabelValue(series, def.only_label);
        if (only && *only != def.only_value) continue;
      }
      std::string_view model;
      if (def.scope == MetricScope::kPodModel) {
        const auto named = body.LabelValue(series, kModelNameLabel);
        model = named && !named->empty() && *named != "undefined" ? *named : pod_model_;
        if (model.empty()) continue;
      }
      if (def.type != EngineMetricType::kHistogram && std::isnan(series.value)) continue;
      Accum& accum = accums_[{model, i}];
      switch (def.type) {
        case EngineMetricType::kGauge:
          accum.value = series.value;
          break;
        case EngineMetricType::kCounter:
          accum.value += series.value;
          break;
        case EngineMetricType::kHistogram:
          if (!std::isnan(series.sum)) accum.sum += series.sum;
          if (!std::isnan(series.count)) accum.count += series.count;
          if (accum.buckets.empty()) accum.buckets.reserve(series.buckets.size());
          for (const Bucket& bucket : series.buckets) {
            if (!std::isnan(bucket.count))
              AddBucket(accum.buckets, bucket.upper_bound, bucket.count);
          }
          break;
        case EngineMetricType::kLabelQuery:
          if (const auto label = body.LabelValue(series, def.label_key);
              label && series.value >= accum.label_rank) {
            accum.label = *label;
            accum.label_rank = series.value;
          }
          break;
      }
    }
  }
}

Extracted Extractor::Finish(std::chrono::steady_clock::time_point scraped_at) {
  Extracted out;
  out.type_mismatches = type_mismatches_;
  for (auto& [key, accum] : accums_) {
    const EngineMetricDef* def = bindings_[key.second].def;
    store::MetricValue value;
    value.scraped_at = scraped_at;
    switch (def->type) {
      case EngineMetricType::kGauge:
      case EngineMetricType::kCounter:
        value.value = store::SimpleMetric{accum.value, {}};
        break;
      case EngineMetricType::kHistogram:
        value.value = store::HistogramMetric{accum.sum, accum.count, std::move(accum.buckets), {}};
        break;
      case EngineMetricType::kLabelQuery:
        if (accum.label_rank == -std::numeric_limits<double>::infinity()) continue;
        value.value =
            store::SimpleMetric{LabelNumber(accum.label), {{"value", std::string(accum.label)}}};
        break;
    }
    if (def->scope == MetricScope::kPod) {
      out.pod.emplace_back(def, std::move(value));
    } else {
      out.model.push_back(ExtractedModelValue{std::string(key.first), def, std::move(value)});
    }
  }
  accums_.clear();
  return out;
}

}  // namespace aibrix::metrics
