// The loadgen run: open-loop dispatch of a workload against an OpenAI endpoint, a worker
// pool of keep-alive streaming clients, a progress line, the engines' prefix-cache
// counters before and after, and the report (one JSON object, also rendered as text).
//
// Open loop: request i is sent at its arrival time whatever happened to earlier requests,
// so a slow server builds a queue instead of slowing the load down. The only brake is
// `concurrency_limit` (a safety cap on requests in flight); requests that had to wait for
// it are counted as `dispatch_delayed` and their lag is reported — a run with many of them
// measured the cap, not the server.
//
// Thread safety: `Runner::Run` is called once, from one thread; it owns the worker and
// progress threads it starts and joins them before returning. `RequestStop` and
// `CancelInFlight` may be called from any thread (they only set atomics; signal-safe).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "client.h"
#include "nlohmann/json.hpp"
#include "stats.h"
#include "workload.h"

namespace aibrix::loadgen {

// Produces the requests of a run in order, with `arrival_s` set; nullopt when exhausted.
class RequestSource {
 public:
  virtual ~RequestSource() = default;
  virtual std::optional<RequestSpec> Next() = 0;
  // A description for the report.
  virtual nlohmann::json Describe() const = 0;
};

// Synthetic conversations (infinite) with Poisson arrivals.
std::unique_ptr<RequestSource> MakeSyntheticSource(const SyntheticOptions& options, double rate,
                                                   uint64_t arrival_seed);
// A trace: at its timestamps divided by `speedup` when `rate` is 0, else Poisson at `rate`.
// REQUIRES: rate > 0 or trace.all_timestamped; speedup > 0.
// `format` ("jsonl", "mooncake") is only reported.
std::unique_ptr<RequestSource> MakeTraceSource(Trace trace, std::string path, std::string format,
                                               double rate, double speedup, uint64_t arrival_seed);

struct RunOptions {
  HttpUrl target;
  std::string model;             // used for requests without their own model
  std::string routing_strategy;  // sent as the `routing-strategy` header when not empty
  ClientOptions client;
  double duration_s = 0;                // stop dispatching at this arrival time; 0 = no limit
  uint64_t num_requests = 0;            // stop after this many; 0 = no limit
  int concurrency_limit = 256;          // most requests in flight
  std::vector<HttpUrl> engine_metrics;  // engines' /metrics for the prefix-cache hit rate
  double progress_interval_s = 1;       // progress line to stderr; 0 = none
};

class Runner {
 public:
  explicit Runner(RunOptions options);
  ~Runner();
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  // Runs the workload and returns the report (docs/loadgen.md lists its fields). Errors:
  // an engine's /metrics cannot be read or has no prefix-cache counters (before the run).
  // Failed requests are part of the report, not errors.
  absl::StatusOr<nlohmann::json> Run(RequestSource& source);

  // After Run: one JSON object per request, in arrival order, one per line (docs/loadgen.md,
  // `--records`): what the report's percentiles summarise, for finding who made a tail.
  std::string RecordsJsonLines() const;

  // Stop dispatching; in-flight requests finish and the report is produced.
  void RequestStop() { stop_.store(true); }
  // Abort in-flight requests too (they are reported as "canceled").
  void CancelInFlight() {
    stop_.store(true);
    cancel_.store(true);
  }

 private:
  struct Record {
    double scheduled_s = 0;  // arrival time
    double sent_s = 0;       // when a worker started it
    RequestResult result;
  };
  struct Job {
    RequestSpec spec;
    double sent_s = 0;
  };

  void WorkerLoop();
  void ProgressLoop(std::stop_token stop);
  double Elapsed() const;
  absl::StatusOr<std::vector<EngineCounters>> ScrapeEngines() const;
  nlohmann::json BuildReport(const RequestSource& source, double dispatch_s, double wall_s,
                             const std::vector<EngineCounters>& before,
                             const std::vector<absl::StatusOr<EngineCounters>>& after);

  // Constant after construction.
  const RunOptions options_;
  std::chrono::steady_clock::time_point start_;

  // Set from anywhere.
  std::atomic<bool> stop_{false};
  std::atomic<bool> cancel_{false};

  // Counters for the progress line.
  std::atomic<uint64_t> sent_{0};
  std::atomic<uint64_t> done_{0};
  std::atomic<uint64_t> failed_{0};

  // Guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // jobs queued or closing
  std::condition_variable done_cv_;  // a request finished
  std::deque<Job> queue_;
  int in_flight_ = 0;  // queued + running
  int idle_workers_ = 0;
  bool closing_ = false;
  std::vector<Record> records_;
  std::vector<std::thread> workers_;
  uint64_t dispatch_delayed_ = 0;
  double max_dispatch_lag_s_ = 0;
};

// The report as a human-readable block of text.
std::string ReportToText(const nlohmann::json& report);

}  // namespace aibrix::loadgen
