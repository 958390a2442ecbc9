// JSON views of the Store for the admin API (/cache/pods, /cache/models).
//
// Thread safety: pure functions over immutable snapshot records.
#pragma once

#include <optional>
#include <string>

#include "aibrix/prefix/types.h"
#include "aibrix/store/store.h"
#include "nlohmann/json.hpp"

namespace aibrix::server {

// What the admin API adds to a pod's JSON from the indexes and the KV event manager.
struct PodIndexView {
  std::optional<prefix::PodIndexStats> events;   // the KV-event index's stats of the pod
  std::optional<prefix::PodIndexStats> routing;  // the routing-fed index's
  bool kv_events_subscribed = false;
};

// Appends one pod as a JSON object — identity, readiness, models, ports, labels, request
// counts, engine metrics, and `index` ("prefix_index": {"events", "routing"},
// "kv_events_subscribed") — keys in alphabetical order. Written directly
// (common/json_writer.h), not as an nlohmann document: /cache/pods lists every pod, and the
// documents of 1,000 pods took ~14 ms to build and serialise.
void AppendPodJson(std::string* out, const store::Pod& pod, const PodIndexView& index);
// One model: its pods and the ready subset (keys), and pending requests.
nlohmann::json ModelToJson(const store::ModelPods& model);

}  // namespace aibrix::server
