#include "aibrix/common/env.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace aibrix::common {

std::optional<std::string> EnvString(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

absl::StatusOr<std::optional<EnvValue>> EnvAny(std::initializer_list<const char*> names,
                                               EnvSameValue same) {
  std::optional<EnvValue> found;
  for (const char* name : names) {
    std::optional<std::string> value = EnvString(name);
    if (!value) continue;
    if (!found) {
      found = EnvValue{name, std::move(*value)};
    } else if (same != nullptr ? !same(found->value, *value) : found->value != *value) {
      return absl::InvalidArgumentError(
          fmt::format("{}={} and {}={}: two spellings of one setting disagree (set one of them)",
                      found->name, found->value, name, *value));
    }
  }
  return found;
}

std::optional<double> ParseFiniteNumber(std::string_view text) {
  const std::string copy(text);  // strtod needs a terminated string
  char* end = nullptr;
  const double value = std::strtod(copy.c_str(), &end);
  if (copy.empty() || end != copy.c_str() + copy.size() || !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

std::optional<bool> ParseGoBool(std::string_view text) {
  for (std::string_view yes : {"1", "t", "T", "TRUE", "true", "True"}) {
    if (text == yes) return true;
  }
  for (std::string_view no : {"0", "f", "F", "FALSE", "false", "False"}) {
    if (text == no) return false;
  }
  return std::nullopt;
}

std::optional<int64_t> ParsePositiveInt(std::string_view text) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value <= 0) {
    return std::nullopt;
  }
  return value;
}

namespace {

// Nanoseconds per Go duration unit; 0 for an unknown unit.
int64_t UnitNanos(std::string_view unit) {
  if (unit == "ns") return 1;
  if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs") return 1000;  // µ (two forms)
  if (unit == "ms") return 1'000'000;
  if (unit == "s") return 1'000'000'000;
  if (unit == "m") return int64_t{60} * 1'000'000'000;
  if (unit == "h") return int64_t{3600} * 1'000'000'000;
  return 0;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

std::optional<std::chrono::nanoseconds> ParseGoDuration(std::string_view text) {
  bool negative = false;
  if (!text.empty() && (text[0] == '-' || text[0] == '+')) {
    negative = text[0] == '-';
    text.remove_prefix(1);
  }
  if (text == "0") return std::chrono::nanoseconds(0);
  if (text.empty()) return std::nullopt;
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t total = 0;
  while (!text.empty()) {
    // [0-9]*(\.[0-9]*)? with at least one digit, then a unit.
    int64_t whole = 0;
    size_t i = 0;
    bool digits = false;
    for (; i < text.size() && IsDigit(text[i]); ++i, digits = true) {
      if (whole > (kMax - (text[i] - '0')) / 10) return std::nullopt;
      whole = whole * 10 + (text[i] - '0');
    }
    int64_t frac = 0;
    int64_t scale = 1;
    if (i < text.size() && text[i] == '.') {
      for (++i; i < text.size() && IsDigit(text[i]); ++i, digits = true) {
        if (scale > kMax / 10) continue;  // digits beyond int64 precision are dropped, as in Go
        frac = frac * 10 + (text[i] - '0');
        scale *= 10;
      }
    }
    if (!digits) return std::nullopt;
    size_t unit_end = i;
    while (unit_end < text.size() && text[unit_end] != '.' && !IsDigit(text[unit_end])) ++unit_end;
    const int64_t unit = UnitNanos(text.substr(i, unit_end - i));
    if (unit == 0) return std::nullopt;  // missing or unknown unit
    if (whole > kMax / unit) return std::nullopt;
    int64_t value = whole * unit;
    // frac/scale of a unit, without overflow: unit ≤ 3.6e12 and frac < scale.
    value += static_cast<int64_t>(static_cast<long double>(frac) * unit / scale);
    if (value < 0 || total > kMax - value) return std::nullopt;
    total += value;
    text.remove_prefix(unit_end);
  }
  return std::chrono::nanoseconds(negative ? -total : total);
}

}  // namespace aibrix::common
