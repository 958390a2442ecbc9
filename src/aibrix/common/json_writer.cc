#include "aibrix/common/json_writer.h"

#include <charconv>
#include <cmath>
#include <iterator>

#include "fmt/format.h"

namespace aibrix::common {

void AppendJsonString(std::string* out, std::string_view value) {
  out->push_back('"');
  size_t plain = 0;  // start of the run of bytes copied as they are
  for (size_t i = 0; i < value.size(); ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out->append(value.substr(plain, i - plain));
    plain = i + 1;
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        fmt::format_to(std::back_inserter(*out), "\\u{:04x}", c);
    }
  }
  out->append(value.substr(plain));
  out->push_back('"');
}

void AppendJsonInt(std::string* out, int64_t value) {
  char digits[24];
  const auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), value);
  out->append(digits, static_cast<size_t>(end - digits));
}

void AppendJsonNumber(std::string* out, double value) {
  if (!std::isfinite(value)) {
    out->append("null");
    return;
  }
  fmt::format_to(std::back_inserter(*out), "{}", value);
}

}  // namespace aibrix::common
