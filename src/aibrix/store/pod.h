// Pods as the cache sees them: the Kubernetes fields it reads (PodObject), the labels and
// annotations it interprets (spec §2.2), the readiness rule (spec §2.4), and the runtime
// state that lives as long as a pod stays in the Store (request counters, engine metrics).
//
// Thread safety: PodObject and Pod are immutable once published. PodState is shared
// between threads: its counters are atomics, its metric maps are guarded by a mutex.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "aibrix/common/mutex.h"
#include "aibrix/store/metric_value.h"

namespace aibrix::store {

// Label and annotation keys the cache reads (spec §2.2).
inline constexpr char kModelNameLabel[] = "model.aibrix.ai/name";
inline constexpr char kEngineLabel[] = "model.aibrix.ai/engine";
inline constexpr char kMetricPortLabel[] = "model.aibrix.ai/metric-port";
inline constexpr char kPortLabel[] = "model.aibrix.ai/port";
inline constexpr char kKvEventsEnabledLabel[] = "model.aibrix.ai/kv-events-enabled";
inline constexpr char kKvEventsPortLabel[] = "model.aibrix.ai/kv-events-port";
inline constexpr char kKvReplayPortLabel[] = "model.aibrix.ai/kv-events-replay-port";
inline constexpr char kLoraIdLabel[] = "model.aibrix.ai/lora-id";
inline constexpr char kModelClaimAnnotationPrefix[] = "modelclaim.aibrix.ai/";
inline constexpr char kRayNodeTypeLabel[] = "ray.io/node-type";
inline constexpr char kPodGroupIndexLabel[] =
    "stormservice.orchestration.aibrix.ai/pod-group-index";
inline constexpr char kRoleNameLabel[] = "role-name";
inline constexpr char kRoleSetNameLabel[] = "roleset-name";
inline constexpr int kDefaultMetricPort = 8000;
inline constexpr int kDefaultServingPort = 8000;

struct ContainerPort {
  std::string name;
  int port = 0;
  std::string protocol = "TCP";
  bool operator==(const ContainerPort&) const = default;
};

struct Container {
  std::string name;
  std::vector<ContainerPort> ports;
  std::vector<std::pair<std::string, std::string>> env;  // literal values only
  bool operator==(const Container&) const = default;
};

// The fields of a Kubernetes Pod the cache reads; discovery providers fill it.
struct PodObject {
  std::string ns;
  std::string name;
  std::string uid;
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> annotations;
  std::string ip;     // status.podIP, empty when not assigned
  std::string phase;  // status.phase: Pending, Running, Succeeded, Failed, Unknown
  std::string node_name;
  bool ready_condition = false;                   // status.conditions[type=Ready] is True
  std::optional<std::string> deletion_timestamp;  // metadata.deletionTimestamp
  std::vector<Container> containers;
  // The deployment the pod belongs to (spec §2.4), as the provider derives it from labels
  // and owner references; "" when none (static pods).
  std::string deployment;

  std::string Key() const { return ns + "/" + name; }
  bool operator==(const PodObject&) const = default;
};

// What the cache derives from a PodObject's labels, annotations and env.
std::string LabelOr(const PodObject& pod, const std::string& key, const std::string& fallback);
// Base model name: label model.aibrix.ai/name, else the annotation of that name; "" if none.
std::string PodModelName(const PodObject& pod);
// Worker pods (ray worker, pod-group-index > 0) are never cached.
bool IsWorkerPod(const PodObject& pod);
// Readiness (spec §2.4): IP set, not terminating, Ready condition True.
bool IsPodReady(const PodObject& pod);
// Metrics port: label model.aibrix.ai/metric-port, 8000 when absent or not an integer.
int PodMetricPort(const PodObject& pod);
// Serving port: label model.aibrix.ai/port, else the first container port, else 8000.
int PodServingPort(const PodObject& pod);
// Engine: label model.aibrix.ai/engine, "vllm" when absent.
std::string PodEngine(const PodObject& pod);
// Label model.aibrix.ai/kv-events-enabled is exactly "true".
bool PodKvEventsEnabled(const PodObject& pod);
// Label model.aibrix.ai/lora-id as int64, -1 when absent or invalid.
int64_t PodLoraId(const PodObject& pod);
// Container env `data-parallel-size` (> 1), else 1.
int PodDataParallelSize(const PodObject& pod);

// A served model a ModelClaim annotation binds to this pod (spec §2.3).
struct ModelClaim {
  std::string model;
  int port = 0;
  std::string state;  // active, activating, sleeping, failed
};
// Valid claims of the pod's annotations, last annotation winning per model.
std::vector<ModelClaim> PodModelClaims(const PodObject& pod);

// A scraped metric as a number, for readers on hot paths (no labels or buckets copied).
struct MetricSample {
  double value = 0;  // a simple value; a histogram's mean (0 when empty)
  double count = 0;  // a histogram's count; 0 for a simple value
  bool histogram = false;
  std::chrono::steady_clock::time_point scraped_at{};  // as MetricValue::scraped_at
};

// Runtime state of one cached pod. Created when the pod enters the Store and kept across
// updates of the same pod (same key and UID); a re-created pod gets a new one, so requests
// that outlive the old pod settle on the old state.
class PodState {
 public:
  PodState() = default;
  PodState(const PodState&) = delete;
  PodState& operator=(const PodState&) = delete;

  // In-flight requests routed to this pod by this process.
  int32_t running() const { return running_.load(std::memory_order_relaxed); }
  // In-flight requests other gateway replicas report for this pod (Redis, spec §3.5); 0
  // without Redis or when the replicas' reports are stale.
  int32_t remote_running() const { return remote_running_.load(std::memory_order_relaxed); }
  // What routers read as the pod's running requests: running() + remote_running().
  int32_t total_running() const { return running() + remote_running(); }
  // Set by the replica sync only.
  void set_remote_running(int32_t n) { remote_running_.store(n, std::memory_order_relaxed); }
  // Sum of the normalised loads (PendingLoadProvider consumption) of the requests this process
  // has in flight on the pod: the reference's realtime_normalized_pendings. Capacity is 1.0.
  double pending_load() const {
    return static_cast<double>(pending_load_nanos_.load(std::memory_order_relaxed)) / 1e9;
  }
  // Uncached prompt tokens of the requests this process has in flight on the pod whose
  // answer has not begun yet (Store::AddRequest's prefill_tokens until PrefillDone or the
  // settlement): the prefill work queued ahead of a new request.
  int64_t pending_prefill_tokens() const {
    return pending_prefill_tokens_.load(std::memory_order_relaxed);
  }
  // In-flight requests on one serving port (data-parallel pods); 0 for unknown ports.
  int32_t running_on_port(int port) const;
  // Requests completed on this pod by this process (monotonic).
  int64_t completed() const { return completed_.load(std::memory_order_relaxed); }

  // Engine metrics scraped from the pod. Pod scope, and model scope (keyed by model).
  void SetMetric(const std::string& name, MetricValue value);
  void SetModelMetric(const std::string& model, const std::string& name, MetricValue value);
  std::optional<MetricValue> Metric(const std::string& name) const;
  std::optional<MetricValue> ModelMetric(const std::string& model, const std::string& name) const;
  // Names of every pod-scope metric held.
  std::vector<std::string> MetricNames() const;
  // The first of: `name` in model scope under each of `models` in order, then in pod scope;
  // nullopt when none holds it. One lock, no allocation in the steady state.
  std::optional<MetricSample> Sample(std::span<const std::string_view> models,
                                     std::string_view name) const;

  // One scrape's values, written under one lock so readers see them together. The values
  // are moved from; names and models are copied only when first stored (no allocation in
  // the steady state).
  struct MetricUpdate {
    std::string_view model;  // model scope only
    std::string_view name;
    MetricValue value;
  };
  void SetMetrics(std::span<MetricUpdate> pod_values, std::span<MetricUpdate> model_values);
  // Calls fn(model, name, value) for every value held, pod scope with model "", under the
  // state's lock: fn must be quick and must not call back into this PodState.
  template <typename Fn>
  void VisitMetrics(Fn&& fn) const {
    common::MutexLock lock(&mu_);
    static const std::string kNoModel;
    for (const auto& [name, value] : metrics_) fn(kNoModel, name, value);
    for (const auto& [key, value] : model_metrics_) fn(key.first, key.second, value);
  }

 private:
  friend class Store;
  void AddRunning(int port, int delta);
  void AddPendingLoad(int64_t nanos) {
    pending_load_nanos_.fetch_add(nanos, std::memory_order_relaxed);
  }
  void AddPendingPrefill(int64_t tokens) {
    pending_prefill_tokens_.fetch_add(tokens, std::memory_order_relaxed);
  }

  std::atomic<int32_t> running_{0};
  std::atomic<int32_t> remote_running_{0};
  // Fixed point (1e-9) so that adding and removing a request's load returns exactly to 0.
  std::atomic<int64_t> pending_load_nanos_{0};
  std::atomic<int64_t> pending_prefill_tokens_{0};
  std::atomic<int64_t> completed_{0};
  mutable common::Mutex mu_;
  absl::flat_hash_map<int, int32_t> running_by_port_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, MetricValue> metrics_ ABSL_GUARDED_BY(mu_);
  // Keyed by (model, metric): model names may contain '/'.
  absl::flat_hash_map<std::pair<std::string, std::string>, MetricValue> model_metrics_
      ABSL_GUARDED_BY(mu_);
};

// A cached pod as published in a Store snapshot.
struct Pod {
  PodObject object;
  std::string key;                  // "namespace/name"
  std::string model;                // base model name ("" for a claim-only pod)
  std::vector<std::string> models;  // everything mapped: base, adapters, claims; sorted
  bool ready = false;
  std::shared_ptr<PodState> state;  // never null

  const std::string& ns() const { return object.ns; }
  const std::string& name() const { return object.name; }
  const std::string& ip() const { return object.ip; }
};
using PodRef = std::shared_ptr<const Pod>;

}  // namespace aibrix::store
