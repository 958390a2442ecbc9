#include "aibrix/common/env.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

namespace aibrix::common {

std::optional<std::string> EnvString(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

int64_t EnvPositiveInt(const char* name, int64_t fallback) {
  auto text = EnvString(name);
  int64_t value = 0;
  if (!text) return fallback;
  auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (ec != std::errc() || end != text->data() + text->size() || value <= 0) return fallback;
  return value;
}

double EnvFloat(const char* name, double fallback) {
  auto text = EnvString(name);
  if (!text) return fallback;
  char* end = nullptr;
  const double value = std::strtod(text->c_str(), &end);
  if (end == text->c_str() || *end != '\0' || !std::isfinite(value)) return fallback;
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

bool EnvBool(const char* name, bool fallback) {
  auto text = EnvString(name);
  if (!text) return fallback;
  return ParseGoBool(*text).value_or(fallback);
}

}  // namespace aibrix::common
