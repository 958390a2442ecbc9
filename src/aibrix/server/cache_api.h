// JSON views of the Store for the admin API (/cache/pods, /cache/models).
//
// Thread safety: pure functions over immutable snapshot records.
#pragma once

#include "aibrix/store/store.h"
#include "nlohmann/json.hpp"

namespace aibrix::server {

// One pod: identity, readiness, models, ports, labels, request counts, engine metrics.
nlohmann::json PodToJson(const store::Pod& pod);
// One model: its pods and the ready subset (keys), and pending requests.
nlohmann::json ModelToJson(const store::ModelPods& model);

}  // namespace aibrix::server
