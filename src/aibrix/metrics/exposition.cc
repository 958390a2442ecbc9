#include "aibrix/metrics/exposition.h"

#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>

#include "aibrix/common/utf8.h"
#include "fmt/format.h"

namespace aibrix::metrics {

std::string_view MetricTypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
    case MetricType::kSummary:
      return "summary";
    case MetricType::kUntyped:
      return "untyped";
  }
  return "untyped";
}

const Family* ParsedBody::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &families_[it->second];
}

std::optional<std::string_view> ParsedBody::LabelValue(const Series& series,
                                                       std::string_view name) const {
  for (const Label& label : labels(series)) {
    if (label.name == name) return label.value;
  }
  return std::nullopt;
}

bool HasLabels(const ParsedBody& body, const Series& series, std::initializer_list<Label> with) {
  for (const Label& wanted : with) {
    if (body.LabelValue(series, wanted.name) != wanted.value) return false;
  }
  return true;
}

std::optional<double> SumSeries(const ParsedBody& body, std::string_view name,
                                std::initializer_list<Label> with, SeriesField field) {
  const Family* family = body.Find(name);
  if (family == nullptr) return std::nullopt;
  std::optional<double> sum;
  for (const Series& series : family->series) {
    if (!HasLabels(body, series, with)) continue;
    const double value = field == SeriesField::kSum     ? series.sum
                         : field == SeriesField::kCount ? series.count
                                                        : series.value;
    sum = sum.value_or(0) + value;
  }
  return sum;
}

namespace {

constexpr uint32_t kNone = ~uint32_t{0};

// Character classes by table: names are scanned a character at a time on the hot path.
enum : uint8_t {
  kMetricStart = 1,
  kMetricChar = 2,
  kLabelStart = 4,
  kLabelChar = 8,
};
constexpr std::array<uint8_t, 256> kCharClass = [] {
  std::array<uint8_t, 256> table{};
  for (int c = 0; c < 256; ++c) {
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    const bool digit = c >= '0' && c <= '9';
    uint8_t bits = 0;
    if (alpha || c == '_' || c == ':') bits |= kMetricStart | kMetricChar;
    if (digit) bits |= kMetricChar | kLabelChar;
    if (alpha || c == '_') bits |= kLabelStart | kLabelChar;
    table[static_cast<size_t>(c)] = bits;
  }
  return table;
}();
bool Is(char c, uint8_t cls) { return (kCharClass[static_cast<unsigned char>(c)] & cls) != 0; }

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsBlank(char c) { return c == ' ' || c == '\t'; }
bool IsMetricNameStart(char c) { return Is(c, kMetricStart); }
bool IsMetricNameChar(char c) { return Is(c, kMetricChar); }
bool IsLabelNameStart(char c) { return Is(c, kLabelStart); }
bool IsLabelNameChar(char c) { return Is(c, kLabelChar); }

// Plain decimals ("3.0", "-0.25", "1024") of at most 15 significant digits and 22
// fraction digits, the bulk of every body: the digits as an integer (exact below 2^53)
// divided by an exact power of ten, which IEEE division rounds correctly. nullopt for
// anything else (exponents, Inf, NaN, longer numbers), which from_chars then reads.
std::optional<double> ParsePlainDecimal(std::string_view token) {
  static constexpr double kPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                      1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                      1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
  size_t i = 0;
  const bool negative = !token.empty() && token[0] == '-';
  if (negative) ++i;
  uint64_t mantissa = 0;
  int digits = 0;
  int fraction = -1;  // digits after the point; -1 before it
  const size_t start = i;
  for (; i < token.size(); ++i) {
    const char c = token[i];
    if (c == '.') {
      if (fraction >= 0) return std::nullopt;
      fraction = 0;
      continue;
    }
    if (!IsDigit(c)) return std::nullopt;
    if (mantissa != 0 || c != '0') ++digits;
    mantissa = mantissa * 10 + static_cast<uint64_t>(c - '0');
    if (fraction >= 0) ++fraction;
    if (digits > 15 || fraction > 22) return std::nullopt;
  }
  // At least one digit, and not a lone point.
  if (i == start || (fraction >= 0 && i - start == 1)) return std::nullopt;
  double value = static_cast<double>(mantissa);
  if (mantissa != 0 && fraction > 0) value /= kPow10[fraction];  // "0.0", "12": no division
  return negative ? -value : value;
}

// A float as Go's strconv.ParseFloat reads exposition values: optional sign, decimal with
// exponent, Inf / Infinity / NaN in any case. Out-of-range values are errors.
std::optional<double> ParseNumber(std::string_view token) {
  if (auto plain = ParsePlainDecimal(token)) return plain;
  if (token == "+Inf") return std::numeric_limits<double>::infinity();  // every last bucket
  if (!token.empty() && token.front() == '+') {
    token.remove_prefix(1);
    if (!token.empty() && (token.front() == '-' || token.front() == '+')) return std::nullopt;
  }
  if (token.empty()) return std::nullopt;
  double value = 0;
  const auto [end, ec] = std::from_chars(token.data(), token.data() + token.size(), value);
  if (ec != std::errc() || end != token.data() + token.size()) return std::nullopt;
  return value;
}

}  // namespace

class ExpositionParser {
 public:
  ExpositionParser(const ParseOptions& options, ParsedBody& out) : options_(options), out_(out) {}

  void Run(std::string_view body) {
    // Sized from the body (vLLM's: about one label per 40 bytes, one family per 250) so the
    // vectors seldom regrow while parsing; never more than the body could hold.
    out_.labels_.reserve(body.size() / 40);
    out_.families_.reserve(body.size() / 250);
    out_.index_.reserve(body.size() / 250);
    size_t at = 0;
    while (at < body.size() && !eof_) {
      const char* nl =
          static_cast<const char*>(std::memchr(body.data() + at, '\n', body.size() - at));
      const size_t end = nl == nullptr ? body.size() : static_cast<size_t>(nl - body.data());
      ++line_no_;
      Line(body.substr(at, end - at));
      at = end + 1;
    }
  }

  size_t good_lines() const { return good_lines_; }

 private:
  enum class Role { kValue, kBucket, kSum, kCount, kIgnore };

  void Bad(std::string_view reason) {
    ++out_.bad_lines_;
    if (out_.first_error_.empty()) out_.first_error_ = fmt::format("line {}: {}", line_no_, reason);
  }

  void Line(std::string_view line) {
    while (!line.empty() && (IsBlank(line.back()) || line.back() == '\r')) line.remove_suffix(1);
    while (!line.empty() && IsBlank(line.front())) line.remove_prefix(1);
    if (line.empty()) return;
    if (line.front() == '#') {
      Comment(line);
    } else {
      Sample(line);
    }
  }

  static std::string_view Word(std::string_view& rest) {
    while (!rest.empty() && IsBlank(rest.front())) rest.remove_prefix(1);
    size_t n = 0;
    while (n < rest.size() && !IsBlank(rest[n])) ++n;
    std::string_view word = rest.substr(0, n);
    rest.remove_prefix(n);
    return word;
  }

  static bool ValidMetricName(std::string_view name) {
    if (name.empty() || !IsMetricNameStart(name.front())) return false;
    for (char c : name) {
      if (!IsMetricNameChar(c)) return false;
    }
    return true;
  }

  void Comment(std::string_view line) {
    if (line == "# EOF") {
      eof_ = true;
      return;
    }
    std::string_view rest = line.substr(1);
    const std::string_view keyword = Word(rest);
    if (keyword != "TYPE") return;  // HELP, UNIT and free comments carry nothing we use
    const std::string_view name = Word(rest);
    const std::string_view type_word = Word(rest);
    if (!ValidMetricName(name)) return Bad("TYPE with an invalid metric name");
    if (!Word(rest).empty()) return Bad("TYPE line with trailing text");
    MetricType type;
    if (type_word == "counter") {
      type = MetricType::kCounter;
    } else if (type_word == "gauge") {
      type = MetricType::kGauge;
    } else if (type_word == "histogram") {
      type = MetricType::kHistogram;
    } else if (type_word == "summary") {
      type = MetricType::kSummary;
    } else if (type_word == "untyped" || type_word == "unknown") {
      type = MetricType::kUntyped;
    } else {
      return Bad("TYPE with an unknown type");
    }
    if (out_.index_.contains(name))
      return Bad("second TYPE for a family, or TYPE after its samples");
    current_ = AddFamily(name, type);
    out_.families_[current_].skipped = !Wanted(name, type);
    ++good_lines_;
  }

  // Whether family `name` of `type` is to be parsed (ParseOptions::only_families).
  bool Wanted(std::string_view name, MetricType type) const {
    const auto* only = options_.only_families;
    if (only == nullptr || only->contains(name)) return true;
    if (type != MetricType::kCounter) return false;
    // An OpenMetrics counter family is named without the `_total` its samples carry.
    static constexpr std::string_view kTotal = "_total";
    std::array<char, 256> buffer;
    if (name.size() + kTotal.size() > buffer.size()) return true;  // parsed: never wrong
    std::memcpy(buffer.data(), name.data(), name.size());
    std::memcpy(buffer.data() + name.size(), kTotal.data(), kTotal.size());
    return only->contains(std::string_view(buffer.data(), name.size() + kTotal.size()));
  }

  uint32_t AddFamily(std::string_view name, MetricType type) {
    const auto index = static_cast<uint32_t>(out_.families_.size());
    out_.families_.push_back(Family{name, type, false, {}});
    out_.index_.emplace(name, index);
    return index;
  }

  // The role of sample `name` in family `index`, or nullopt when it is not one of its names.
  std::optional<Role> Match(uint32_t index, std::string_view name) {
    Family& family = out_.families_[index];
    if (name == family.name) {
      switch (family.type) {
        case MetricType::kHistogram:
          return std::nullopt;
        case MetricType::kSummary:
          return Role::kIgnore;  // quantile lines
        default:
          return Role::kValue;
      }
    }
    if (name.size() <= family.name.size() || name.substr(0, family.name.size()) != family.name) {
      return std::nullopt;
    }
    const std::string_view suffix = name.substr(family.name.size());
    switch (family.type) {
      case MetricType::kHistogram:
        if (suffix == "_bucket") return Role::kBucket;
        if (suffix == "_sum") return Role::kSum;
        if (suffix == "_count") return Role::kCount;
        if (suffix == "_created") return Role::kIgnore;
        return std::nullopt;
      case MetricType::kSummary:
        if (suffix == "_sum" || suffix == "_count" || suffix == "_created") return Role::kIgnore;
        return std::nullopt;
      case MetricType::kCounter:
        if (suffix == "_total") {
          // OpenMetrics names the family without _total; keep the name samples carry.
          family.name = name;
          out_.index_.emplace(name, index);
          return Role::kValue;
        }
        if (suffix == "_created") return Role::kIgnore;
        return std::nullopt;
      default:
        return std::nullopt;
    }
  }

  // The family and role of sample `name`; family kNone when no family has that name.
  std::pair<uint32_t, std::optional<Role>> Lookup(std::string_view name) {
    if (current_ != kNone) {
      if (auto role = Match(current_, name)) return {current_, role};
    }
    if (auto it = out_.index_.find(name); it != out_.index_.end()) {
      return {it->second, Match(it->second, name)};
    }
    for (std::string_view suffix : {"_bucket", "_sum", "_count", "_total", "_created"}) {
      if (name.size() <= suffix.size() || name.substr(name.size() - suffix.size()) != suffix) {
        continue;
      }
      auto it = out_.index_.find(name.substr(0, name.size() - suffix.size()));
      if (it == out_.index_.end()) continue;
      if (auto role = Match(it->second, name)) return {it->second, role};
    }
    return {kNone, std::nullopt};
  }

  // Lookup, adding an untyped family for an unknown name.
  std::pair<uint32_t, std::optional<Role>> Resolve(std::string_view name) {
    auto found = Lookup(name);
    if (found.first == kNone) return {AddFamily(name, MetricType::kUntyped), Role::kValue};
    return found;
  }

  // Parses `{...}` at the start of `rest` into out_.labels_; false (with Bad) on error.
  bool Labels(std::string_view& rest) {
    const size_t first = out_.labels_.size();
    rest.remove_prefix(1);  // '{'
    while (true) {
      while (!rest.empty() && IsBlank(rest.front())) rest.remove_prefix(1);
      if (rest.empty()) return Bad("unterminated label set"), false;
      if (rest.front() == '}') {
        rest.remove_prefix(1);
        return true;
      }
      if (!IsLabelNameStart(rest.front())) return Bad("invalid label name"), false;
      size_t n = 1;
      while (n < rest.size() && IsLabelNameChar(rest[n])) ++n;
      const std::string_view label_name = rest.substr(0, n);
      rest.remove_prefix(n);
      while (!rest.empty() && IsBlank(rest.front())) rest.remove_prefix(1);
      if (rest.empty() || rest.front() != '=') return Bad("expected '=' after a label name"), false;
      rest.remove_prefix(1);
      while (!rest.empty() && IsBlank(rest.front())) rest.remove_prefix(1);
      if (rest.empty() || rest.front() != '"') return Bad("expected a quoted label value"), false;
      rest.remove_prefix(1);
      std::string_view value;
      if (!LabelValue(rest, value)) return false;
      if (!common::IsValidUtf8(value)) return Bad("label value is not valid UTF-8"), false;
      for (size_t i = first; i < out_.labels_.size(); ++i) {
        if (out_.labels_[i].name == label_name) return Bad("duplicate label name"), false;
      }
      out_.labels_.push_back(Label{label_name, value});
      while (!rest.empty() && IsBlank(rest.front())) rest.remove_prefix(1);
      if (rest.empty()) return Bad("unterminated label set"), false;
      if (rest.front() == ',') {
        rest.remove_prefix(1);
      } else if (rest.front() != '}') {
        return Bad("expected ',' or '}' after a label value"), false;
      }
    }
  }

  // Reads a label value after its opening quote, through the closing quote.
  bool LabelValue(std::string_view& rest, std::string_view& value) {
    // Most values hold no escape: the closing quote is the first quote.
    if (const void* quote = std::memchr(rest.data(), '"', rest.size())) {
      const size_t end = static_cast<size_t>(static_cast<const char*>(quote) - rest.data());
      if (std::memchr(rest.data(), '\\', end) == nullptr) {
        value = rest.substr(0, end);
        rest.remove_prefix(end + 1);
        return true;
      }
    }
    size_t n = 0;
    bool escaped = false;
    while (n < rest.size() && rest[n] != '"') {
      if (rest[n] == '\\') {
        escaped = true;
        n += 2;
      } else {
        ++n;
      }
    }
    if (n >= rest.size()) return Bad("unterminated label value"), false;
    const std::string_view raw = rest.substr(0, n);
    rest.remove_prefix(n + 1);
    if (!escaped) {
      value = raw;
      return true;
    }
    std::string decoded;
    decoded.reserve(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] != '\\') {
        decoded.push_back(raw[i]);
        continue;
      }
      switch (raw[++i]) {  // the scan above guarantees a character after each backslash
        case '\\':
          decoded.push_back('\\');
          break;
        case '"':
          decoded.push_back('"');
          break;
        case 'n':
          decoded.push_back('\n');
          break;
        default:
          return Bad("invalid escape in a label value"), false;
      }
    }
    value = out_.unescaped_.emplace_back(std::move(decoded));
    return true;
  }

  void Sample(std::string_view line) {
    const size_t mark = out_.labels_.size();
    size_t n = 0;
    // Samples mostly follow their family's TYPE line or its previous sample: the family's name
    // (already checked) is skipped with one comparison, not scanned a character at a time.
    if (current_ != kNone) {
      const std::string_view known = out_.families_[current_].name;
      if (line.size() >= known.size() && std::memcmp(line.data(), known.data(), known.size()) == 0)
        n = known.size();
    }
    while (n < line.size() && IsMetricNameChar(line[n])) ++n;
    const std::string_view name = line.substr(0, n);  // metric-name characters only
    if (name.empty() || !IsMetricNameStart(name.front())) return Bad("invalid metric name");
    // With only_families the family is looked up before the labels (to skip them), and that
    // lookup is kept for below; without, only a good line is looked up.
    std::pair<uint32_t, std::optional<Role>> found{kNone, std::nullopt};
    if (options_.only_families != nullptr) {
      found = Lookup(name);
      if (found.second && out_.families_[found.first].skipped) {
        current_ = found.first;
        ++out_.skipped_lines_;
        return;
      }
    }
    std::string_view rest = line.substr(n);
    while (!rest.empty() && IsBlank(rest.front())) rest.remove_prefix(1);
    if (!rest.empty() && rest.front() == '{') {
      if (!Labels(rest)) {
        out_.labels_.resize(mark);
        return;
      }
    }
    const auto fail = [&](std::string_view reason) {
      out_.labels_.resize(mark);
      Bad(reason);
    };
    const std::string_view value_token = Word(rest);
    const std::optional<double> value = ParseNumber(value_token);
    if (!value) return fail(value_token.empty() ? "missing value" : "invalid value");
    const std::string_view timestamp = Word(rest);
    if (!timestamp.empty() && timestamp.front() != '#') {
      if (!ParseNumber(timestamp)) return fail("invalid timestamp");
      const std::string_view extra = Word(rest);
      if (!extra.empty() && extra.front() != '#') return fail("trailing text after the timestamp");
    }
    const auto [index, role] = found.first != kNone ? found : Resolve(name);
    if (!role) return fail("sample name does not fit its family's type");
    current_ = index;
    switch (*role) {
      case Role::kIgnore:
        out_.labels_.resize(mark);
        break;
      case Role::kValue: {
        Series* series = NewSeries(index, mark);
        if (series != nullptr) series->value = *value;
        break;
      }
      case Role::kBucket: {
        std::optional<double> bound;
        for (size_t i = mark; i < out_.labels_.size(); ++i) {
          if (out_.labels_[i].name != "le") continue;
          bound = ParseNumber(out_.labels_[i].value);
          if (!bound || std::isnan(*bound)) return fail("invalid histogram bucket bound");
          out_.labels_.erase(out_.labels_.begin() + static_cast<ptrdiff_t>(i));
          break;
        }
        if (!bound) return fail("histogram bucket without 'le'");
        Series* series = HistogramSeries(index, mark);
        if (series != nullptr) series->buckets.push_back(Bucket{*bound, *value});
        break;
      }
      case Role::kSum:
      case Role::kCount: {
        Series* series = HistogramSeries(index, mark);
        if (series == nullptr) break;
        (*role == Role::kSum ? series->sum : series->count) = *value;
        break;
      }
    }
    ++good_lines_;
  }

  Series* NewSeries(uint32_t index, size_t mark) {
    if (out_.series_count_ >= options_.max_series) {
      ++out_.dropped_series_;
      out_.labels_.resize(mark);
      return nullptr;
    }
    ++out_.series_count_;
    Family& family = out_.families_[index];
    Series& series = family.series.emplace_back();
    if (family.type == MetricType::kHistogram) series.buckets.reserve(32);
    series.labels_begin = static_cast<uint32_t>(mark);
    series.labels_end = static_cast<uint32_t>(out_.labels_.size());
    return &series;
  }

  bool SameLabels(const Series& series, size_t mark) const {
    const size_t count = out_.labels_.size() - mark;
    if (series.labels_end - series.labels_begin != count) return false;
    const Label* a = out_.labels_.data() + series.labels_begin;
    const Label* b = out_.labels_.data() + mark;
    bool in_order = true;
    for (size_t i = 0; i < count && in_order; ++i) {
      in_order = a[i].name == b[i].name && a[i].value == b[i].value;
    }
    if (in_order) return true;
    for (size_t i = 0; i < count; ++i) {
      bool found = false;
      for (size_t j = 0; j < count && !found; ++j) {
        found = a[j].name == b[i].name && a[j].value == b[i].value;
      }
      if (!found) return false;
    }
    return true;
  }

  // The series of histogram family `index` with the label set parsed at `mark` (which is
  // then released), or a new one.
  Series* HistogramSeries(uint32_t index, size_t mark) {
    auto& series = out_.families_[index].series;
    for (auto it = series.rbegin(); it != series.rend(); ++it) {
      if (SameLabels(*it, mark)) {
        out_.labels_.resize(mark);
        return &*it;
      }
    }
    return NewSeries(index, mark);
  }

  const ParseOptions& options_;
  ParsedBody& out_;
  uint32_t current_ = kNone;  // the family of the last TYPE line or sample
  size_t line_no_ = 0;
  size_t good_lines_ = 0;
  bool eof_ = false;
};

absl::StatusOr<ParsedBody> ParseExposition(std::string_view body, const ParseOptions& options) {
  if (body.size() > options.max_bytes) {
    return absl::ResourceExhaustedError(fmt::format(
        "metrics body of {} bytes is over the limit of {}", body.size(), options.max_bytes));
  }
  ParsedBody out;
  ExpositionParser parser(options, out);
  parser.Run(body);
  if (out.bad_lines() > 0 && parser.good_lines() == 0) {
    return absl::InvalidArgumentError(fmt::format("not a Prometheus exposition ({} bad lines; {})",
                                                  out.bad_lines(), out.first_error()));
  }
  return out;
}

}  // namespace aibrix::metrics
