// aibrix::store::Store — the cache store of the seed document: which pods exist, which
// models and LoRA adapters each serves, whether they are ready, their engine metrics and
// the requests this process has routed to them.
//
// Thread safety: every method may be called from any thread.
//  - Topology (pods, models, adapters) is published as an immutable Snapshot. Readers copy
//    the pointer under a mutex held only for that copy, so they never wait for a writer to
//    build a snapshot; writers serialise on write_mu_, build the next one and swap it in.
//  - Request counters are atomics in PodState / ModelState; the in-flight request table is
//    sharded by request id so concurrent requests on different pods rarely share a lock.
//  - Listeners are called on the writer's thread after the snapshot is published, one
//    change at a time, in order. They must not block and must not call back into writes.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "aibrix/common/mutex.h"
#include "aibrix/common/striped_counter.h"
#include "aibrix/store/pod.h"
#include "aibrix/store/pod_list.h"
#include "aibrix/store/request_table.h"
#include "aibrix/store/snapshot_map.h"

namespace aibrix::store {

// An AIBrix ModelAdapter resource: adapter `name` is served by the pods listed in
// status.instances (pod names in the adapter's namespace).
struct ModelAdapterObject {
  std::string ns;
  std::string name;
  std::vector<std::string> instances;
};

// Runtime state of a model entry (lives while the model has at least one pod).
class ModelState {
 public:
  explicit ModelState(std::string name) : name_(std::move(name)) {}
  const std::string& name() const { return name_; }
  // Requests admitted for this model and not yet done.
  int64_t pending() const { return pending_.Value(); }

 private:
  friend class Store;
  const std::string name_;
  common::StripedCounter pending_;  // updated by every routing thread; read rarely
};

// What DoneRequest settled.
struct SettledRequest {
  std::shared_ptr<PodState> pod;
  const ModelState* model = nullptr;  // null when the request's model had no entry; valid for
                                      // the Store's lifetime
};

// The pods of one model, as of one snapshot. Successive snapshots' lists share the chunks
// a change does not touch (PodList).
struct ModelPods {
  std::string model;
  PodList pods;   // every mapped pod, sorted by key
  PodList ready;  // the ready subset, sorted by key
  std::shared_ptr<ModelState> state;
};
using ModelPodsRef = std::shared_ptr<const ModelPods>;

using PodMap = SnapshotMap<Pod, &Pod::key>;                  // by "namespace/name"
using ModelMap = SnapshotMap<ModelPods, &ModelPods::model>;  // by model name

// One consistent view of the topology. Successive snapshots share what did not change.
struct Snapshot {
  uint64_t version = 0;
  PodMap pods;
  ModelMap models;
};
using SnapshotRef = std::shared_ptr<const Snapshot>;

// The writes Store::Apply takes: a pod or adapter added or replaced, or one removed.
struct PodDeletion {
  std::string ns;
  std::string name;
};
struct ModelAdapterDeletion {
  std::string ns;
  std::string name;
};
using StoreWrite = std::variant<PodObject, PodDeletion, ModelAdapterObject, ModelAdapterDeletion>;

// Told about every pod change after it is visible in the snapshot.
class PodListener {
 public:
  virtual ~PodListener() = default;
  // `before` is null when the pod was added, `after` is null when it was removed; both set
  // for an update (the same PodState, possibly new object, models or readiness).
  virtual void OnPodChanged(const PodRef& before, const PodRef& after) = 0;
};

class Store {
 public:
  Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // --- Writes (discovery) -------------------------------------------------------------
  // Adds or replaces a pod. Ignored (returns false) for worker pods and pods with neither a
  // model name nor a valid ModelClaim; an existing entry is then removed. A pod that stays
  // (same key and UID) keeps its PodState and its adapter mappings.
  bool AddPod(const PodObject& pod);
  // Same as AddPod: Kubernetes updates carry the whole object.
  bool UpdatePod(const PodObject& pod) { return AddPod(pod); }
  // Removes the pod and its mappings. Returns false if it was not cached.
  bool DeletePod(std::string_view ns, std::string_view name);
  // Maps adapter `name` onto its instances (replacing an earlier version of the adapter).
  void AddModelAdapter(const ModelAdapterObject& adapter);
  void UpdateModelAdapter(const ModelAdapterObject& adapter) { AddModelAdapter(adapter); }
  void DeleteModelAdapter(std::string_view ns, std::string_view name);
  // Applies `writes` in order, as the single calls above would, and publishes them as one
  // snapshot: listeners then hear once about each pod whose record changed. A LIST of
  // thousands of pods costs one publication.
  void Apply(std::vector<StoreWrite> writes);

  // --- Reads --------------------------------------------------------------------------
  SnapshotRef snapshot() const;
  // The cached pod (ready or not); NotFound "key does not exist in the cache: ns/name".
  absl::StatusOr<PodRef> GetPod(std::string_view ns, std::string_view name) const;
  absl::StatusOr<PodRef> GetPod(std::string_view pod_key) const;
  // Every cached pod, sorted by key.
  std::vector<PodRef> ListPods() const;
  // The pods mapped to `model` (base model, adapter or claim), not readiness-filtered;
  // NotFound "model does not exist in the cache: m".
  absl::StatusOr<ModelPodsRef> ListPodsByModel(std::string_view model) const;
  // The immutable pod set of `model` for routers (use ->ready); null if the model is
  // unknown. Costs one atomic load and one lookup, no copy of the set.
  ModelPodsRef ReadyPods(std::string_view model) const;
  bool HasModel(std::string_view model) const;
  // Model names, sorted.
  std::vector<std::string> ListModels() const;
  // Everything mapped on the pod, sorted; NotFound if the pod is not cached.
  absl::StatusOr<std::vector<std::string>> ListModelsByPod(std::string_view ns,
                                                           std::string_view name) const;

  // --- Engine metrics ------------------------------------------------------------------
  // NotFound if the pod is not cached.
  absl::Status SetPodMetric(std::string_view pod_key, const std::string& metric, MetricValue value);
  absl::Status SetPodModelMetric(std::string_view pod_key, const std::string& model,
                                 const std::string& metric, MetricValue value);

  // --- Request tracking ----------------------------------------------------------------
  // Records that request `request_id` for `model` went to `pod_key` (serving `port`, 0 for
  // the pod's only port): the pod's running count and the model's pending count go up.
  // NotFound if the pod is not cached; AlreadyExists if the id is already in flight (the
  // request is then counted once).
  absl::Status AddRequest(std::string_view request_id, std::string_view pod_key,
                          std::string_view model, int port = 0);
  // How a request counts on its pod besides running: see AddRequest.
  struct RequestCounts {
    int port = 0;  // the serving port (0 for the pod's only port)
    // When set, ExpireRequests settles the request then if it is still in flight.
    std::optional<std::chrono::steady_clock::time_point> expires{};
    // The request's normalised load (routing::PendingLoadProvider), added to the pod's
    // pending_load() until the request is settled.
    double pending_load = 0;
    // The request's uncached prompt tokens, added to the pod's pending_prefill_tokens()
    // until PrefillDone or the settlement.
    int64_t prefill_tokens = 0;
  };
  // The routing hot path: the router already holds the pod and the model's pod set from a
  // snapshot, so nothing is looked up. `model` may be null (no pending count). AlreadyExists
  // if the id is already in flight.
  absl::Status AddRequest(std::string_view request_id, const PodRef& pod, const ModelPodsRef& model,
                          const RequestCounts& counts);
  absl::Status AddRequest(std::string_view request_id, const PodRef& pod,
                          const ModelPodsRef& model) {
    return AddRequest(request_id, pod, model, RequestCounts{});
  }
  // The engine began answering request `request_id` (its first output): its prefill tokens
  // leave the pod's pending_prefill_tokens(). Later calls change nothing. NotFound if the id
  // is not in flight.
  absl::Status PrefillDone(std::string_view request_id);
  // Settles request `request_id`: running down, completed up, pending down, on the pod and
  // model states it was added with. NotFound if the id is not in flight (never added, or
  // already done), so a second call changes nothing.
  absl::StatusOr<SettledRequest> DoneRequest(std::string_view request_id);
  // Settles (as DoneRequest) every request added with an expiry at or before `now`.
  std::vector<SettledRequest> ExpireRequests(std::chrono::steady_clock::time_point now);
  // Requests currently in flight in this process.
  size_t InFlightRequests() const;

  // --- Listeners -----------------------------------------------------------------------
  // Registers `listener` (not owned; must outlive the Store or be removed first).
  void AddListener(PodListener* listener);
  void RemoveListener(PodListener* listener);

 private:
  // Applies a removed in-flight entry's counts (DoneRequest's work).
  static SettledRequest Settle(InFlightRequest done);

  struct PodEntry {
    std::shared_ptr<PodState> state;
    PodRef published;                  // the record in the current snapshot (null before)
    std::optional<PodObject> pending;  // a changed object waiting for the next publication
  };
  struct AdapterEntry {
    ModelAdapterObject object;
  };

  // The single writes, without publishing (Apply's steps).
  bool AddPodLocked(PodObject pod) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  bool DeletePodLocked(const std::string& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  void AddModelAdapterLocked(ModelAdapterObject adapter) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  void DeleteModelAdapterLocked(const std::string& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Adds (+1) or removes (-1) the adapter's name on the pods it lists, and marks them dirty.
  void IndexAdapterLocked(const ModelAdapterObject& adapter, int delta)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // The models mapped on a pod: base model, adapters listing it, claims with a port.
  std::vector<std::string> ModelsOfLocked(const PodObject& pod, const std::string& key) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Rebuilds the records of dirty pods and the pod sets of the models they enter or leave,
  // publishes the next snapshot (sharing everything else with the previous one), then tells
  // listeners about every dirty pod whose record changed.
  void PublishAndNotifyLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

  // Guarded by write_mu_: the source of truth the snapshots are built from.
  mutable common::Mutex write_mu_;
  absl::flat_hash_map<std::string, PodEntry> pods_ ABSL_GUARDED_BY(write_mu_);
  absl::flat_hash_map<std::string, AdapterEntry> adapters_ ABSL_GUARDED_BY(write_mu_);
  // Pod key -> names of the adapters listing it (with multiplicity, unordered).
  absl::flat_hash_map<std::string, std::vector<std::string>> adapters_by_pod_
      ABSL_GUARDED_BY(write_mu_);
  // Every model ever seen (kept for the Store's lifetime; bounded by distinct model names).
  absl::flat_hash_map<std::string, std::shared_ptr<ModelState>> model_states_
      ABSL_GUARDED_BY(write_mu_);
  absl::flat_hash_set<std::string> dirty_ ABSL_GUARDED_BY(write_mu_);
  std::vector<PodListener*> listeners_ ABSL_GUARDED_BY(write_mu_);
  uint64_t version_ ABSL_GUARDED_BY(write_mu_) = 0;

  // Published topology. Readers hold snapshot_mu_ only to copy the pointer (never while a
  // writer builds the next snapshot). A mutex rather than std::atomic<std::shared_ptr>:
  // libstdc++ 12's atomic shared_ptr unlocks with relaxed ordering after load(), which
  // ThreadSanitizer reports as a race.
  mutable common::Mutex snapshot_mu_;
  SnapshotRef snapshot_ ABSL_GUARDED_BY(snapshot_mu_);

  // In-flight requests (internally sharded).
  RequestTable requests_;
};

}  // namespace aibrix::store
