// aibrix::redis::TraceFlusher — writes every model's request trace to Redis for AIBrix's GPU
// optimizer (spec §3.3): every 10 s, at wall-clock multiples of 10 s, the interval that just
// ended goes to `aibrix:<model>_request_trace_<T>` (T: the boundary, Unix seconds) as a JSON
// object of bucket counts and meta keys (RequestTrace::ToMap), with a TTL of 10 minutes, all
// models in one pipeline. Models without traffic in the interval are not written.
//
// Degradation: when Redis is down or slow the interval's traces are dropped (they describe a
// past interval; the next one starts fresh), counted in aibrix_redis_errors_total{feature=
// "trace"} and logged at a limited rate. Requests never wait for this: the flusher runs on its
// own thread and the tracker only swaps counters under a short lock.
//
// Thread safety: Start/Stop from one owner thread; Flush runs on the caller's thread (the
// flusher's own once started; tests call it directly and must not Start).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "aibrix/common/clock.h"
#include "aibrix/redis/connection.h"
#include "aibrix/redis/feature_metrics.h"
#include "aibrix/redis/periodic.h"
#include "aibrix/tracking/request_tracker.h"

namespace aibrix::redis {

struct TraceFlusherOptions {
  ConnectionOptions connection;
  // The interval (and key alignment); meta_interval_sec says it. 10 s as the optimizer expects.
  std::chrono::seconds period{10};
  std::chrono::seconds ttl{600};
};

class TraceFlusher {
 public:
  // Everything borrowed must outlive the flusher. `clock` gives the wall time of the keys.
  TraceFlusher(tracking::RequestTracker& tracker, const common::Clock& clock,
               TraceFlusherOptions options, prometheus::Registry& registry);
  ~TraceFlusher() { Stop(); }
  TraceFlusher(const TraceFlusher&) = delete;
  TraceFlusher& operator=(const TraceFlusher&) = delete;

  // Starts flushing at every period boundary of the clock's wall time. Idempotent.
  void Start();
  void Stop();

  // Takes every model's current interval and writes it under boundary `round_t`. Returns the
  // number of keys written; on a Redis failure the interval is dropped and the error returned.
  absl::StatusOr<size_t> Flush(std::chrono::system_clock::time_point round_t);
  // Flush under the boundary at or before now (the reference's now − now mod period).
  absl::StatusOr<size_t> FlushNow();

  // "aibrix:<model>_request_trace_<unix seconds>".
  static std::string Key(std::string_view model, std::chrono::system_clock::time_point round_t);

  const FeatureMetrics& metrics() const { return metrics_; }

 private:
  // The period boundary at or before `t`.
  std::chrono::system_clock::time_point Floor(std::chrono::system_clock::time_point t) const;

  // Constant after construction.
  tracking::RequestTracker& tracker_;
  const common::Clock& clock_;
  const TraceFlusherOptions options_;

  // Used by the flushing thread only (or the test calling Flush).
  Connection connection_;
  FeatureMetrics metrics_;
  prometheus::Counter& keys_written_;
  // The boundary the periodic thread flushes at next.
  std::chrono::system_clock::time_point next_boundary_{};
  PeriodicThread thread_;
};

}  // namespace aibrix::redis
