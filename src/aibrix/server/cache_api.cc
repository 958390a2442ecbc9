#include "aibrix/server/cache_api.h"

#include "aibrix/common/json_writer.h"
#include "aibrix/prefix/match.h"

namespace aibrix::server {
namespace {

void AppendMetric(std::string* out, const store::MetricValue& value) {
  const store::HistogramMetric* h = value.histogram();
  if (h == nullptr) {
    common::AppendJsonNumber(out, value.Simple());
    return;
  }
  common::JsonObjectWriter o(out);
  o.Number("count", h->count);
  o.Number("mean", h->Mean());
  o.Number("p50", h->Percentile(50));
  o.Number("p90", h->Percentile(90));
  o.Number("p99", h->Percentile(99));
  o.Number("sum", h->sum);
  o.String("type", "histogram");
}

}  // namespace

void AppendPodJson(std::string* out, const store::Pod& pod, const PodIndexView& index) {
  const store::PodState& state = *pod.state;
  common::JsonObjectWriter o(out);
  o.Int("completed_requests", state.completed());
  o.String("deployment", pod.object.deployment);
  o.String("engine", store::PodEngine(pod.object));
  o.String("ip", pod.ip());
  o.String("key", pod.key);
  o.Bool("kv_events_enabled", store::PodKvEventsEnabled(pod.object));
  o.Bool("kv_events_subscribed", index.kv_events_subscribed);
  {
    common::JsonObjectWriter labels(o.Key("labels"));
    for (const auto& [name, value] : pod.object.labels) labels.String(name, value);  // in order
  }
  o.Int("metric_port", store::PodMetricPort(pod.object));
  {
    common::JsonObjectWriter metrics(o.Key("metrics"));
    for (const std::string& name : state.MetricNames()) {  // sorted
      if (auto value = state.Metric(name)) AppendMetric(metrics.Key(name), *value);
    }
  }
  o.String("model", pod.model);
  o.Strings("models", pod.models);
  o.String("name", pod.name());
  o.String("namespace", pod.ns());
  o.Number("pending_load", state.pending_load());
  o.Int("pending_prefill_tokens", state.pending_prefill_tokens());
  o.String("phase", pod.object.phase);
  o.Int("port", store::PodServingPort(pod.object));
  {
    common::JsonObjectWriter prefix_index(o.Key("prefix_index"));
    if (index.events) prefix::AppendJson(prefix_index.Key("events"), *index.events);
    if (index.routing) prefix::AppendJson(prefix_index.Key("routing"), *index.routing);
  }
  o.Bool("ready", pod.ready);
  o.Int("remote_running_requests", state.remote_running());
  o.Int("running_requests", state.running());
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
