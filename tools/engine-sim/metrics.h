// EngineMetrics: the vLLM V1 metric families engine-sim exports at /metrics, rendered in
// prometheus_client's text layout (protocols/README.md §4.1, vectors/metrics): labels
// sorted by name (engine, [finished_reason|le|sleep_state], model_name), Python-style
// numbers ("3.0", "0.0421875", "+Inf"), histogram buckets in vLLM's bounds. `_created`
// series are omitted (as in vLLM's multiprocess mode).
// Besides vLLM's families it exports `vllm:cpu_cache_usage_perc` (always 0: no CPU tier),
// `vllm:num_requests_success_total` (the name AIBrix's registry reads) and xLLM's
// `engine_utilization` (the busy ratio).
//
// Durations are observed in simulated seconds (real time multiplied by --time-scale).
//
// Thread safety: none; the engine guards an instance with its mutex.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace aibrix::enginesim {

// A Prometheus number as prometheus_client writes it.
std::string FormatPromValue(double v);

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);
  void Reset();
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }
  // Appends HELP/TYPE and the _bucket/_count/_sum series of `name`. `engine` and `model`
  // are the label values.
  void Render(std::string* out, std::string_view name, std::string_view help,
              std::string_view engine, std::string_view model) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; last = +Inf
  uint64_t count_ = 0;
  double sum_ = 0;
};

// The fraction of a trailing window of (real) time the engine spent executing steps — the
// busy ratio a GPU monitor would report — from the steps' [start, end) intervals. Adjacent
// or overlapping intervals are merged, so back-to-back steps cost one entry.
class BusyWindow {
 public:
  using Time = std::chrono::steady_clock::time_point;
  explicit BusyWindow(std::chrono::steady_clock::duration window) : window_(window) {}
  // Records a step over [start, end); `end` may lie in the future (a step still running).
  // REQUIRES: start is not before the start of the previous call.
  void Add(Time start, Time end);
  // Busy time within [now − window, now] divided by the window: 0..1.
  double Utilization(Time now) const;
  void Reset() { intervals_.clear(); }

 private:
  const std::chrono::steady_clock::duration window_;
  std::deque<std::pair<Time, Time>> intervals_;  // sorted, disjoint
};

// Gauge values the engine reads from its live state at scrape time.
struct EngineGauges {
  int num_running = 0;
  int num_waiting = 0;
  double kv_cache_usage = 0;
  double utilization = 0;  // BusyWindow over the last second
  int block_size = 0;
  int num_gpu_blocks = 0;
};

enum class FinishReason { kStop = 0, kLength = 1, kAbort = 2 };
std::string_view FinishReasonName(FinishReason r);

struct EngineMetrics {
  explicit EngineMetrics(int max_model_len);
  void Reset();
  // Appends the whole exposition.
  void Render(std::string* out, const EngineGauges& gauges, std::string_view engine,
              std::string_view model) const;

  // Counters.
  uint64_t prompt_tokens = 0;
  uint64_t generation_tokens = 0;
  uint64_t prefix_cache_queries = 0;  // prompt tokens looked up in the prefix cache
  uint64_t prefix_cache_hits = 0;     // of which found cached
  uint64_t preemptions = 0;
  std::array<uint64_t, 3> request_success{};  // by FinishReason

  // Histograms (seconds are simulated seconds).
  Histogram time_to_first_token;
  Histogram inter_token_latency;  // also exported as the older time_per_output_token
  Histogram request_time_per_output_token;
  Histogram e2e_request_latency;
  Histogram request_queue_time;
  Histogram request_inference_time;
  Histogram request_prefill_time;
  Histogram request_decode_time;
  Histogram request_prompt_tokens;
  Histogram request_generation_tokens;
  Histogram request_params_max_tokens;
  Histogram request_max_num_generation_tokens;
  Histogram request_params_n;
  Histogram iteration_tokens;
};

}  // namespace aibrix::enginesim
