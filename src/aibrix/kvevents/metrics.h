// Prometheus metrics of the KV event subscribers (spec §9.2 names, prefix
// aibrix_kvcache_zmq_, label pod_key), plus resyncs by reason. Every series is really
// updated; see docs/kvevents.md for the catalogue. They are the subscribers' only counters
// (Subscriber::stats reads them back).
//
// A pod's handles are resolved once: the fixed series when the pod's metrics are made, a
// rank's gauges when the rank is, an error type's or resync reason's counter the first time
// it happens (then kept in an atomic slot), so the event path takes no metrics lock.
//
// Thread safety: KvMetrics and PodMetrics may be used from any thread (prometheus-cpp
// counters, gauges and histograms are thread-safe; Family::Add/Remove lock internally).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace aibrix::kvevents {

class KvMetrics;

// Event types as they appear in the event_type label.
enum class EventKind { kBlockStored = 0, kBlockRemoved = 1, kAllBlocksCleared = 2, kUnknown = 3 };
inline constexpr int kEventKinds = 4;

// The error_type label.
enum class ErrorType {
  kFrame,
  kDecode,
  kTooLarge,
  kReplayProtocol,
  kSocket,
  kOverflow,
  kDropped,  // libzmq dropped the connection for good (a protocol error, e.g. a message over
             // ZMQ_MAXMSGSIZE): we reconnect ourselves
};
inline constexpr int kErrorTypes = 7;
std::string_view ErrorTypeName(ErrorType type);

// Why a pod's entries were cleared (the reason label).
enum class ResyncReason {
  kRestart,
  kGapNoReplay,
  kReplayLimit,
  kReplayFailed,
  kDecodeError,
  kTooLarge,
  kOverflow,
  kPodDeleted,
  kIneligible,
  kIpChanged,
  kPodRecreated,
  kConfigChanged,
};
inline constexpr int kResyncReasons = 12;
std::string_view ResyncReasonName(ResyncReason reason);

// The series of one pod. Created by KvMetrics::ForPod; removed by KvMetrics::RemovePod.
class PodMetrics {
 public:
  ~PodMetrics();
  PodMetrics(const PodMetrics&) = delete;
  PodMetrics& operator=(const PodMetrics&) = delete;

  prometheus::Counter& connections() { return *connections_; }
  prometheus::Counter& disconnections() { return *disconnections_; }
  prometheus::Counter& reconnect_attempts() { return *reconnect_attempts_; }
  // Sequence numbers the live stream skipped (before any replay).
  prometheus::Counter& missed_events() { return *missed_events_; }
  prometheus::Counter& replay_requests() { return *replay_requests_; }
  prometheus::Counter& replay_success() { return *replay_success_; }
  prometheus::Counter& replay_failures() { return *replay_failures_; }
  // Time to apply one batch to the sink.
  prometheus::Histogram& processing_seconds() { return *processing_; }
  prometheus::Counter& received(EventKind k) { return *received_[static_cast<int>(k)]; }
  prometheus::Counter& processed(EventKind k) { return *processed_[static_cast<int>(k)]; }
  prometheus::Counter& batches_applied() { return *batches_applied_; }
  prometheus::Counter& gaps() { return *gaps_; }
  prometheus::Counter& duplicates_dropped() { return *duplicates_dropped_; }
  // Per data-parallel rank (label rank): 1 while the SUB socket is connected; the sequence
  // number last taken. Resolve once per rank and keep the reference.
  prometheus::Gauge& connection_status(int rank);
  prometheus::Gauge& last_sequence_id(int rank);
  prometheus::Counter& errors(ErrorType type);
  prometheus::Counter& resyncs(ResyncReason reason);
  // Current values (0 for a series never created).
  uint64_t ErrorCount(ErrorType type) const;
  uint64_t ResyncCount(ResyncReason reason) const;
  uint64_t ResyncTotal() const;

 private:
  friend class KvMetrics;
  PodMetrics(KvMetrics* owner, std::string pod_key);
  void RemoveAll();
  template <typename T>
  T* Track(prometheus::Family<T>& family, prometheus::Labels labels);
  // The counter in `slot`, created with `labels` on first use.
  prometheus::Counter& Lazy(std::atomic<prometheus::Counter*>& slot,
                            prometheus::Family<prometheus::Counter>& family,
                            prometheus::Labels labels);

  KvMetrics* const owner_;
  const std::string pod_key_;
  std::mutex mu_;  // guards the removal lists (series may be added lazily from any thread)
  std::vector<std::pair<prometheus::Family<prometheus::Counter>*, prometheus::Counter*>> counters_;
  std::vector<std::pair<prometheus::Family<prometheus::Gauge>*, prometheus::Gauge*>> gauges_;
  std::vector<std::pair<prometheus::Family<prometheus::Histogram>*, prometheus::Histogram*>>
      histograms_;
  // Constant after construction.
  prometheus::Counter* connections_;
  prometheus::Counter* disconnections_;
  prometheus::Counter* reconnect_attempts_;
  prometheus::Counter* missed_events_;
  prometheus::Counter* replay_requests_;
  prometheus::Counter* replay_success_;
  prometheus::Counter* replay_failures_;
  prometheus::Histogram* processing_;
  prometheus::Counter* received_[kEventKinds];
  prometheus::Counter* processed_[kEventKinds];
  prometheus::Counter* batches_applied_;
  prometheus::Counter* gaps_;
  prometheus::Counter* duplicates_dropped_;
  // Created on first use.
  std::atomic<prometheus::Counter*> errors_[kErrorTypes] = {};
  std::atomic<prometheus::Counter*> resyncs_[kResyncReasons] = {};
};

class KvMetrics {
 public:
  // Registers the families on `registry`, which must outlive this object.
  explicit KvMetrics(prometheus::Registry& registry);
  KvMetrics(const KvMetrics&) = delete;
  KvMetrics& operator=(const KvMetrics&) = delete;

  // The series of `pod_key`, created on first use and shared by every holder.
  std::shared_ptr<PodMetrics> ForPod(const std::string& pod_key);
  // Removes the pod's series from the registry. REQUIRES: nothing uses the pod's PodMetrics
  // any more (its subscriber is stopped).
  void RemovePod(const std::string& pod_key);

 private:
  friend class PodMetrics;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<PodMetrics>> pods_;  // guarded by mu_
  prometheus::Family<prometheus::Counter>& connections_;
  prometheus::Family<prometheus::Counter>& disconnections_;
  prometheus::Family<prometheus::Counter>& reconnect_attempts_;
  prometheus::Family<prometheus::Counter>& events_received_;
  prometheus::Family<prometheus::Counter>& events_processed_;
  prometheus::Family<prometheus::Counter>& missed_events_;
  prometheus::Family<prometheus::Counter>& replay_requests_;
  prometheus::Family<prometheus::Counter>& replay_success_;
  prometheus::Family<prometheus::Counter>& replay_failures_;
  prometheus::Family<prometheus::Counter>& errors_;
  prometheus::Family<prometheus::Counter>& resyncs_;
  prometheus::Family<prometheus::Counter>& batches_applied_;
  prometheus::Family<prometheus::Counter>& gaps_;
  prometheus::Family<prometheus::Counter>& duplicates_dropped_;
  prometheus::Family<prometheus::Histogram>& processing_;
  prometheus::Family<prometheus::Gauge>& connection_status_;
  prometheus::Family<prometheus::Gauge>& last_sequence_id_;
};

}  // namespace aibrix::kvevents
