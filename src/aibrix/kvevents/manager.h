// EventManager: keeps one KV event Subscriber per eligible pod of the Store, and clears a
// pod's index entries when it goes away, changes IP or stops being eligible.
//
// Eligibility (spec §6.2): the manager is enabled, label model.aibrix.ai/kv-events-enabled
// is "true", phase Running, an IP, and a model name. Ports: labels
// model.aibrix.ai/kv-events-port / kv-events-replay-port (defaults 5557 / 5558; a replay port
// of 0 means "no replay socket"); with container env data-parallel-size = N > 1, rank r
// publishes on port + r and replay port + r, and all ranks feed the same pod key.
//
// Every subscriber runs on one shared IngestRuntime (ingest.h): a few socket threads and
// appliers for the whole fleet. Pods beyond the runtime's rank capacity (the descriptor
// limit, `ingest.max_ranks`) are not subscribed; a warning names them and the gauge
// aibrix_kvcache_zmq_pods_over_capacity counts them.
//
// Thread safety: OnPodChanged is called on the Store's writer thread and only records the
// pod key in a queue (never blocks on sockets). A manager thread reconciles each queued key
// against the Store's current snapshot, so the order of notifications does not matter.
// A change between two versions that are both ineligible (or absent) is not queued: the
// change that made the pod ineligible was, and its reconciliation sees an ineligible version.
// Start/Stop/SubscribedPods may be called from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "aibrix/kv/events.h"
#include "aibrix/kvevents/ingest.h"
#include "aibrix/kvevents/metrics.h"
#include "aibrix/kvevents/subscriber.h"
#include "aibrix/store/store.h"

namespace aibrix::kvevents {

inline constexpr int kDefaultKvEventsPort = 5557;
inline constexpr int kDefaultKvReplayPort = 5558;

struct EventManagerOptions {
  // The service passes --kv-event-sync (or its environment variables, server/config.h).
  bool enabled = false;
  int default_port = kDefaultKvEventsPort;
  int default_replay_port = kDefaultKvReplayPort;
  // Timing and queue knobs for every subscriber; source, ranks and runtime are filled in per
  // pod.
  SubscriberOptions subscriber;
  // The shared threads and budgets.
  IngestOptions ingest;
};

// What the manager subscribes to for one pod; equal targets mean "nothing to do".
struct PodTarget {
  std::string uid;
  std::string ip;
  std::string model;
  int64_t lora_id = -1;
  std::vector<RankEndpoint> ranks;
  bool operator==(const PodTarget& o) const;
};

// The target for `pod` (null if the pod is not eligible). Pure; exposed for tests.
std::unique_ptr<PodTarget> TargetForPod(const store::Pod& pod, const EventManagerOptions& options);
// Whether TargetForPod would give `pod` a target, without building it.
bool HasTarget(const store::Pod& pod, const EventManagerOptions& options);

class EventManager final : public store::PodListener {
 public:
  // `store` and `sink` must outlive the manager; `registry` may be null (no export).
  EventManager(store::Store* store, kv::EventSink* sink, prometheus::Registry* registry,
               EventManagerOptions options);
  ~EventManager() override;  // Stop()s
  EventManager(const EventManager&) = delete;
  EventManager& operator=(const EventManager&) = delete;

  // Registers as a Store listener and subscribes to the eligible pods already cached. A
  // no-op (OK) when disabled. FailedPrecondition when started twice.
  absl::Status Start();
  // Unregisters, stops every subscriber (entries are not cleared: the process is going
  // away or the feature is being turned off). Idempotent.
  void Stop();

  void OnPodChanged(const store::PodRef& before, const store::PodRef& after) override;

  // Pod keys with a running subscriber, sorted.
  std::vector<std::string> SubscribedPods() const;
  // The endpoints a pod is subscribed to (empty if none).
  std::vector<RankEndpoint> Endpoints(const std::string& pod_key) const;
  // Stats of a pod's subscriber (zeros if none).
  Subscriber::Stats PodStats(const std::string& pod_key) const;
  // Bytes the event path holds, all pods: decoded batches waiting for the appliers and live
  // batches held back during replays (0 when disabled).
  size_t queued_bytes() const;
  // Blocks until every change queued before the call is reconciled. False on timeout.
  bool WaitIdle(std::chrono::milliseconds timeout = std::chrono::seconds(5));

 private:
  struct Entry {
    PodTarget target;
    std::unique_ptr<Subscriber> subscriber;
  };

  void Enqueue(const std::string& key);
  void Run();
  void Reconcile(const std::string& key);

  // Constant after construction.
  store::Store* const store_;
  kv::EventSink* const sink_;
  const EventManagerOptions options_;
  std::unique_ptr<prometheus::Registry> own_registry_;  // when none is given
  std::unique_ptr<KvMetrics> metrics_;
  prometheus::Gauge* over_capacity_ = nullptr;
  std::shared_ptr<IngestRuntime> runtime_;  // set by Start when enabled

  // Guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  std::set<std::string> queued_;
  uint64_t enqueued_ = 0;
  uint64_t done_ = 0;
  bool started_ = false;
  bool stopping_ = false;
  std::map<std::string, Entry> entries_;  // written by the manager thread only
  int subscribed_ranks_ = 0;              // over entries_
  std::set<std::string> over_capacity_pods_;

  std::thread thread_;
};

}  // namespace aibrix::kvevents
