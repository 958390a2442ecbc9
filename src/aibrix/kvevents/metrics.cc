#include "aibrix/kvevents/metrics.h"

#include <utility>

namespace aibrix::kvevents {
namespace {

const char* const kKindNames[kEventKinds] = {"BlockStored", "BlockRemoved", "AllBlocksCleared",
                                             "unknown"};

prometheus::Histogram::BucketBoundaries ProcessingBuckets() {
  // 10 µs × 2^k, 15 buckets (spec §9.2).
  prometheus::Histogram::BucketBoundaries b;
  double v = 10e-6;
  for (int i = 0; i < 15; ++i, v *= 2) b.push_back(v);
  return b;
}

}  // namespace

std::string_view ErrorTypeName(ErrorType type) {
  static constexpr std::string_view kNames[kErrorTypes] = {
      "frame", "decode", "too_large", "replay_protocol", "socket", "overflow", "dropped"};
  return kNames[static_cast<int>(type)];
}

std::string_view ResyncReasonName(ResyncReason reason) {
  static constexpr std::string_view kNames[kResyncReasons] = {
      "restart",      "gap_no_replay", "replay_limit",  "replay_failed",
      "decode_error", "too_large",     "overflow",      "pod_deleted",
      "ineligible",   "ip_changed",    "pod_recreated", "config_changed"};
  return kNames[static_cast<int>(reason)];
}

KvMetrics::KvMetrics(prometheus::Registry& r)
    : connections_(prometheus::BuildCounter()
                       .Name("aibrix_kvcache_zmq_connections_total")
                       .Help("ZMQ connections established to engine KV event publishers")
                       .Register(r)),
      disconnections_(prometheus::BuildCounter()
                          .Name("aibrix_kvcache_zmq_disconnections_total")
                          .Help("ZMQ connections to engine KV event publishers lost")
                          .Register(r)),
      reconnect_attempts_(prometheus::BuildCounter()
                              .Name("aibrix_kvcache_zmq_reconnect_attempts_total")
                              .Help("Reconnection attempts after a lost or failed connection")
                              .Register(r)),
      events_received_(prometheus::BuildCounter()
                           .Name("aibrix_kvcache_zmq_events_received_total")
                           .Help("KV events decoded from the wire, by type")
                           .Register(r)),
      events_processed_(prometheus::BuildCounter()
                            .Name("aibrix_kvcache_zmq_events_processed_total")
                            .Help("KV events applied to the prefix index, by type")
                            .Register(r)),
      missed_events_(prometheus::BuildCounter()
                         .Name("aibrix_kvcache_zmq_missed_events_total")
                         .Help("Event batches missing from the live stream (sequence gaps)")
                         .Register(r)),
      replay_requests_(prometheus::BuildCounter()
                           .Name("aibrix_kvcache_zmq_replay_requests_total")
                           .Help("Replay requests sent to engine replay sockets")
                           .Register(r)),
      replay_success_(prometheus::BuildCounter()
                          .Name("aibrix_kvcache_zmq_replay_success_total")
                          .Help("Replays that covered the requested range")
                          .Register(r)),
      replay_failures_(prometheus::BuildCounter()
                           .Name("aibrix_kvcache_zmq_replay_failures_total")
                           .Help("Replays that could not cover the gap (timeout, buffer too "
                                 "short, malformed reply)")
                           .Register(r)),
      errors_(prometheus::BuildCounter()
                  .Name("aibrix_kvcache_zmq_errors_total")
                  .Help("Errors by type (frame, decode, too_large, replay_protocol, socket, "
                        "overflow)")
                  .Register(r)),
      resyncs_(prometheus::BuildCounter()
                   .Name("aibrix_kvcache_zmq_resyncs_total")
                   .Help("Times a pod's index entries were cleared, by reason")
                   .Register(r)),
      batches_applied_(prometheus::BuildCounter()
                           .Name("aibrix_kvcache_zmq_batches_applied_total")
                           .Help("Event batches applied to the prefix index")
                           .Register(r)),
      gaps_(prometheus::BuildCounter()
                .Name("aibrix_kvcache_zmq_gaps_total")
                .Help("Sequence gaps seen in the live stream")
                .Register(r)),
      duplicates_dropped_(prometheus::BuildCounter()
                              .Name("aibrix_kvcache_zmq_duplicates_dropped_total")
                              .Help("Live batches dropped because a replay already delivered them")
                              .Register(r)),
      processing_(prometheus::BuildHistogram()
                      .Name("aibrix_kvcache_zmq_event_processing_duration_seconds")
                      .Help("Time to apply one event batch to the prefix index")
                      .Register(r)),
      connection_status_(prometheus::BuildGauge()
                             .Name("aibrix_kvcache_zmq_connection_status")
                             .Help("1 while connected to the pod's publisher (per DP rank)")
                             .Register(r)),
      last_sequence_id_(prometheus::BuildGauge()
                            .Name("aibrix_kvcache_zmq_last_sequence_id")
                            .Help("Sequence number of the last batch taken (per DP rank)")
                            .Register(r)) {}

std::shared_ptr<PodMetrics> KvMetrics::ForPod(const std::string& pod_key) {
  std::lock_guard<std::mutex> l(mu_);
  auto& slot = pods_[pod_key];
  if (!slot) slot.reset(new PodMetrics(this, pod_key));
  return slot;
}

void KvMetrics::RemovePod(const std::string& pod_key) {
  std::shared_ptr<PodMetrics> m;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = pods_.find(pod_key);
    if (it == pods_.end()) return;
    m = std::move(it->second);
    pods_.erase(it);
  }
  m->RemoveAll();
}

template <typename T>
T* PodMetrics::Track(prometheus::Family<T>& family, prometheus::Labels labels) {
  labels.emplace("pod_key", pod_key_);
  T* m;
  if constexpr (std::is_same_v<T, prometheus::Histogram>) {
    m = &family.Add(labels, ProcessingBuckets());
  } else {
    m = &family.Add(labels);
  }
  std::lock_guard<std::mutex> l(mu_);
  if constexpr (std::is_same_v<T, prometheus::Counter>) {
    for (auto& [f, c] : counters_) {
      if (c == m) return m;
    }
    counters_.emplace_back(&family, m);
  } else if constexpr (std::is_same_v<T, prometheus::Gauge>) {
    for (auto& [f, g] : gauges_) {
      if (g == m) return m;
    }
    gauges_.emplace_back(&family, m);
  } else {
    histograms_.emplace_back(&family, m);
  }
  return m;
}

PodMetrics::PodMetrics(KvMetrics* owner, std::string pod_key)
    : owner_(owner), pod_key_(std::move(pod_key)) {
  connections_ = Track(owner_->connections_, {});
  disconnections_ = Track(owner_->disconnections_, {});
  reconnect_attempts_ = Track(owner_->reconnect_attempts_, {});
  missed_events_ = Track(owner_->missed_events_, {});
  replay_requests_ = Track(owner_->replay_requests_, {});
  replay_success_ = Track(owner_->replay_success_, {});
  replay_failures_ = Track(owner_->replay_failures_, {});
  processing_ = Track(owner_->processing_, {});
  for (int k = 0; k < kEventKinds; ++k) {
    received_[k] = Track(owner_->events_received_, {{"event_type", kKindNames[k]}});
    processed_[k] = Track(owner_->events_processed_, {{"event_type", kKindNames[k]}});
  }
  batches_applied_ = Track(owner_->batches_applied_, {});
  gaps_ = Track(owner_->gaps_, {});
  duplicates_dropped_ = Track(owner_->duplicates_dropped_, {});
}

PodMetrics::~PodMetrics() = default;

void PodMetrics::RemoveAll() {
  std::lock_guard<std::mutex> l(mu_);
  for (auto& [f, m] : counters_) f->Remove(m);
  for (auto& [f, m] : gauges_) f->Remove(m);
  for (auto& [f, m] : histograms_) f->Remove(m);
  counters_.clear();
  gauges_.clear();
  histograms_.clear();
  for (auto& slot : errors_) slot.store(nullptr);
  for (auto& slot : resyncs_) slot.store(nullptr);
}

prometheus::Gauge& PodMetrics::connection_status(int rank) {
  return *Track(owner_->connection_status_, {{"rank", std::to_string(rank)}});
}
prometheus::Gauge& PodMetrics::last_sequence_id(int rank) {
  return *Track(owner_->last_sequence_id_, {{"rank", std::to_string(rank)}});
}
prometheus::Counter& PodMetrics::Lazy(std::atomic<prometheus::Counter*>& slot,
                                      prometheus::Family<prometheus::Counter>& family,
                                      prometheus::Labels labels) {
  prometheus::Counter* c = slot.load(std::memory_order_acquire);
  if (c != nullptr) return *c;
  c = Track(family, std::move(labels));  // Family::Add returns the same series to racers
  slot.store(c, std::memory_order_release);
  return *c;
}

prometheus::Counter& PodMetrics::errors(ErrorType type) {
  return Lazy(errors_[static_cast<int>(type)], owner_->errors_,
              {{"error_type", std::string(ErrorTypeName(type))}});
}

prometheus::Counter& PodMetrics::resyncs(ResyncReason reason) {
  return Lazy(resyncs_[static_cast<int>(reason)], owner_->resyncs_,
              {{"reason", std::string(ResyncReasonName(reason))}});
}

uint64_t PodMetrics::ErrorCount(ErrorType type) const {
  const prometheus::Counter* c = errors_[static_cast<int>(type)].load(std::memory_order_acquire);
  return c == nullptr ? 0 : static_cast<uint64_t>(c->Value());
}

uint64_t PodMetrics::ResyncCount(ResyncReason reason) const {
  const prometheus::Counter* c = resyncs_[static_cast<int>(reason)].load(std::memory_order_acquire);
  return c == nullptr ? 0 : static_cast<uint64_t>(c->Value());
}

uint64_t PodMetrics::ResyncTotal() const {
  uint64_t total = 0;
  for (int r = 0; r < kResyncReasons; ++r) total += ResyncCount(static_cast<ResyncReason>(r));
  return total;
}

}  // namespace aibrix::kvevents
