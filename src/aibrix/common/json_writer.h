// Appends JSON text to a string without building a document: for hot responses whose shape
// is fixed (nlohmann::json builds a map per object, several times slower).
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace aibrix::common {

// Appends `value` as a JSON string (quoted; ", \ and control characters escaped; other bytes
// copied as they are, so valid UTF-8 in gives valid UTF-8 out).
void AppendJsonString(std::string* out, std::string_view value);

// Appends `value` as a JSON integer.
void AppendJsonInt(std::string* out, int64_t value);

// Appends `value` as a JSON number in its shortest round-trip form, or null when it is NaN
// or infinite (JSON has no such numbers).
void AppendJsonNumber(std::string* out, double value);

}  // namespace aibrix::common
