#include "aibrix/store/store.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/hash/hash.h"
#include "aibrix/common/status_macros.h"
#include "aibrix/common/strings.h"
#include "fmt/format.h"

namespace aibrix::store {

using common::AsAbsl;

Store::Store() : snapshot_(std::make_shared<Snapshot>()) {}

SnapshotRef Store::snapshot() const {
  common::MutexLock lock(&snapshot_mu_);
  return snapshot_;
}

bool Store::AddPod(const PodObject& pod) {
  const std::string key = pod.Key();
  common::MutexLock lock(&write_mu_);
  if (IsWorkerPod(pod) || (PodModelName(pod).empty() && PodModelClaims(pod).empty())) {
    if (ErasePodLocked(key)) PublishAndNotifyLocked();
    return false;
  }
  auto it = pods_.find(key);
  if (it != pods_.end()) {
    PodEntry& entry = it->second;
    if (entry.object == pod) return true;  // a resync that changes nothing
    // The same pod (same UID) keeps its runtime state; a re-created pod starts afresh.
    if (entry.object.uid != pod.uid) entry.state = std::make_shared<PodState>();
    entry.object = pod;
  } else {
    pods_.emplace(key, PodEntry{pod, std::make_shared<PodState>(), nullptr});
  }
  dirty_.insert(key);
  PublishAndNotifyLocked();
  return true;
}

bool Store::DeletePod(std::string_view ns, std::string_view name) {
  common::MutexLock lock(&write_mu_);
  if (!ErasePodLocked(fmt::format("{}/{}", ns, name))) return false;
  PublishAndNotifyLocked();
  return true;
}

bool Store::ErasePodLocked(const std::string& key) {
  if (pods_.erase(key) == 0) return false;
  dirty_.insert(key);
  return true;
}

void Store::AddModelAdapter(const ModelAdapterObject& adapter) {
  const std::string key = adapter.ns + "/" + adapter.name;
  common::MutexLock lock(&write_mu_);
  auto it = adapters_.find(key);
  if (it != adapters_.end()) {
    MarkAdapterPodsLocked(it->second.object);
    it->second.object = adapter;
  } else {
    adapters_.emplace(key, AdapterEntry{adapter});
  }
  MarkAdapterPodsLocked(adapter);
  PublishAndNotifyLocked();
}

void Store::DeleteModelAdapter(std::string_view ns, std::string_view name) {
  common::MutexLock lock(&write_mu_);
  auto it = adapters_.find(AsAbsl(fmt::format("{}/{}", ns, name)));
  if (it == adapters_.end()) return;
  MarkAdapterPodsLocked(it->second.object);
  adapters_.erase(it);
  PublishAndNotifyLocked();
}

void Store::MarkAdapterPodsLocked(const ModelAdapterObject& adapter) {
  for (const std::string& pod : adapter.instances) dirty_.insert(adapter.ns + "/" + pod);
}

std::vector<std::string> Store::ModelsOfLocked(const PodObject& pod) const {
  std::vector<std::string> models;
  if (std::string base = PodModelName(pod); !base.empty()) models.push_back(std::move(base));
  for (const auto& [key, adapter] : adapters_) {
    const ModelAdapterObject& object = adapter.object;
    if (object.ns != pod.ns) continue;
    if (std::find(object.instances.begin(), object.instances.end(), pod.name) !=
        object.instances.end()) {
      models.push_back(object.name);
    }
  }
  for (const ModelClaim& claim : PodModelClaims(pod)) {
    if (claim.port > 0) models.push_back(claim.model);
  }
  std::sort(models.begin(), models.end());
  models.erase(std::unique(models.begin(), models.end()), models.end());
  return models;
}

void Store::PublishAndNotifyLocked() {
  if (dirty_.empty()) return;
  SnapshotRef previous = snapshot();
  auto next = std::make_shared<Snapshot>();
  next->version = ++version_;
  next->pods.reserve(pods_.size());

  std::map<std::string, std::vector<PodRef>> by_model;
  for (auto& [key, entry] : pods_) {
    if (entry.published == nullptr || dirty_.contains(key)) {
      auto record = std::make_shared<Pod>();
      record->object = entry.object;
      record->key = key;
      record->model = PodModelName(entry.object);
      record->models = ModelsOfLocked(entry.object);
      record->ready = IsPodReady(entry.object);
      record->state = entry.state;
      entry.published = std::move(record);
    }
    next->pods.emplace(key, entry.published);
    for (const std::string& model : entry.published->models) {
      by_model[model].push_back(entry.published);
    }
  }

  for (auto& [model, pods] : by_model) {
    std::sort(pods.begin(), pods.end(),
              [](const PodRef& a, const PodRef& b) { return a->key < b->key; });
    auto entry = std::make_shared<ModelPods>();
    entry->model = model;
    for (const PodRef& pod : pods) {
      if (pod->ready) entry->ready.push_back(pod);
    }
    entry->pods = std::move(pods);
    // A model keeps its state for the Store's lifetime (also while it has no pods), so an
    // in-flight request can point at it without sharing a reference count across threads.
    auto [state_it, inserted] = model_states_.try_emplace(model);
    if (inserted) state_it->second = std::make_shared<ModelState>(model);
    entry->state = state_it->second;
    next->models.emplace(model, std::move(entry));
  }
  {
    common::MutexLock lock(&snapshot_mu_);
    snapshot_ = next;
  }

  for (const std::string& key : dirty_) {
    auto before_it = previous->pods.find(key);
    auto after_it = next->pods.find(key);
    PodRef before = before_it == previous->pods.end() ? nullptr : before_it->second;
    PodRef after = after_it == next->pods.end() ? nullptr : after_it->second;
    if (before == after) continue;
    for (PodListener* listener : listeners_) listener->OnPodChanged(before, after);
  }
  dirty_.clear();
}

absl::StatusOr<PodRef> Store::GetPod(std::string_view ns, std::string_view name) const {
  return GetPod(fmt::format("{}/{}", ns, name));
}

absl::StatusOr<PodRef> Store::GetPod(std::string_view pod_key) const {
  SnapshotRef snap = snapshot();
  auto it = snap->pods.find(AsAbsl(pod_key));
  if (it == snap->pods.end()) {
    return absl::NotFoundError(fmt::format("key does not exist in the cache: {}", pod_key));
  }
  return it->second;
}

std::vector<PodRef> Store::ListPods() const {
  SnapshotRef snap = snapshot();
  std::vector<PodRef> pods;
  pods.reserve(snap->pods.size());
  for (const auto& [key, pod] : snap->pods) pods.push_back(pod);
  std::sort(pods.begin(), pods.end(),
            [](const PodRef& a, const PodRef& b) { return a->key < b->key; });
  return pods;
}

absl::StatusOr<ModelPodsRef> Store::ListPodsByModel(std::string_view model) const {
  ModelPodsRef pods = ReadyPods(model);
  if (pods == nullptr) {
    return absl::NotFoundError(fmt::format("model does not exist in the cache: {}", model));
  }
  return pods;
}

ModelPodsRef Store::ReadyPods(std::string_view model) const {
  SnapshotRef snap = snapshot();
  auto it = snap->models.find(AsAbsl(model));
  return it == snap->models.end() ? nullptr : it->second;
}

bool Store::HasModel(std::string_view model) const { return ReadyPods(model) != nullptr; }

std::vector<std::string> Store::ListModels() const {
  SnapshotRef snap = snapshot();
  std::vector<std::string> models;
  for (const auto& [name, pods] : snap->models) models.push_back(name);
  std::sort(models.begin(), models.end());
  return models;
}

absl::StatusOr<std::vector<std::string>> Store::ListModelsByPod(std::string_view ns,
                                                                std::string_view name) const {
  ASSIGN_OR_RETURN(PodRef pod, GetPod(ns, name));
  return pod->models;
}

absl::Status Store::SetPodMetric(std::string_view pod_key, const std::string& metric,
                                 MetricValue value) {
  ASSIGN_OR_RETURN(PodRef pod, GetPod(pod_key));
  pod->state->SetMetric(metric, std::move(value));
  return absl::OkStatus();
}

absl::Status Store::SetPodModelMetric(std::string_view pod_key, const std::string& model,
                                      const std::string& metric, MetricValue value) {
  ASSIGN_OR_RETURN(PodRef pod, GetPod(pod_key));
  pod->state->SetModelMetric(model, metric, std::move(value));
  return absl::OkStatus();
}

absl::Status Store::AddRequest(std::string_view request_id, std::string_view pod_key,
                               std::string_view model, int port) {
  SnapshotRef snap = snapshot();
  auto pod_it = snap->pods.find(AsAbsl(pod_key));
  if (pod_it == snap->pods.end()) {
    return absl::NotFoundError(fmt::format("key does not exist in the cache: {}", pod_key));
  }
  auto model_it = snap->models.find(AsAbsl(model));
  return AddRequest(request_id, pod_it->second,
                    model_it == snap->models.end() ? nullptr : model_it->second, port);
}

absl::Status Store::AddRequest(std::string_view request_id, const PodRef& pod,
                               const ModelPodsRef& model, int port,
                               std::optional<std::chrono::steady_clock::time_point> expires,
                               double pending_load) {
  ModelState* model_state = model ? model->state.get() : nullptr;
  // Non-finite or negative loads (a broken profile) count as none.
  const int64_t load_nanos = std::isfinite(pending_load) && pending_load > 0 && pending_load < 1e9
                                 ? static_cast<int64_t>(std::llround(pending_load * 1e9))
                                 : 0;
  if (!requests_.Insert(request_id,
                        InFlightRequest{pod->state, model_state, port, load_nanos, expires})) {
    return absl::AlreadyExistsError(fmt::format("request {} is already in flight", request_id));
  }
  pod->state->AddRunning(port, +1);
  if (load_nanos != 0) pod->state->AddPendingLoad(load_nanos);
  if (model_state) model_state->pending_.Add(1);
  return absl::OkStatus();
}

absl::StatusOr<SettledRequest> Store::DoneRequest(std::string_view request_id) {
  std::optional<InFlightRequest> done = requests_.Take(request_id);
  if (!done) return absl::NotFoundError(fmt::format("request {} is not in flight", request_id));
  return Settle(std::move(*done));
}

SettledRequest Store::Settle(InFlightRequest done) {
  done.pod->AddRunning(done.port, -1);
  if (done.load_nanos != 0) done.pod->AddPendingLoad(-done.load_nanos);
  done.pod->completed_.fetch_add(1, std::memory_order_relaxed);
  if (done.model) done.model->pending_.Add(-1);
  return SettledRequest{std::move(done.pod), done.model};
}

std::vector<SettledRequest> Store::ExpireRequests(std::chrono::steady_clock::time_point now) {
  std::vector<SettledRequest> settled;
  for (InFlightRequest& request : requests_.TakeExpired(now)) {
    settled.push_back(Settle(std::move(request)));
  }
  return settled;
}

size_t Store::InFlightRequests() const { return requests_.size(); }

void Store::AddListener(PodListener* listener) {
  common::MutexLock lock(&write_mu_);
  listeners_.push_back(listener);
}

void Store::RemoveListener(PodListener* listener) {
  common::MutexLock lock(&write_mu_);
  listeners_.erase(std::remove(listeners_.begin(), listeners_.end(), listener), listeners_.end());
}

}  // namespace aibrix::store
