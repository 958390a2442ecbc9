// Parsing of the routing and proxy request bodies: only the fields routing needs are read;
// the proxy forwards the original bytes untouched.
//
// Two paths with one meaning. A body whose prompt is a token-id array (the routing API's hot
// case) is split by a top-level scan: the arrays are read 64 bytes at a time (AVX-512 VBMI
// where the CPU has it, else SSE2 and a SWAR digit fold per id; where simdjson's DOM needs
// ~8 ns per id) and the other fields go through the DOM. Anything the
// scan does not handle exactly (escaped or repeated keys, non-canonical numbers, other
// shapes) falls back to the DOM parse of the whole body, which is the authority on errors.
// The request_body fuzz target checks that both paths agree on every input.
//
// Thread safety: pure functions (a thread-local simdjson parser is reused per thread).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "aibrix/tokenizer/tokenizer.h"

namespace aibrix::gateway {

struct RequestBody {
  std::string model;
  std::optional<std::string> algorithm;
  std::optional<std::string> request_id;
  std::optional<std::string> lora;  // /cache/match: the adapter's index
  std::optional<std::string> user;  // OpenAI's end-user id (vtc-basic fairness); null = unset
  bool stream = false;
  // Exactly one of these is the prompt: token ids (token_ids, or prompt given as ids), text
  // (prompt as a string), or chat messages (`messages`, reduced to role and text: a string
  // content as it is, null or missing as "", an array's "text" parts concatenated).
  std::optional<std::vector<uint32_t>> token_ids;
  std::optional<std::string> prompt;
  std::optional<std::vector<tokenizer::ChatMessage>> messages;
  // For /cache/done.
  std::optional<uint64_t> input_tokens;
  std::optional<uint64_t> output_tokens;
};

// Parses a JSON object body. InvalidArgument (with the field) for malformed JSON, a body
// that is not an object, or a field of the wrong type. Missing fields stay unset; the caller
// decides which are required. `messages` errors are ParseChatMessages' (tokenizer/chat_json.h):
// empty, an element not an object, `role` not a string, a part not an object, `content` of
// another type. Unknown fields are ignored (whatever their values: big
// integers included). A leading UTF-8 byte-order mark is skipped; "stream": null is false.
absl::StatusOr<RequestBody> ParseRequestBody(std::string_view json);

namespace internal {
// The reference: simdjson's DOM over the whole body. ParseRequestBody must agree with it.
absl::StatusOr<RequestBody> ParseRequestBodyDom(std::string_view json);
// Turns the AVX-512 VBMI window reader of compact id arrays on or off (on by default where the
// CPU has it; tests run both readers). False, changing nothing, when the CPU lacks it.
bool SetWideTokenWindows(bool on);
}  // namespace internal

}  // namespace aibrix::gateway
