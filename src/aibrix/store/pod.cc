#include "aibrix/store/pod.h"

#include <algorithm>
#include <charconv>
#include <string_view>

#include "aibrix/common/env.h"
#include "nlohmann/json.hpp"

namespace aibrix::store {
namespace {

template <typename Int>
std::optional<Int> ParseInt(const std::string& text) {
  Int value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

const std::string* Find(const std::map<std::string, std::string>& map, const std::string& key) {
  auto it = map.find(key);
  return it == map.end() ? nullptr : &it->second;
}

}  // namespace

std::string LabelOr(const PodObject& pod, const std::string& key, const std::string& fallback) {
  const std::string* value = Find(pod.labels, key);
  return value != nullptr && !value->empty() ? *value : fallback;
}

std::string PodModelName(const PodObject& pod) {
  if (const std::string* label = Find(pod.labels, kModelNameLabel); label && !label->empty()) {
    return *label;
  }
  if (const std::string* annotation = Find(pod.annotations, kModelNameLabel)) return *annotation;
  return "";
}

bool IsWorkerPod(const PodObject& pod) {
  if (const std::string* type = Find(pod.labels, kRayNodeTypeLabel); type && *type == "worker") {
    return true;
  }
  if (const std::string* index = Find(pod.labels, kPodGroupIndexLabel)) {
    auto parsed = ParseInt<int64_t>(*index);
    return parsed.has_value() && *parsed > 0;
  }
  return false;
}

bool IsPodReady(const PodObject& pod) {
  const bool terminating =
      pod.deletion_timestamp.has_value() && pod.phase != "Succeeded" && pod.phase != "Failed";
  return !pod.ip.empty() && !terminating && pod.ready_condition;
}

int PodMetricPort(const PodObject& pod) {
  if (const std::string* port = Find(pod.labels, kMetricPortLabel)) {
    auto parsed = ParseInt<int>(*port);
    if (parsed && *parsed > 0 && *parsed <= 65535) return *parsed;
  }
  return kDefaultMetricPort;
}

int PodServingPort(const PodObject& pod) {
  if (const std::string* port = Find(pod.labels, kPortLabel)) {
    auto parsed = ParseInt<int>(*port);
    if (parsed && *parsed > 0 && *parsed <= 65535) return *parsed;
  }
  for (const Container& container : pod.containers) {
    if (!container.ports.empty()) return container.ports.front().port;
  }
  return kDefaultServingPort;
}

std::string PodEngine(const PodObject& pod) { return LabelOr(pod, kEngineLabel, "vllm"); }

bool PodKvEventsEnabled(const PodObject& pod) {
  const std::string* value = Find(pod.labels, kKvEventsEnabledLabel);
  return value != nullptr && *value == "true";
}

int64_t PodLoraId(const PodObject& pod) {
  if (const std::string* value = Find(pod.labels, kLoraIdLabel)) {
    if (auto parsed = ParseInt<int64_t>(*value)) return *parsed;
  }
  return -1;
}

int PodDataParallelSize(const PodObject& pod) {
  for (const Container& container : pod.containers) {
    for (const auto& [name, value] : container.env) {
      if (name != "data-parallel-size") continue;
      auto parsed = ParseInt<int>(value);
      if (parsed && *parsed > 1) return *parsed;
    }
  }
  return 1;
}

std::vector<ModelClaim> PodModelClaims(const PodObject& pod) {
  std::map<std::string, ModelClaim> by_model;
  constexpr std::string_view kPrefix = kModelClaimAnnotationPrefix;
  for (const auto& [key, value] : pod.annotations) {
    if (std::string_view(key).substr(0, kPrefix.size()) != kPrefix) continue;
    nlohmann::json doc = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
    if (!doc.is_object()) continue;
    ModelClaim claim;
    if (!doc.contains("model") || !doc["model"].is_string()) continue;
    claim.model = doc["model"].get<std::string>();
    if (claim.model.empty()) continue;
    if (doc.contains("port")) {
      if (!doc["port"].is_number_integer()) continue;
      int64_t port = doc["port"].get<int64_t>();
      if (port < 0 || port > 65535) continue;
      claim.port = static_cast<int>(port);
    }
    if (doc.contains("state") && doc["state"].is_string()) {
      claim.state = doc["state"].get<std::string>();
    } else {
      claim.state = claim.port > 0 ? "active" : "activating";
    }
    static const std::string kStates[] = {"active", "activating", "sleeping", "failed"};
    if (std::find(std::begin(kStates), std::end(kStates), claim.state) == std::end(kStates)) {
      continue;
    }
    if ((claim.state == "active") != (claim.port > 0)) continue;
    by_model[claim.model] = claim;
  }
  std::vector<ModelClaim> out;
  for (auto& [model, claim] : by_model) out.push_back(std::move(claim));
  return out;
}

int32_t PodState::running_on_port(int port) const {
  common::MutexLock lock(&mu_);
  auto it = running_by_port_.find(port);
  return it == running_by_port_.end() ? 0 : it->second;
}

void PodState::AddRunning(int port, int delta) {
  running_.fetch_add(delta, std::memory_order_relaxed);
  if (port > 0) {
    common::MutexLock lock(&mu_);
    running_by_port_[port] += delta;
  }
}

void PodState::SetMetric(const std::string& name, MetricValue value) {
  common::MutexLock lock(&mu_);
  metrics_[name] = std::move(value);
}

void PodState::SetModelMetric(const std::string& model, const std::string& name,
                              MetricValue value) {
  common::MutexLock lock(&mu_);
  model_metrics_[{model, name}] = std::move(value);
}

void PodState::SetMetrics(std::span<MetricUpdate> pod_values,
                          std::span<MetricUpdate> model_values) {
  // (model, name), reused so lookups do not allocate once the strings have grown.
  thread_local std::pair<std::string, std::string> key;
  common::MutexLock lock(&mu_);
  for (MetricUpdate& update : pod_values) {
    auto it = metrics_.find(absl::string_view(update.name.data(), update.name.size()));
    if (it != metrics_.end()) {
      it->second = std::move(update.value);
    } else {
      metrics_.emplace(std::string(update.name), std::move(update.value));
    }
  }
  for (MetricUpdate& update : model_values) {
    key.first.assign(update.model);
    key.second.assign(update.name);
    auto it = model_metrics_.find(key);
    if (it != model_metrics_.end()) {
      it->second = std::move(update.value);
    } else {
      model_metrics_.emplace(key, std::move(update.value));
    }
  }
}

std::optional<MetricValue> PodState::Metric(const std::string& name) const {
  common::MutexLock lock(&mu_);
  auto it = metrics_.find(name);
  if (it == metrics_.end()) return std::nullopt;
  return it->second;
}

std::optional<MetricValue> PodState::ModelMetric(const std::string& model,
                                                 const std::string& name) const {
  common::MutexLock lock(&mu_);
  auto it = model_metrics_.find(std::make_pair(model, name));
  if (it == model_metrics_.end()) return std::nullopt;
  return it->second;
}

namespace {

MetricSample ToSample(const MetricValue& v) {
  MetricSample s;
  s.scraped_at = v.scraped_at;
  if (const HistogramMetric* h = v.histogram()) {
    s.histogram = true;
    s.count = h->count;
    s.value = h->Mean();
  } else {
    s.value = v.Simple();
  }
  return s;
}

}  // namespace

std::optional<MetricSample> PodState::Sample(std::span<const std::string_view> models,
                                             std::string_view name) const {
  // (model, name), reused so lookups do not allocate once the strings have grown.
  thread_local std::pair<std::string, std::string> key;
  common::MutexLock lock(&mu_);
  if (!model_metrics_.empty()) key.second.assign(name);
  for (std::string_view model : model_metrics_.empty() ? models.first(0) : models) {
    key.first.assign(model);
    auto it = model_metrics_.find(key);
    if (it != model_metrics_.end()) return ToSample(it->second);
  }
  if (metrics_.empty()) return std::nullopt;
  auto it = metrics_.find(absl::string_view(name.data(), name.size()));
  if (it == metrics_.end()) return std::nullopt;
  return ToSample(it->second);
}

std::vector<std::string> PodState::MetricNames() const {
  common::MutexLock lock(&mu_);
  std::vector<std::string> names;
  for (const auto& [name, value] : metrics_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace aibrix::store
