#include "aibrix/store/store.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "aibrix/common/status_macros.h"
#include "fmt/format.h"

namespace aibrix::store {

Store::Store() : snapshot_(std::make_shared<Snapshot>()) {}

SnapshotRef Store::snapshot() const {
  common::MutexLock lock(&snapshot_mu_);
  return snapshot_;
}

bool Store::AddPod(const PodObject& pod) {
  common::MutexLock lock(&write_mu_);
  const bool cached = AddPodLocked(pod);
  PublishAndNotifyLocked();
  return cached;
}

bool Store::DeletePod(std::string_view ns, std::string_view name) {
  common::MutexLock lock(&write_mu_);
  if (!DeletePodLocked(fmt::format("{}/{}", ns, name))) return false;
  PublishAndNotifyLocked();
  return true;
}

void Store::AddModelAdapter(const ModelAdapterObject& adapter) {
  common::MutexLock lock(&write_mu_);
  AddModelAdapterLocked(adapter);
  PublishAndNotifyLocked();
}

void Store::DeleteModelAdapter(std::string_view ns, std::string_view name) {
  common::MutexLock lock(&write_mu_);
  DeleteModelAdapterLocked(fmt::format("{}/{}", ns, name));
  PublishAndNotifyLocked();
}

void Store::Apply(std::vector<StoreWrite> writes) {
  common::MutexLock lock(&write_mu_);
  if (writes.size() > 1) {  // a LIST: no rehashing (and moving of pod objects) on the way
    pods_.reserve(pods_.size() + writes.size());
    dirty_.reserve(dirty_.size() + writes.size());
  }
  for (StoreWrite& write : writes) {
    if (auto* pod = std::get_if<PodObject>(&write)) {
      AddPodLocked(std::move(*pod));
    } else if (auto* gone = std::get_if<PodDeletion>(&write)) {
      DeletePodLocked(gone->ns + "/" + gone->name);
    } else if (auto* adapter = std::get_if<ModelAdapterObject>(&write)) {
      AddModelAdapterLocked(std::move(*adapter));
    } else if (auto* removed = std::get_if<ModelAdapterDeletion>(&write)) {
      DeleteModelAdapterLocked(removed->ns + "/" + removed->name);
    }
  }
  PublishAndNotifyLocked();
}

bool Store::AddPodLocked(PodObject pod) {
  std::string key = pod.Key();
  if (IsWorkerPod(pod) || (PodModelName(pod).empty() && PodModelClaims(pod).empty())) {
    DeletePodLocked(key);
    return false;
  }
  auto it = pods_.find(key);
  if (it != pods_.end()) {
    PodEntry& entry = it->second;
    const PodObject& current = entry.pending ? *entry.pending : entry.published->object;
    if (current == pod) return true;  // a resync that changes nothing
    // The same pod (same UID) keeps its runtime state; a re-created pod starts afresh.
    if (current.uid != pod.uid) entry.state = std::make_shared<PodState>();
    entry.pending = std::move(pod);
  } else {
    pods_.emplace(key, PodEntry{std::make_shared<PodState>(), nullptr, std::move(pod)});
  }
  dirty_.insert(std::move(key));
  return true;
}

bool Store::DeletePodLocked(const std::string& key) {
  if (pods_.erase(key) == 0) return false;
  dirty_.insert(key);
  return true;
}

void Store::AddModelAdapterLocked(ModelAdapterObject adapter) {
  // Duplicate instances map once.
  std::sort(adapter.instances.begin(), adapter.instances.end());
  adapter.instances.erase(std::unique(adapter.instances.begin(), adapter.instances.end()),
                          adapter.instances.end());
  const std::string key = adapter.ns + "/" + adapter.name;
  auto it = adapters_.find(key);
  if (it != adapters_.end()) {
    IndexAdapterLocked(it->second.object, -1);
    it->second.object = std::move(adapter);
    IndexAdapterLocked(it->second.object, +1);
  } else {
    auto inserted = adapters_.emplace(key, AdapterEntry{std::move(adapter)}).first;
    IndexAdapterLocked(inserted->second.object, +1);
  }
}

void Store::DeleteModelAdapterLocked(const std::string& key) {
  auto it = adapters_.find(key);
  if (it == adapters_.end()) return;
  IndexAdapterLocked(it->second.object, -1);
  adapters_.erase(it);
}

void Store::IndexAdapterLocked(const ModelAdapterObject& adapter, int delta) {
  for (const std::string& pod : adapter.instances) {
    std::string pod_key = adapter.ns + "/" + pod;
    if (delta > 0) {
      adapters_by_pod_[pod_key].push_back(adapter.name);
    } else if (auto it = adapters_by_pod_.find(pod_key); it != adapters_by_pod_.end()) {
      auto& names = it->second;
      if (auto name = std::find(names.begin(), names.end(), adapter.name); name != names.end()) {
        names.erase(name);
      }
      if (names.empty()) adapters_by_pod_.erase(it);
    }
    dirty_.insert(std::move(pod_key));
  }
}

std::vector<std::string> Store::ModelsOfLocked(const PodObject& pod, const std::string& key) const {
  std::vector<std::string> models;
  if (std::string base = PodModelName(pod); !base.empty()) models.push_back(std::move(base));
  if (auto it = adapters_by_pod_.find(key); it != adapters_by_pod_.end()) {
    models.insert(models.end(), it->second.begin(), it->second.end());
  }
  for (const ModelClaim& claim : PodModelClaims(pod)) {
    if (claim.port > 0) models.push_back(claim.model);
  }
  std::sort(models.begin(), models.end());
  models.erase(std::unique(models.begin(), models.end()), models.end());
  return models;
}

namespace {

bool Contains(const std::vector<std::string>& sorted, const std::string& value) {
  return std::binary_search(sorted.begin(), sorted.end(), value);
}

// One pod entering, changing in or leaving a model's pod set: the new record, or null.
struct MemberChange {
  const std::string* key;
  PodRef after;
};

// The model's pod lists after `changes` (sorted by key, one per pod) on `before`. A few
// changes are applied to copies of the previous lists, which share every chunk they do not
// touch; many (a LIST) rebuild the lists in one merge.
void UpdateMembers(const ModelPods* before, const std::vector<MemberChange>& changes,
                   ModelPods& out) {
  if (before != nullptr && changes.size() * PodList::kMaxChunk <= before->pods.size()) {
    out.pods = before->pods;
    out.ready = before->ready;
    for (const MemberChange& change : changes) {
      if (change.after) {
        out.pods.Put(change.after);
      } else {
        out.pods.Erase(*change.key);
      }
      if (change.after && change.after->ready) {
        out.ready.Put(change.after);
      } else {
        out.ready.Erase(*change.key);
      }
    }
    return;
  }
  static const PodList kNone;
  const PodList& old = before ? before->pods : kNone;
  std::vector<PodRef> pods;
  std::vector<PodRef> ready;
  pods.reserve(old.size() + changes.size());
  ready.reserve(old.size() + changes.size());
  const auto add = [&](const PodRef& pod) {
    pods.push_back(pod);
    if (pod->ready) ready.push_back(pod);
  };
  auto i = old.begin();
  size_t j = 0;
  while (i != old.end() || j < changes.size()) {
    if (j == changes.size() || (i != old.end() && (*i)->key < *changes[j].key)) {
      add(*i++);
      continue;
    }
    if (i != old.end() && (*i)->key == *changes[j].key) ++i;
    if (changes[j].after) add(changes[j].after);
    ++j;
  }
  out.pods = PodList(std::move(pods));
  out.ready = PodList(std::move(ready));
}

}  // namespace

void Store::PublishAndNotifyLocked() {
  if (dirty_.empty()) return;
  SnapshotRef previous = snapshot();
  PodMap::Builder pods(previous->pods);
  // Per model touched: the pods entering, changing in or leaving it.
  absl::flat_hash_map<std::string, std::vector<MemberChange>> touched;
  std::vector<std::pair<PodRef, PodRef>> changed;  // (before, after) per pod, for listeners

  for (const std::string& key : dirty_) {
    const PodRef* published = previous->pods.Find(key);
    PodRef before = published ? *published : nullptr;
    PodRef after;
    if (auto it = pods_.find(key); it != pods_.end()) {
      PodEntry& entry = it->second;
      const PodObject& object = entry.pending ? *entry.pending : entry.published->object;
      std::vector<std::string> models = ModelsOfLocked(object, key);
      if (!entry.pending && entry.published && entry.published->models == models) {
        after = entry.published;  // an adapter change that does not concern this pod
      } else {
        auto record = std::make_shared<Pod>();
        // Not a conditional expression: `pending ? std::move(*pending) : published->object`
        // is a const prvalue, copied rather than moved.
        if (entry.pending) {
          record->object = std::move(*entry.pending);
        } else {
          record->object = entry.published->object;
        }
        record->key = key;
        record->model = PodModelName(record->object);
        record->models = std::move(models);
        record->ready = IsPodReady(record->object);
        record->state = entry.state;
        entry.published = record;
        entry.pending.reset();
        after = std::move(record);
      }
    }
    if (before == after) continue;
    if (after) {
      pods.Put(after);
    } else {
      pods.Erase(key);
    }
    const std::string& stable_key = after ? after->key : before->key;
    if (before) {
      for (const std::string& model : before->models) {
        touched[model].push_back(
            {&stable_key, after && Contains(after->models, model) ? after : nullptr});
      }
    }
    if (after) {
      for (const std::string& model : after->models) {
        if (!before || !Contains(before->models, model)) {
          touched[model].push_back({&stable_key, after});
        }
      }
    }
    changed.emplace_back(std::move(before), std::move(after));
  }
  dirty_.clear();
  if (changed.empty()) return;

  ModelMap::Builder models(previous->models);
  for (auto& [model, changes] : touched) {
    std::sort(changes.begin(), changes.end(),
              [](const MemberChange& a, const MemberChange& b) { return *a.key < *b.key; });
    const ModelPodsRef* old = previous->models.Find(model);
    auto entry = std::make_shared<ModelPods>();
    UpdateMembers(old ? old->get() : nullptr, changes, *entry);
    if (entry->pods.empty()) {
      models.Erase(model);
      continue;
    }
    entry->model = model;
    // A model keeps its state for the Store's lifetime (also while it has no pods), so an
    // in-flight request can point at it without sharing a reference count across threads.
    auto [state_it, inserted] = model_states_.try_emplace(model);
    if (inserted) state_it->second = std::make_shared<ModelState>(model);
    entry->state = state_it->second;
    models.Put(std::move(entry));
  }

  auto next = std::make_shared<Snapshot>();
  next->version = ++version_;
  next->pods = std::move(pods).Build();
  next->models = std::move(models).Build();
  {
    common::MutexLock lock(&snapshot_mu_);
    snapshot_ = std::move(next);
  }
  for (const auto& [before, after] : changed) {
    for (PodListener* listener : listeners_) listener->OnPodChanged(before, after);
  }
}

absl::StatusOr<PodRef> Store::GetPod(std::string_view ns, std::string_view name) const {
  return GetPod(fmt::format("{}/{}", ns, name));
}

absl::StatusOr<PodRef> Store::GetPod(std::string_view pod_key) const {
  SnapshotRef snap = snapshot();
  const PodRef* pod = snap->pods.Find(pod_key);
  if (pod == nullptr) {
    return absl::NotFoundError(fmt::format("key does not exist in the cache: {}", pod_key));
  }
  return *pod;
}

std::vector<PodRef> Store::ListPods() const {
  SnapshotRef snap = snapshot();
  std::vector<PodRef> pods;
  pods.reserve(snap->pods.size());
  snap->pods.ForEach([&](const PodRef& pod) { pods.push_back(pod); });
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
  const ModelPodsRef* pods = snap->models.Find(model);
  return pods == nullptr ? nullptr : *pods;
}

bool Store::HasModel(std::string_view model) const { return ReadyPods(model) != nullptr; }

std::vector<std::string> Store::ListModels() const {
  SnapshotRef snap = snapshot();
  std::vector<std::string> models;
  snap->models.ForEach([&](const ModelPodsRef& pods) { models.push_back(pods->model); });
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
  const PodRef* pod = snap->pods.Find(pod_key);
  if (pod == nullptr) {
    return absl::NotFoundError(fmt::format("key does not exist in the cache: {}", pod_key));
  }
  const ModelPodsRef* pods = snap->models.Find(model);
  return AddRequest(request_id, *pod, pods == nullptr ? nullptr : *pods, {.port = port});
}

absl::Status Store::AddRequest(std::string_view request_id, const PodRef& pod,
                               const ModelPodsRef& model, const RequestCounts& counts) {
  ModelState* model_state = model ? model->state.get() : nullptr;
  // Non-finite or negative loads (a broken profile) count as none.
  const double load = counts.pending_load;
  const int64_t load_nanos = std::isfinite(load) && load > 0 && load < 1e9
                                 ? static_cast<int64_t>(std::llround(load * 1e9))
                                 : 0;
  const int64_t prefill = std::max<int64_t>(0, counts.prefill_tokens);
  if (!requests_.Insert(request_id, InFlightRequest{pod->state, model_state, counts.port,
                                                    load_nanos, prefill, counts.expires})) {
    return absl::AlreadyExistsError(fmt::format("request {} is already in flight", request_id));
  }
  pod->state->AddRunning(counts.port, +1);
  if (load_nanos != 0) pod->state->AddPendingLoad(load_nanos);
  if (prefill != 0) pod->state->AddPendingPrefill(prefill);
  if (model_state) model_state->pending_.Add(1);
  return absl::OkStatus();
}

absl::Status Store::PrefillDone(std::string_view request_id) {
  std::optional<RequestTable::Prefill> prefill = requests_.TakePrefill(request_id);
  if (!prefill) return absl::NotFoundError(fmt::format("request {} is not in flight", request_id));
  if (prefill->tokens != 0) prefill->pod->AddPendingPrefill(-prefill->tokens);
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
  if (done.prefill_tokens != 0) done.pod->AddPendingPrefill(-done.prefill_tokens);
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
