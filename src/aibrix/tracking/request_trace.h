// aibrix::tracking::RequestTrace — one model's request trace for the GPU optimizer (spec §3.3):
// per 10 s interval, how many requests arrived and how many finished in each log-bucketed
// (input tokens, output tokens) pair, plus the model's requests still pending.
//
// A flusher calls Swap() every interval to take the interval's counts (and reset them) and
// writes ToMap(snapshot) as JSON; nothing here talks to Redis.
//
// Bucket keys: the key index of n tokens is round(10·log2(n)), the precision-10 bucket the
// reference means. The reference computes round(log2(n)/0.1)·0.1 and then truncates
// bucket/0.1 in IEEE double, which writes one less for some indices (43 → 42, 81 → 80, 86,
// 91, 162, ...) ⚠; we write the rounded index (docs/tracking.md).
//
// Differences from the reference: the trace object is per model and lives as long as the
// tracker (Swap resets it in place instead of replacing and pooling objects, so no
// "recycled" retry loop exists); completions count in the interval they happen in (the
// reference counted them only if the request also arrived in that interval); the pending
// count lives here, survives Swap, and never goes below zero.
//
// Thread safety: every method may be called from any thread. Interval counts are guarded by
// one mutex held only for a counter or map update, so Swap sees every request either in the
// old interval or the new one; the pending count is a lone atomic.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "aibrix/common/clock.h"
#include "aibrix/common/mutex.h"

namespace aibrix::tracking {

// One interval of one model's trace.
struct TraceSnapshot {
  // Wall-clock time the interval began (construction or the previous Swap).
  std::chrono::system_clock::time_point term;
  // "<input index>:<output index>" → finished requests.
  std::map<std::string, int64_t> buckets;
  // Requests that arrived / finished during the interval.
  int64_t total_requests = 0;
  int64_t completed_requests = 0;
  // Requests admitted and not yet finished when the snapshot was taken.
  int64_t pending_requests = 0;
};

class RequestTrace {
 public:
  static constexpr int64_t kVersion = 4;
  static constexpr int64_t kIntervalSec = 10;
  static constexpr int64_t kPrecision = 10;

  // `clock` is borrowed and must outlive the trace.
  explicit RequestTrace(const common::Clock& clock);
  RequestTrace(const RequestTrace&) = delete;
  RequestTrace& operator=(const RequestTrace&) = delete;

  // The key index of `tokens`: 0 for tokens <= 0, else round(10·log2(n)). 1 → 0, 20 → 43,
  // 1024 → 100.
  static int BucketIndex(int64_t tokens);

  // A request was admitted: total and pending go up.
  void AddRequest();
  // A request finished without token counts: completed up, pending down (not below zero).
  void DoneRequest();
  // A request finished with token counts: as DoneRequest, and its bucket pair goes up.
  void DoneRequestTrace(int64_t input_tokens, int64_t output_tokens);

  // The current interval's counts, unchanged.
  TraceSnapshot Snapshot() const;
  // The current interval's counts; starts a new interval (pending is carried over).
  TraceSnapshot Swap();

  int64_t pending_requests() const { return pending_.load(std::memory_order_relaxed); }

  // The flushed form: every bucket key plus meta_v, meta_interval_sec, meta_precision,
  // meta_total_reqs, meta_pending_reqs and meta_queueing_reqs (= `queueing_requests`; 0 when
  // the model has no queue router).
  static std::map<std::string, int64_t> ToMap(const TraceSnapshot& snapshot,
                                              int64_t queueing_requests = 0);
  std::map<std::string, int64_t> ToMap(int64_t queueing_requests = 0) const {
    return ToMap(Snapshot(), queueing_requests);
  }

 private:
  struct Interval {
    std::chrono::system_clock::time_point term;
    // (input index << 32 | output index) → count; keys are formatted only on snapshot.
    absl::flat_hash_map<uint64_t, int64_t> buckets;
    int64_t total_requests = 0;
    int64_t completed_requests = 0;
  };
  TraceSnapshot ToSnapshot(const Interval& interval) const;
  void DecrementPending();

  // Constant after construction.
  const common::Clock& clock_;

  mutable common::Mutex mu_;
  Interval interval_ ABSL_GUARDED_BY(mu_);

  // Not tied to an interval.
  std::atomic<int64_t> pending_{0};
};

}  // namespace aibrix::tracking
