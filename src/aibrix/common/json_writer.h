// Appends JSON text to a string without building a document: for hot responses whose shape
// is fixed (nlohmann::json builds a map per object, several times slower).
//
// Thread safety: pure functions; a JsonObjectWriter is used by one thread.
#pragma once

#include <cstdint>
#include <span>
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

// Writes one JSON object to `out`: '{' now, the members in the order given
// (`"key":value`, comma-separated), '}' when it goes out of scope.
class JsonObjectWriter {
 public:
  explicit JsonObjectWriter(std::string* out) : out_(out) { out_->push_back('{'); }
  ~JsonObjectWriter() { out_->push_back('}'); }
  JsonObjectWriter(const JsonObjectWriter&) = delete;
  JsonObjectWriter& operator=(const JsonObjectWriter&) = delete;

  // Writes `"key":` and returns the output for the caller to append the value.
  std::string* Key(std::string_view key) {
    if (!first_) out_->push_back(',');
    first_ = false;
    AppendJsonString(out_, key);
    out_->push_back(':');
    return out_;
  }
  void String(std::string_view key, std::string_view value) { AppendJsonString(Key(key), value); }
  void Int(std::string_view key, int64_t value) { AppendJsonInt(Key(key), value); }
  void Number(std::string_view key, double value) { AppendJsonNumber(Key(key), value); }
  void Bool(std::string_view key, bool value) { Key(key)->append(value ? "true" : "false"); }
  // An array of strings.
  void Strings(std::string_view key, std::span<const std::string> values) {
    std::string* out = Key(key);
    out->push_back('[');
    for (size_t i = 0; i < values.size(); ++i) {
      if (i > 0) out->push_back(',');
      AppendJsonString(out, values[i]);
    }
    out->push_back(']');
  }

 private:
  std::string* out_;
  bool first_ = true;
};

}  // namespace aibrix::common
