// Fast parsing of the routing and proxy request bodies with simdjson (on-demand): only the
// fields routing needs are read (an 8k-token `token_ids` array parses in tens of µs, where a
// full DOM costs milliseconds); the proxy forwards the original bytes untouched.
//
// Thread safety: pure function (a thread-local parser is reused per thread).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace aibrix::server {

struct RequestBody {
  std::string model;
  std::optional<std::string> algorithm;
  std::optional<std::string> request_id;
  bool stream = false;
  // Exactly one of these is the prompt: token ids (token_ids, or prompt given as ids), text
  // (prompt as a string), or chat messages (the raw JSON of `messages`).
  std::optional<std::vector<uint32_t>> token_ids;
  std::optional<std::string> prompt;
  std::optional<std::string> messages_json;
  // For /cache/done.
  std::optional<uint64_t> input_tokens;
  std::optional<uint64_t> output_tokens;
};

// Parses a JSON object body. InvalidArgument (with the field) for malformed JSON, a body
// that is not an object, or a field of the wrong type. Missing fields stay unset; the caller
// decides which are required. Unknown fields are ignored.
absl::StatusOr<RequestBody> ParseRequestBody(std::string_view json);

}  // namespace aibrix::server
