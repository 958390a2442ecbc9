// Statistics for loadgen: latency summaries (percentiles), the engines' prefix-cache
// counters read from Prometheus text, and the Server-Sent Events parser used on streams.
//
// Thread safety: pure functions; an `SseParser` belongs to one request (one thread).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace aibrix::loadgen {

// The q-quantile (0 <= q <= 1) of ascending `sorted` values, interpolating linearly between
// the two closest ranks (numpy's default). 0 for an empty input.
double Percentile(const std::vector<double>& sorted, double q);

struct Summary {
  size_t count = 0;
  double mean = 0;
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
  double max = 0;
};

// Summary of `values` (any order). All zero when empty.
Summary Summarize(std::vector<double> values);
// {"count", "mean", "p50", "p90", "p99", "max"}, each value multiplied by `scale`.
nlohmann::json SummaryToJson(const Summary& s, double scale);

// A latency histogram's running totals: seconds summed over `count` requests.
struct TimeTotals {
  double seconds = 0;
  double count = 0;
};

// The counters of one engine's /metrics that a run reports as deltas.
struct EngineCounters {
  // Prefix cache: prompt tokens looked up and found cached.
  double queries = 0;
  double hits = 0;
  // Per request, waiting to be scheduled and then prefilling up to the first token
  // (vllm:request_queue_time_seconds, vllm:request_prefill_time_seconds); nullopt when the
  // engine does not export them.
  std::optional<TimeTotals> queue;
  std::optional<TimeTotals> prefill;
};

// Sums `vllm:prefix_cache_queries_total` and `vllm:prefix_cache_hits_total` over all their
// series (label sets) in Prometheus text, falling back to the deprecated
// `vllm:gpu_prefix_cache_*` names when the new ones are absent, and the sums and counts of
// the two time histograms (families with a `# TYPE ... histogram` line). Parsed by the
// service's exposition parser. NotFound when neither prefix-cache pair is there,
// InvalidArgument when the text has a line that does not parse.
absl::StatusOr<EngineCounters> ParseEngineCounters(std::string_view text);

// hits/queries of the difference `after - before`; nullopt when no tokens were looked up
// or a counter went backwards (the engine restarted during the run).
std::optional<double> HitRateDelta(const EngineCounters& before, const EngineCounters& after);

// Mean seconds per request of the difference `after - before`; nullopt when either side is
// missing, no request was counted, or a total went backwards.
std::optional<double> MeanDelta(const std::optional<TimeTotals>& before,
                                const std::optional<TimeTotals>& after);

// Incremental Server-Sent Events parser: feed bytes as they arrive; `on_data` is called once
// per complete event with its data (multi-line data joined by '\n'). Comments and other
// fields are ignored; "\r\n" line ends are accepted.
class SseParser {
 public:
  // Returning false from `on_data` stops the parse; Feed then returns false.
  using DataCallback = std::function<bool(std::string_view data)>;
  explicit SseParser(DataCallback on_data) : on_data_(std::move(on_data)) {}

  bool Feed(std::string_view bytes);
  // Bytes of an event not yet terminated by a blank line.
  size_t pending_bytes() const { return line_.size() + data_.size(); }

 private:
  bool Line(std::string_view line);

  DataCallback on_data_;
  std::string line_;  // the current unterminated line
  std::string data_;  // data of the current event so far
  bool has_data_ = false;
};

}  // namespace aibrix::loadgen
