#include "aibrix/tracking/request_trace.h"

#include <cmath>
#include <utility>

#include "fmt/format.h"

namespace aibrix::tracking {
namespace {

uint64_t PackKey(int input_index, int output_index) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(input_index)) << 32) |
         static_cast<uint32_t>(output_index);
}

}  // namespace

RequestTrace::RequestTrace(const common::Clock& clock) : clock_(clock) {
  common::MutexLock lock(&mu_);
  interval_.term = clock_.WallNow();
}

int RequestTrace::BucketIndex(int64_t tokens) {
  if (tokens <= 0) return 0;
  // 10·log2(n) is never exactly k + 0.5 for an integer n, so rounding cannot tie.
  return static_cast<int>(std::lround(std::log2(static_cast<double>(tokens)) * kPrecision));
}

void RequestTrace::AddRequest() {
  pending_.fetch_add(1, std::memory_order_relaxed);
  common::MutexLock lock(&mu_);
  ++interval_.total_requests;
}

void RequestTrace::DoneRequest() {
  DecrementPending();
  common::MutexLock lock(&mu_);
  ++interval_.completed_requests;
}

void RequestTrace::DoneRequestTrace(int64_t input_tokens, int64_t output_tokens) {
  const uint64_t key = PackKey(BucketIndex(input_tokens), BucketIndex(output_tokens));
  DecrementPending();
  common::MutexLock lock(&mu_);
  ++interval_.completed_requests;
  ++interval_.buckets[key];
}

void RequestTrace::DecrementPending() {
  // A completion without a matching admission (a caller bug, or one admitted before a
  // restart) must not drive the gauge negative.
  int64_t pending = pending_.load(std::memory_order_relaxed);
  while (pending > 0 &&
         !pending_.compare_exchange_weak(pending, pending - 1, std::memory_order_relaxed)) {
  }
}

TraceSnapshot RequestTrace::ToSnapshot(const Interval& interval) const {
  TraceSnapshot snapshot;
  snapshot.term = interval.term;
  snapshot.total_requests = interval.total_requests;
  snapshot.completed_requests = interval.completed_requests;
  snapshot.pending_requests = pending_requests();
  for (const auto& [key, count] : interval.buckets) {
    snapshot.buckets.emplace(fmt::format("{}:{}", static_cast<uint32_t>(key >> 32),
                                         static_cast<uint32_t>(key & 0xffffffffu)),
                             count);
  }
  return snapshot;
}

TraceSnapshot RequestTrace::Snapshot() const {
  Interval copy;
  {
    common::MutexLock lock(&mu_);
    copy = interval_;
  }
  return ToSnapshot(copy);
}

TraceSnapshot RequestTrace::Swap() {
  Interval old;
  {
    common::MutexLock lock(&mu_);
    old = std::exchange(interval_, Interval{});
    interval_.term = clock_.WallNow();
  }
  return ToSnapshot(old);
}

std::map<std::string, int64_t> RequestTrace::ToMap(const TraceSnapshot& snapshot,
                                                   int64_t queueing_requests) {
  std::map<std::string, int64_t> out = snapshot.buckets;
  out["meta_v"] = kVersion;
  out["meta_interval_sec"] = kIntervalSec;
  out["meta_precision"] = kPrecision;
  out["meta_total_reqs"] = snapshot.total_requests;
  out["meta_pending_reqs"] = snapshot.pending_requests;
  out["meta_queueing_reqs"] = queueing_requests;
  return out;
}

}  // namespace aibrix::tracking
