#include "stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "aibrix/common/status_macros.h"
#include "aibrix/metrics/exposition.h"
#include "fmt/format.h"

namespace aibrix::loadgen {

double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  q = std::clamp(q, 0.0, 1.0);
  const double rank = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

Summary Summarize(std::vector<double> values) {
  Summary s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  s.count = values.size();
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(s.count);
  s.p50 = Percentile(values, 0.50);
  s.p90 = Percentile(values, 0.90);
  s.p99 = Percentile(values, 0.99);
  s.max = values.back();
  return s;
}

nlohmann::json SummaryToJson(const Summary& s, double scale) {
  return {{"count", s.count},     {"mean", s.mean * scale}, {"p50", s.p50 * scale},
          {"p90", s.p90 * scale}, {"p99", s.p99 * scale},   {"max", s.max * scale}};
}

absl::StatusOr<EngineCounters> ParseEngineCounters(std::string_view text) {
  // The service's parser of engine /metrics (fuzzed); a body with bad lines is refused
  // rather than summed in part.
  ASSIGN_OR_RETURN(const metrics::ParsedBody body, metrics::ParseExposition(text));
  if (body.bad_lines() > 0) {
    return absl::InvalidArgumentError(fmt::format("{} bad lines in the engine's metrics ({})",
                                                  body.bad_lines(), body.first_error()));
  }
  EngineCounters counters;
  bool found = false;
  for (std::string_view prefix : {"vllm:prefix_cache_", "vllm:gpu_prefix_cache_"}) {
    const auto queries = metrics::SumSeries(body, fmt::format("{}queries_total", prefix));
    const auto hits = metrics::SumSeries(body, fmt::format("{}hits_total", prefix));
    if (queries.has_value() && hits.has_value()) {
      counters.queries = *queries;
      counters.hits = *hits;
      found = true;
      break;
    }
  }
  if (!found) {
    return absl::NotFoundError(
        "no vllm:prefix_cache_queries_total / vllm:prefix_cache_hits_total in the metrics");
  }
  const auto totals = [&body](std::string_view histogram) -> std::optional<TimeTotals> {
    const auto seconds = metrics::SumSeries(body, histogram, {}, metrics::SeriesField::kSum);
    const auto count = metrics::SumSeries(body, histogram, {}, metrics::SeriesField::kCount);
    if (!seconds.has_value() || !count.has_value()) return std::nullopt;
    return TimeTotals{*seconds, *count};
  };
  counters.queue = totals("vllm:request_queue_time_seconds");
  counters.prefill = totals("vllm:request_prefill_time_seconds");
  return counters;
}

std::optional<double> MeanDelta(const std::optional<TimeTotals>& before,
                                const std::optional<TimeTotals>& after) {
  if (!before.has_value() || !after.has_value()) return std::nullopt;
  const double seconds = after->seconds - before->seconds;
  const double count = after->count - before->count;
  if (count <= 0 || seconds < 0) return std::nullopt;
  return seconds / count;
}

std::optional<double> HitRateDelta(const EngineCounters& before, const EngineCounters& after) {
  const double queries = after.queries - before.queries;
  const double hits = after.hits - before.hits;
  if (queries <= 0 || hits < 0) return std::nullopt;
  return hits / queries;
}

bool SseParser::Feed(std::string_view bytes) {
  while (!bytes.empty()) {
    const size_t nl = bytes.find('\n');
    if (nl == std::string_view::npos) {
      line_.append(bytes);
      return true;
    }
    bool ok;
    if (line_.empty()) {
      ok = Line(bytes.substr(0, nl));
    } else {
      line_.append(bytes.substr(0, nl));
      ok = Line(line_);
      line_.clear();
    }
    bytes.remove_prefix(nl + 1);
    if (!ok) return false;
  }
  return true;
}

bool SseParser::Line(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) {  // end of event
    if (!has_data_) return true;
    has_data_ = false;
    std::string data = std::move(data_);
    data_.clear();
    return on_data_(data);
  }
  if (!line.starts_with("data:")) return true;  // comment, event:, id:, retry:
  std::string_view value = line.substr(5);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (has_data_) data_ += '\n';
  data_.append(value);
  has_data_ = true;
  return true;
}

}  // namespace aibrix::loadgen
