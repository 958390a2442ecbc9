// LineAssembler: turns a byte stream that arrives in chunks cut at any byte (a watch
// response body: newline-delimited JSON) back into whole lines, holding at most one partial
// line of bounded size.
//
// A line is the bytes before a '\n', without a trailing '\r'; empty lines are skipped. Each
// line is handed out followed by kJsonPadding readable bytes, as the JSON decoder needs.
// A line whose bytes before the '\n' (a '\r' included) pass the cap is cut off: its bytes are
// dropped up to the next '\n' (the assembler resumes with the line after it) and Feed reports it at
// once.
//
// Thread safety: one thread at a time.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "aibrix/discovery/k8s_decoder.h"

namespace aibrix::discovery {

class LineAssembler {
 public:
  // `max_line_bytes` > 0: the most bytes a line may have before its '\n'.
  explicit LineAssembler(size_t max_line_bytes) : max_line_bytes_(max_line_bytes) {}

  enum class Outcome {
    kConsumed,     // every byte was taken
    kStopped,      // on_line returned false: the bytes after that line were not looked at
    kLineTooLong,  // a line passed the cap: it was cut off, the bytes after the point where
                   // that was noticed were not looked at
  };
  struct FeedResult {
    Outcome outcome;
    size_t consumed;  // bytes of the input taken (all of them for kConsumed)
  };

  // Calls `on_line(std::string_view line) -> bool` for every line completed by `bytes`, in
  // order, until it returns false. The view is valid during the call only.
  template <class OnLine>
  FeedResult Feed(std::string_view bytes, OnLine&& on_line);

  // Forgets any partial line (a new stream starts).
  void Reset() {
    partial_.clear();
    discarding_ = false;
  }
  // Bytes of the partial line held.
  size_t buffered() const { return partial_.size(); }

 private:
  // A buffer grown past this for a long line is released after it.
  static constexpr size_t kKeepCapacity = 1 << 20;

  const size_t max_line_bytes_;
  std::string partial_;      // the line so far
  bool discarding_ = false;  // inside a line that was cut off
};

template <class OnLine>
LineAssembler::FeedResult LineAssembler::Feed(std::string_view bytes, OnLine&& on_line) {
  const size_t total = bytes.size();
  while (!bytes.empty()) {
    const size_t newline = bytes.find('\n');
    const std::string_view piece = bytes.substr(0, newline);
    if (discarding_) {
      if (newline == std::string_view::npos) return {Outcome::kConsumed, total};
      discarding_ = false;
      bytes.remove_prefix(newline + 1);
      continue;
    }
    if (partial_.size() + piece.size() > max_line_bytes_) {
      partial_.clear();
      if (partial_.capacity() > kKeepCapacity) partial_.shrink_to_fit();
      if (newline == std::string_view::npos) {
        discarding_ = true;
        return {Outcome::kLineTooLong, total};
      }
      bytes.remove_prefix(newline + 1);
      return {Outcome::kLineTooLong, total - bytes.size()};
    }
    partial_.append(piece);
    if (newline == std::string_view::npos) return {Outcome::kConsumed, total};
    bytes.remove_prefix(newline + 1);
    if (!partial_.empty() && partial_.back() == '\r') partial_.pop_back();
    bool go_on = true;
    if (!partial_.empty()) {
      const size_t size = partial_.size();
      partial_.append(kJsonPadding, '\0');
      go_on = on_line(std::string_view(partial_.data(), size));
    }
    partial_.clear();
    if (partial_.capacity() > kKeepCapacity) partial_.shrink_to_fit();
    if (!go_on) return {Outcome::kStopped, total - bytes.size()};
  }
  return {Outcome::kConsumed, total};
}

}  // namespace aibrix::discovery
