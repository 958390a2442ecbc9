// Reads the engine's output-token count from an OpenAI response as it streams by — a JSON
// body or an SSE stream, split across chunks at any byte — without buffering or parsing it:
// the value of the last `"completion_tokens": <integer>` key. Inside a JSON string the key
// would be escaped (`\"completion_tokens\"`), so only a real key matches.
//
// Thread safety: a plain value.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace aibrix::gateway {

class UsageScanner {
 public:
  void Feed(std::string_view data);
  // The last complete value seen, if any.
  std::optional<int64_t> output_tokens() const { return output_tokens_; }

 private:
  enum class State { kKey, kColon, kValueStart, kDigits };
  void Restart(char c);

  State state_ = State::kKey;
  size_t matched_ = 0;  // bytes of the key matched (kKey)
  int64_t value_ = 0;
  int digits_ = 0;
  std::optional<int64_t> output_tokens_;
};

}  // namespace aibrix::gateway
