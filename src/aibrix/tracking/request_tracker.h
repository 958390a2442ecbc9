// aibrix::tracking::RequestTracker — the one object the server tells about request admission
// and completion; keeps, per model, a RequestTrace (GPU-optimizer input) and an
// OutputPredictor (output-length guesses for routing), both created on first use.
//
// Exactly-once is the caller's duty: call OnAdmitted once when a request is admitted and
// OnFinished once when it ends (any outcome). The natural place is next to Store::DoneRequest,
// which returns NotFound on a second call for the same request id — call OnFinished only when
// DoneRequest succeeded. A stray extra OnFinished cannot drive the pending count negative but
// does count an extra completion.
//
// The number of models is bounded (Options::max_models): once it is reached, calls for a new
// model are counted in ignored_model_calls() and otherwise ignored, and Predictor() returns
// nullptr for it. Models are never removed.
//
// Thread safety: every method may be called from any thread. Known models are found under a
// shared lock; a new model takes it exclusively once. Per-model objects are internally
// synchronised and live as long as the tracker, so returned pointers stay valid.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "aibrix/common/clock.h"
#include "aibrix/tracking/output_predictor.h"
#include "aibrix/tracking/request_trace.h"
#include "nlohmann/json.hpp"

namespace aibrix::tracking {

class RequestTracker {
 public:
  struct Options {
    size_t max_models = 1000;
    // Applied to every model's predictor; the seed is mixed with the model's creation order.
    OutputPredictor::Options predictor;
  };

  // One model's trace interval, as handed to a flusher.
  struct ModelTrace {
    std::string model;
    TraceSnapshot snapshot;
  };

  // `clock` is borrowed and must outlive the tracker.
  explicit RequestTracker(const common::Clock& clock);
  RequestTracker(const common::Clock& clock, Options options);
  RequestTracker(const RequestTracker&) = delete;
  RequestTracker& operator=(const RequestTracker&) = delete;
  ~RequestTracker();

  // A request for `model` was admitted (routed).
  void OnAdmitted(const std::string& model);
  // A request for `model` finished. With `output_tokens` the (input, output) pair goes into
  // the trace buckets and the predictor; without (error, cancel) only the counts change.
  void OnFinished(const std::string& model, int64_t input_tokens,
                  std::optional<int64_t> output_tokens);

  // The model's predictor (created if new); nullptr when the model limit is reached. Valid for
  // the tracker's lifetime.
  OutputPredictor* Predictor(const std::string& model);
  // The model's current trace interval in flushed form (RequestTrace::ToMap) as a JSON object;
  // JSON null for a model never seen.
  nlohmann::json TraceJson(const std::string& model) const;
  // For a flusher: takes every model's current interval and starts the next one. Models with
  // no admission or completion in the interval are left out. Sorted by model name.
  std::vector<ModelTrace> SwapTraces();

  // Calls ignored because the model limit was reached.
  int64_t ignored_model_calls() const { return ignored_.load(std::memory_order_relaxed); }
  size_t model_count() const;

 private:
  struct Model;
  // The model's entry, or nullptr if unknown.
  Model* Find(const std::string& model) const;
  // The model's entry, created if new; nullptr (and counted) when the limit is reached.
  Model* FindOrCreate(const std::string& model);

  // Constant after construction.
  const common::Clock& clock_;
  const Options options_;

  // std::shared_mutex rather than absl::Mutex so ThreadSanitizer sees it. Guards models_;
  // entries are never erased, so Model pointers outlive the lock.
  mutable std::shared_mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Model>> models_;

  std::atomic<int64_t> ignored_{0};
};

}  // namespace aibrix::tracking
