#include "aibrix/server/cache_api.h"

namespace aibrix::server {
namespace {

nlohmann::json MetricToJson(const store::MetricValue& value) {
  if (const store::HistogramMetric* h = value.histogram()) {
    return {{"type", "histogram"},     {"count", h->count},        {"sum", h->sum},
            {"mean", h->Mean()},       {"p50", h->Percentile(50)}, {"p90", h->Percentile(90)},
            {"p99", h->Percentile(99)}};
  }
  return value.Simple();
}

}  // namespace

nlohmann::json PodToJson(const store::Pod& pod) {
  nlohmann::json metrics = nlohmann::json::object();
  for (const std::string& name : pod.state->MetricNames()) {
    if (auto value = pod.state->Metric(name)) metrics[name] = MetricToJson(*value);
  }
  return {
      {"key", pod.key},
      {"namespace", pod.ns()},
      {"name", pod.name()},
      {"ip", pod.ip()},
      {"phase", pod.object.phase},
      {"deployment", pod.object.deployment},
      {"ready", pod.ready},
      {"model", pod.model},
      {"models", pod.models},
      {"engine", store::PodEngine(pod.object)},
      {"port", store::PodServingPort(pod.object)},
      {"metric_port", store::PodMetricPort(pod.object)},
      {"kv_events_enabled", store::PodKvEventsEnabled(pod.object)},
      {"labels", pod.object.labels},
      {"running_requests", pod.state->running()},
      {"remote_running_requests", pod.state->remote_running()},
      {"pending_load", pod.state->pending_load()},
      {"pending_prefill_tokens", pod.state->pending_prefill_tokens()},
      {"completed_requests", pod.state->completed()},
      {"metrics", std::move(metrics)},
  };
}

nlohmann::json ModelToJson(const store::ModelPods& model) {
  nlohmann::json pods = nlohmann::json::array();
  nlohmann::json ready = nlohmann::json::array();
  for (const store::PodRef& pod : model.pods) pods.push_back(pod->key);
  for (const store::PodRef& pod : model.ready) ready.push_back(pod->key);
  return {{"name", model.model},
          {"pods", std::move(pods)},
          {"ready_pods", std::move(ready)},
          {"pending_requests", model.state->pending()}};
}

}  // namespace aibrix::server
