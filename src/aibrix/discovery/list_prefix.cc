#include "aibrix/discovery/list_prefix.h"

namespace aibrix::discovery {
namespace {

// A cursor over the prefix. kEnd: the bytes ran out (more may come); kBad: not the shape
// expected.
enum class Step { kOk, kEnd, kBad };

class Scanner {
 public:
  explicit Scanner(std::string_view text) : text_(text) {}

  bool AtEnd() {
    SkipSpace();
    return at_ >= text_.size();
  }
  // The next non-space byte, without taking it; '\0' at the end.
  char Peek() { return AtEnd() ? '\0' : text_[at_]; }
  void Take() { ++at_; }

  // A string at the cursor; `raw` is its content as written, `escaped` whether it has escapes.
  Step String(std::string_view* raw, bool* escaped) {
    if (Peek() != '"') return AtEnd() ? Step::kEnd : Step::kBad;
    const size_t start = ++at_;
    *escaped = false;
    while (at_ < text_.size()) {
      const char c = text_[at_];
      if (c == '"') {
        *raw = text_.substr(start, at_ - start);
        ++at_;
        return Step::kOk;
      }
      if (c == '\\') {
        *escaped = true;
        ++at_;
      }
      ++at_;
    }
    return Step::kEnd;
  }

  // Any value, unchecked: strings, nested objects and arrays by their brackets, scalars up to
  // the next delimiter.
  Step SkipValue() {
    const char first = Peek();
    if (first == '\0') return Step::kEnd;
    std::string_view raw;
    bool escaped = false;
    if (first == '"') return String(&raw, &escaped);
    if (first == '{' || first == '[') {
      int depth = 0;
      while (at_ < text_.size()) {
        const char c = text_[at_];
        if (c == '"') {
          if (const Step step = String(&raw, &escaped); step != Step::kOk) return step;
          continue;
        }
        ++at_;
        if (c == '{' || c == '[') ++depth;
        if ((c == '}' || c == ']') && --depth == 0) return Step::kOk;
      }
      return Step::kEnd;
    }
    const size_t start = at_;
    while (at_ < text_.size()) {
      const char c = text_[at_];
      if (c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\r' || c == '\n') {
        return at_ > start ? Step::kOk : Step::kBad;
      }
      ++at_;
    }
    return Step::kEnd;
  }

  // `"key":` at the cursor.
  Step Key(std::string_view* key, bool* escaped) {
    if (const Step step = String(key, escaped); step != Step::kOk) return step;
    if (Peek() != ':') return AtEnd() ? Step::kEnd : Step::kBad;
    Take();
    return Step::kOk;
  }

  // After a field: ',' (true: another field follows) or '}' (false: the object ended).
  Step NextField(bool* more) {
    const char c = Peek();
    if (c == '\0') return Step::kEnd;
    if (c != ',' && c != '}') return Step::kBad;
    Take();
    *more = c == ',';
    return Step::kOk;
  }

 private:
  void SkipSpace() {
    while (at_ < text_.size() &&
           (text_[at_] == ' ' || text_[at_] == '\t' || text_[at_] == '\r' || text_[at_] == '\n')) {
      ++at_;
    }
  }

  const std::string_view text_;
  size_t at_ = 0;
};

ListPrefix Outcome(Step step) {
  return ListPrefix{step == Step::kEnd ? ListPrefix::State::kNeedMore : ListPrefix::State::kUnknown,
                    {}};
}

// The list's metadata object at the cursor: its "continue" field (the last one, as the
// decoder reads duplicates; absent or null: "").
ListPrefix ScanMetadata(Scanner& scanner) {
  if (scanner.Peek() != '{') return Outcome(scanner.AtEnd() ? Step::kEnd : Step::kBad);
  scanner.Take();
  std::string token;
  if (scanner.Peek() == '}') {
    scanner.Take();
    return ListPrefix{ListPrefix::State::kFound, std::move(token)};
  }
  for (bool more = true; more;) {
    std::string_view key;
    bool escaped = false;
    if (const Step step = scanner.Key(&key, &escaped); step != Step::kOk) return Outcome(step);
    if (!escaped && key == "continue") {
      if (scanner.Peek() == '"') {
        std::string_view raw;
        if (const Step step = scanner.String(&raw, &escaped); step != Step::kOk) {
          return Outcome(step);
        }
        if (escaped) return Outcome(Step::kBad);
        token.assign(raw);
      } else {
        const char first = scanner.Peek();
        if (const Step step = scanner.SkipValue(); step != Step::kOk) return Outcome(step);
        if (first != 'n') return Outcome(Step::kBad);  // not a string, nor null
        token.clear();
      }
    } else if (const Step step = scanner.SkipValue(); step != Step::kOk) {
      return Outcome(step);
    }
    if (const Step step = scanner.NextField(&more); step != Step::kOk) return Outcome(step);
  }
  return ListPrefix{ListPrefix::State::kFound, std::move(token)};
}

}  // namespace

ListPrefix ScanListPrefix(std::string_view prefix) {
  const bool capped = prefix.size() > kMaxListPrefixScanBytes;
  Scanner scanner(prefix.substr(0, kMaxListPrefixScanBytes));
  const ListPrefix result = [&] {
    if (scanner.Peek() != '{') return Outcome(scanner.AtEnd() ? Step::kEnd : Step::kBad);
    scanner.Take();
    for (bool more = true; more;) {
      std::string_view key;
      bool escaped = false;
      if (const Step step = scanner.Key(&key, &escaped); step != Step::kOk) return Outcome(step);
      if (!escaped && key == "metadata") return ScanMetadata(scanner);
      if (!escaped && key == "items") return Outcome(Step::kBad);  // metadata comes after
      if (const Step step = scanner.SkipValue(); step != Step::kOk) return Outcome(step);
      if (const Step step = scanner.NextField(&more); step != Step::kOk) return Outcome(step);
    }
    return Outcome(Step::kBad);  // the object ended without metadata
  }();
  if (capped && result.state == ListPrefix::State::kNeedMore) return Outcome(Step::kBad);
  return result;
}

}  // namespace aibrix::discovery
