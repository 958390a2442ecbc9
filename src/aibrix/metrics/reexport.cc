#include "aibrix/metrics/reexport.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

namespace aibrix::metrics {
namespace {

using Labels = std::vector<prometheus::ClientMetric::Label>;

// Spec §4.1: metrics that only make sense on one side of a prefill/decode split.
bool PrefillOnly(std::string_view name) {
  return name == "time_to_first_token_seconds" || name == "request_prefill_time_seconds" ||
         name == "request_prompt_tokens";
}
bool DecodeOnly(std::string_view name) {
  return name == "time_per_output_token_seconds" || name == "inter_token_latency_seconds" ||
         name == "request_time_per_output_token_seconds" || name == "request_decode_time_seconds" ||
         name == "iteration_tokens_total" || name == "request_generation_tokens" ||
         name == "request_max_num_generation_tokens";
}
bool RoleSkipped(std::string_view pod_name, std::string_view metric) {
  if (pod_name.find("prefill") != std::string_view::npos && DecodeOnly(metric)) return true;
  if (pod_name.find("decode") != std::string_view::npos && PrefillOnly(metric)) return true;
  return false;
}

std::string EnvOf(const store::PodObject& pod, std::string_view name) {
  for (const store::Container& container : pod.containers) {
    for (const auto& [key, value] : container.env) {
      if (key == name) return value;
    }
  }
  return "";
}

std::string LabelOrEnv(const store::PodObject& pod, const std::string& label,
                       std::string_view env) {
  std::string value = store::LabelOr(pod, label, "");
  return value.empty() ? EnvOf(pod, env) : value;
}

uint64_t Count(double value) {
  if (!(value > 0)) return 0;
  if (value >= static_cast<double>(std::numeric_limits<uint64_t>::max())) {
    return std::numeric_limits<uint64_t>::max();
  }
  return static_cast<uint64_t>(value);
}

class Families {
 public:
  prometheus::MetricFamily& Get(const std::string& name, prometheus::MetricType type,
                                std::string_view help) {
    auto [it, added] = families_.try_emplace(name);
    if (added) {
      it->second.name = name;
      it->second.help = std::string(help);
      it->second.type = type;
    }
    return it->second;
  }
  void Add(const std::string& name, prometheus::MetricType type, std::string_view help,
           Labels labels, double value) {
    prometheus::ClientMetric metric;
    metric.label = std::move(labels);
    if (type == prometheus::MetricType::Counter) {
      metric.counter.value = value;
    } else {
      metric.gauge.value = value;
    }
    Get(name, type, help).metric.push_back(std::move(metric));
  }
  std::vector<prometheus::MetricFamily> Take() {
    std::vector<prometheus::MetricFamily> out;
    out.reserve(families_.size());
    for (auto& [name, family] : families_) out.push_back(std::move(family));
    return out;
  }

 private:
  std::map<std::string, prometheus::MetricFamily> families_;  // sorted output
};

}  // namespace

EngineMetricsExporter::EngineMetricsExporter(const store::Store& store,
                                             const EngineMetricRegistry& registry,
                                             ExporterOptions options)
    : store_(store), registry_(registry), options_(std::move(options)) {}

std::vector<prometheus::MetricFamily> EngineMetricsExporter::Collect() const {
  const store::SnapshotRef snap = store_.snapshot();
  const auto now = options_.clock->Now();
  Families families;
  families.Get("model_replicas", prometheus::MetricType::Gauge,
               "1 per ready pod serving a model (the pod-group leader only)");
  double stale = 0;
  std::vector<const store::Pod*> pods;
  pods.reserve(snap->pods.size());
  snap->pods.ForEach([&](const store::PodRef& pod) { pods.push_back(pod.get()); });
  std::sort(pods.begin(), pods.end(),
            [](const store::Pod* a, const store::Pod* b) { return a->key < b->key; });
  for (const store::Pod* pod : pods) {
    const store::PodObject& object = pod->object;
    // Labels in sorted order; `model` (index 2) is set per value.
    const Labels base = {
        {"engine_type", store::PodEngine(object)},
        {"gateway_pod", options_.gateway_pod},
        {"model", ""},
        {"namespace", pod->ns()},
        {"pod", pod->name()},
        {"role", LabelOrEnv(object, store::kRoleNameLabel, "ROLE_NAME")},
        {"role_replica_index", EnvOf(object, "ROLE_REPLICA_INDEX")},
        {"roleset", LabelOrEnv(object, store::kRoleSetNameLabel, "ROLESET_NAME")},
    };
    const std::string group_index = store::LabelOr(object, store::kPodGroupIndexLabel, "0");
    if (pod->ready && !pod->model.empty() && group_index == "0") {
      Labels labels = base;
      labels[2].value = pod->model;
      labels.push_back({"model_name", pod->model});
      families.Add("model_replicas", prometheus::MetricType::Gauge, "", std::move(labels), 1);
    }
    pod->state->VisitMetrics(
        [&](const std::string& model, const std::string& name, const store::MetricValue& value) {
          if (!value.FreshAt(now, options_.max_age)) {
            ++stale;
            return;
          }
          const EngineMetricDef* def = registry_.Find(name);
          if (def == nullptr || def->type == EngineMetricType::kLabelQuery) return;
          if (RoleSkipped(pod->name(), name)) return;
          Labels labels = base;
          labels[2].value = model;
          if (!model.empty()) labels.push_back({"model_name", model});
          switch (def->type) {
            case EngineMetricType::kGauge:
              families.Add(name, prometheus::MetricType::Gauge, def->help, std::move(labels),
                           value.Simple());
              break;
            case EngineMetricType::kCounter:
              families.Add(name, prometheus::MetricType::Counter, def->help, std::move(labels),
                           value.Simple());
              break;
            case EngineMetricType::kHistogram: {
              const store::HistogramMetric* h = value.histogram();
              if (h == nullptr) return;
              for (const auto& [suffix, p] :
                   {std::pair{"_p50", 50.0}, {"_p90", 90.0}, {"_p99", 99.0}}) {
                families.Add(name + suffix, prometheus::MetricType::Gauge, def->help, labels,
                             h->Percentile(p));
              }
              prometheus::ClientMetric metric;
              metric.label = std::move(labels);
              metric.histogram.sample_count = Count(h->count);
              metric.histogram.sample_sum = h->sum;
              for (const auto& [bound, cumulative] : h->buckets) {
                metric.histogram.bucket.push_back({Count(cumulative), bound});
              }
              families.Get(name, prometheus::MetricType::Histogram, def->help)
                  .metric.push_back(std::move(metric));
              break;
            }
            case EngineMetricType::kLabelQuery:
              break;
          }
        });
  }
  families.Add("aibrix_cache_stale_metrics", prometheus::MetricType::Gauge,
               "Stored engine metric values older than --metric-max-age (not used by routers)", {},
               stale);
  return families.Take();
}

}  // namespace aibrix::metrics
