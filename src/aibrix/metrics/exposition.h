// A parser of the Prometheus text exposition format (0.0.4, and the OpenMetrics 1.0 text
// subset engines emit): what an engine's /metrics answers.
//
// Accepted: `# HELP` (ignored), `# TYPE name counter|gauge|histogram|summary|untyped|unknown`,
// other comments, blank lines, samples `name{label="value",...} value [timestamp]` with an
// optional trailing OpenMetrics exemplar (` # {...} v`, ignored), label values with the
// escapes \\, \" and \n, numbers with exponents, NaN, +Inf / -Inf, `\r\n` line ends, and
// `# EOF` (parsing stops there). Samples without a TYPE are untyped families of their own
// name. Histogram families group `_bucket` (by `le`), `_sum` and `_count` lines into one
// series per label set (without `le`), in any order; counter families take `x` or `x_total`
// samples (an OpenMetrics `# TYPE x counter` family is renamed `x_total`, the name
// prometheus_client's 0.0.4 output uses); `_created` samples are ignored; summaries are
// skipped (their quantile, `_sum` and `_count` lines are neither stored nor errors).
//
// Untrusted input: a line that does not parse is counted in `bad_lines` and skipped (the
// first such line's reason is kept for a log line); the rest of the body is used. Series past
// `max_series` are dropped and counted. The parse never allocates from a size read from
// the input.
//
// Only some families (ParseOptions::only_families): the samples of a family declared by a
// `# TYPE` line and not wanted are skipped as soon as their name is read (neither parsed nor
// validated further, so not counted as bad either); the family is kept, marked `skipped`,
// without series. A scrape needs only its engine's registered metrics: this skips the rest
// of the body at the cost of a name scan per line. Samples without a TYPE line are always
// parsed in full (so a body that is not an exposition is still rejected).
//
// Zero copy: names and label values are string_views into the body, except label values
// that contained escapes (decoded into storage owned by the ParsedBody). The body must
// outlive the ParsedBody.
//
// Thread safety: ParseExposition is a pure function; a ParsedBody is a value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"

namespace aibrix::metrics {

enum class MetricType { kCounter, kGauge, kHistogram, kSummary, kUntyped };
std::string_view MetricTypeName(MetricType type);

struct Label {
  std::string_view name;
  std::string_view value;
};

struct Bucket {
  double upper_bound = 0;  // +Inf for the last one
  double count = 0;        // cumulative
};

// One series of a family: its label set and its value (counter, gauge, untyped) or its
// histogram (sum, count, cumulative buckets in the order they appeared).
struct Series {
  uint32_t labels_begin = 0;  // [begin, end) in ParsedBody::labels(); `le` excluded
  uint32_t labels_end = 0;
  double value = 0;
  double sum = 0;
  double count = 0;
  std::vector<Bucket> buckets;
};

struct Family {
  std::string_view name;
  MetricType type = MetricType::kUntyped;
  bool skipped = false;        // not in ParseOptions::only_families: no series
  std::vector<Series> series;  // empty for summaries
};

struct ParseOptions {
  size_t max_bytes = 16 << 20;  // larger bodies are rejected whole
  size_t max_series = 100000;   // series past this are dropped (counted)
  // When set, the families to parse: a family whose TYPE line names one not listed here (for
  // a counter: neither its name nor its name + `_total`) is skipped. Null: every family.
  const absl::flat_hash_set<std::string_view>* only_families = nullptr;
};

class ParsedBody {
 public:
  ParsedBody() = default;
  ParsedBody(ParsedBody&&) = default;
  ParsedBody& operator=(ParsedBody&&) = default;

  const std::vector<Family>& families() const { return families_; }
  // The family named `name` (for counters also found by their `_total` name), or null.
  const Family* Find(std::string_view name) const;
  std::span<const Label> labels(const Series& series) const {
    return {labels_.data() + series.labels_begin, series.labels_end - series.labels_begin};
  }
  // The value of label `name` of `series`; nullopt when the series has no such label.
  std::optional<std::string_view> LabelValue(const Series& series, std::string_view name) const;

  size_t bad_lines() const { return bad_lines_; }
  size_t dropped_series() const { return dropped_series_; }
  size_t series_count() const { return series_count_; }
  // Sample lines of skipped families (ParseOptions::only_families).
  size_t skipped_lines() const { return skipped_lines_; }
  // "line N: reason" of the first bad line, empty when none.
  const std::string& first_error() const { return first_error_; }

 private:
  friend class ExpositionParser;
  std::vector<Family> families_;
  std::vector<Label> labels_;
  std::deque<std::string> unescaped_;  // label values that held escapes (stable addresses)
  absl::flat_hash_map<std::string_view, uint32_t> index_;  // family name -> index
  size_t bad_lines_ = 0;
  size_t dropped_series_ = 0;
  size_t series_count_ = 0;
  size_t skipped_lines_ = 0;
  std::string first_error_;
};

// Parses `body`. ResourceExhausted when the body is over options.max_bytes; InvalidArgument
// when it has bad lines and not one good sample (not an exposition at all: an HTML page, a
// binary). Otherwise the parsed families, with bad lines counted.
absl::StatusOr<ParsedBody> ParseExposition(std::string_view body, const ParseOptions& options = {});
// Not from a temporary string: it would die before the ParsedBody that points into it.
template <typename String, typename = std::enable_if_t<std::is_same_v<String, std::string>>>
absl::StatusOr<ParsedBody> ParseExposition(String&& body,
                                           const ParseOptions& options = {}) = delete;

// True when `series` has every label of `with` (same name, same value).
bool HasLabels(const ParsedBody& body, const Series& series, std::initializer_list<Label> with);

// Which number of a series SumSeries adds: the sample's value (counter, gauge, untyped), or
// a histogram's `_sum` or `_count`.
enum class SeriesField { kValue, kSum, kCount };

// The sum of `field` over the series of family `name` (a counter also by its `_total` name)
// that have every label of `with`; nullopt when no series matches. For readers of a whole
// /metrics text (tools, benchmarks, tests) that want one number out of it.
std::optional<double> SumSeries(const ParsedBody& body, std::string_view name,
                                std::initializer_list<Label> with = {},
                                SeriesField field = SeriesField::kValue);

}  // namespace aibrix::metrics
