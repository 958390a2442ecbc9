// Mooncake-format traces (github.com/kvcache-ai/Mooncake, FAST'25 traces): one JSON object
// per line, `{"timestamp": ms, "input_length": N, "output_length": M, "hash_ids": [...]}`,
// where hash id i names the content of the prompt's i-th block of `block_tokens` tokens
// (512 in the published traces). Two requests share exactly the blocks whose hash ids they
// share, in the same positions.
//
// `BlockPrompt` turns hash ids back into a prompt: block i is `block_tokens` token ids (or
// characters) computed from hash_ids[i] alone by a fixed hash, so the same id always gives
// the same block in every process and run; the prompt is the first `length` tokens of the
// concatenated blocks (the last block is cut short). A line whose input_length needs more
// blocks than it lists gets filler blocks unique to the line (`filler_id`).
//
// Thread safety: pure functions and value types.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace aibrix::loadgen {

// Token ids are in [0, kBlockPromptVocab): valid ids for every common model vocabulary.
inline constexpr uint32_t kBlockPromptVocab = 32000;
// The longest input_length accepted (tokens), so a line cannot ask for gigabytes.
inline constexpr int64_t kMaxTraceInputLength = int64_t{1} << 22;
inline constexpr int64_t kMaxTraceOutputLength = 1'000'000;

struct BlockPrompt {
  std::vector<uint64_t> hash_ids;
  int64_t length = 0;  // tokens (or characters) in the prompt
  int block_tokens = 512;
  uint64_t filler_id = 0;  // seeds the filler blocks past hash_ids (unique per line)

  // The prompt as token ids (`length` of them).
  std::vector<uint32_t> Tokens() const;
  // The prompt as text: lower-case letters and spaces, one character per token of Tokens()
  // (so with a byte tokenizer, as engine-sim's, one character is one token).
  std::string Text() const;
};

// One parsed line.
struct MooncakeRecord {
  double timestamp_ms = 0;
  int64_t input_length = 0;   // >= 1
  int64_t output_length = 0;  // >= 0
  std::vector<uint64_t> hash_ids;
};

// Parses one line (`line_no` 1-based, for messages). Required: `timestamp` (number >= 0),
// `input_length` (integer in [1, kMaxTraceInputLength]), `output_length` (integer in
// [0, kMaxTraceOutputLength]), `hash_ids` (array of integers >= 0). Other fields are
// ignored. InvalidArgument "line N: ..." on anything else.
absl::StatusOr<MooncakeRecord> ParseMooncakeLine(std::string_view line, int line_no);

}  // namespace aibrix::loadgen
