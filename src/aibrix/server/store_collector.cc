#include "aibrix/server/store_collector.h"

#include <string>

#include "prometheus/metric_family.h"

namespace aibrix::server {
namespace {

prometheus::MetricFamily Family(std::string name, std::string help, prometheus::MetricType type) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  return family;
}

void AddGauge(prometheus::MetricFamily& family, double value,
              std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric metric;
  metric.label = std::move(labels);
  if (family.type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
}

}  // namespace

std::vector<prometheus::MetricFamily> StoreCollector::Collect() const {
  store::SnapshotRef snap = store_.snapshot();
  auto pods =
      Family("aibrix_cache_pods", "Cached pods by readiness", prometheus::MetricType::Gauge);
  auto models =
      Family("aibrix_cache_models", "Models with at least one pod", prometheus::MetricType::Gauge);
  auto inflight =
      Family("aibrix_cache_inflight_requests", "Requests routed by this process and not yet done",
             prometheus::MetricType::Gauge);
  auto running = Family("aibrix_cache_pod_running_requests",
                        "In-flight requests per pod (this process)", prometheus::MetricType::Gauge);
  auto completed =
      Family("aibrix_cache_pod_completed_requests_total",
             "Completed requests per pod (this process)", prometheus::MetricType::Counter);
  auto pending =
      Family("aibrix_cache_model_pending_requests", "Admitted and not yet done requests per model",
             prometheus::MetricType::Gauge);
  size_t ready = 0;
  snap->pods.ForEach([&](const store::PodRef& pod) {
    if (pod->ready) ++ready;
    AddGauge(running, pod->state->running(), {{"pod", pod->key}, {"model", pod->model}});
    AddGauge(completed, static_cast<double>(pod->state->completed()), {{"pod", pod->key}});
  });
  AddGauge(pods, static_cast<double>(ready), {{"state", "ready"}});
  AddGauge(pods, static_cast<double>(snap->pods.size() - ready), {{"state", "unready"}});
  AddGauge(models, static_cast<double>(snap->models.size()));
  AddGauge(inflight, static_cast<double>(store_.InFlightRequests()));
  snap->models.ForEach([&](const store::ModelPodsRef& model) {
    AddGauge(pending, model->state->pending(), {{"model", model->model}});
  });
  return {pods, models, inflight, running, completed, pending};
}

}  // namespace aibrix::server
