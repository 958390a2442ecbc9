#include "aibrix/server/cache_api.h"

#include "aibrix/common/json_writer.h"
#include "aibrix/prefix/match.h"

namespace aibrix::server {
namespace {

using common::AppendJsonInt;
using common::AppendJsonNumber;
using common::AppendJsonString;

// `"key":` after a comma unless first.
void Key(std::string* out, std::string_view key, bool first = false) {
  if (!first) out->push_back(',');
  AppendJsonString(out, key);
  out->push_back(':');
}

void AppendMetric(std::string* out, const store::MetricValue& value) {
  const store::HistogramMetric* h = value.histogram();
  if (h == nullptr) {
    AppendJsonNumber(out, value.Simple());
    return;
  }
  out->push_back('{');
  Key(out, "count", /*first=*/true);
  AppendJsonNumber(out, static_cast<double>(h->count));
  Key(out, "mean");
  AppendJsonNumber(out, h->Mean());
  Key(out, "p50");
  AppendJsonNumber(out, h->Percentile(50));
  Key(out, "p90");
  AppendJsonNumber(out, h->Percentile(90));
  Key(out, "p99");
  AppendJsonNumber(out, h->Percentile(99));
  Key(out, "sum");
  AppendJsonNumber(out, h->sum);
  Key(out, "type");
  AppendJsonString(out, "histogram");
  out->push_back('}');
}

}  // namespace

void AppendPodJson(std::string* out, const store::Pod& pod, const PodIndexView& index) {
  const store::PodState& state = *pod.state;
  out->push_back('{');
  Key(out, "completed_requests", /*first=*/true);
  AppendJsonInt(out, state.completed());
  Key(out, "deployment");
  AppendJsonString(out, pod.object.deployment);
  Key(out, "engine");
  AppendJsonString(out, store::PodEngine(pod.object));
  Key(out, "ip");
  AppendJsonString(out, pod.ip());
  Key(out, "key");
  AppendJsonString(out, pod.key);
  Key(out, "kv_events_enabled");
  out->append(store::PodKvEventsEnabled(pod.object) ? "true" : "false");
  Key(out, "kv_events_subscribed");
  out->append(index.kv_events_subscribed ? "true" : "false");
  Key(out, "labels");
  out->push_back('{');
  bool first = true;
  for (const auto& [name, value] : pod.object.labels) {  // a std::map: in order
    Key(out, name, first);
    AppendJsonString(out, value);
    first = false;
  }
  out->push_back('}');
  Key(out, "metric_port");
  AppendJsonInt(out, store::PodMetricPort(pod.object));
  Key(out, "metrics");
  out->push_back('{');
  first = true;
  for (const std::string& name : state.MetricNames()) {  // sorted
    if (auto value = state.Metric(name)) {
      Key(out, name, first);
      AppendMetric(out, *value);
      first = false;
    }
  }
  out->push_back('}');
  Key(out, "model");
  AppendJsonString(out, pod.model);
  Key(out, "models");
  out->push_back('[');
  for (size_t i = 0; i < pod.models.size(); ++i) {
    if (i > 0) out->push_back(',');
    AppendJsonString(out, pod.models[i]);
  }
  out->push_back(']');
  Key(out, "name");
  AppendJsonString(out, pod.name());
  Key(out, "namespace");
  AppendJsonString(out, pod.ns());
  Key(out, "pending_load");
  AppendJsonNumber(out, state.pending_load());
  Key(out, "pending_prefill_tokens");
  AppendJsonInt(out, state.pending_prefill_tokens());
  Key(out, "phase");
  AppendJsonString(out, pod.object.phase);
  Key(out, "port");
  AppendJsonInt(out, store::PodServingPort(pod.object));
  Key(out, "prefix_index");
  out->push_back('{');
  if (index.events) {
    Key(out, "events", /*first=*/true);
    prefix::AppendJson(out, *index.events);
  }
  if (index.routing) {
    Key(out, "routing", /*first=*/!index.events.has_value());
    prefix::AppendJson(out, *index.routing);
  }
  out->push_back('}');
  Key(out, "ready");
  out->append(pod.ready ? "true" : "false");
  Key(out, "remote_running_requests");
  AppendJsonInt(out, state.remote_running());
  Key(out, "running_requests");
  AppendJsonInt(out, state.running());
  out->push_back('}');
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
