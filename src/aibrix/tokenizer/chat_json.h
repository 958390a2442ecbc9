// OpenAI `messages` from nlohmann JSON into ChatMessages, for the users of nlohmann/json
// (engine-sim, tests). The service parses request bodies with simdjson instead
// (gateway/request_body), with the same rules and the same error messages.
//
// Thread safety: pure function.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "aibrix/tokenizer/tokenizer.h"
#include "nlohmann/json_fwd.hpp"

namespace aibrix::tokenizer {

// Parses an OpenAI `messages` array. `content` may be a string, null or missing (rendered
// as ""), or an array of parts whose "text" parts are concatenated; other part types are
// skipped. Errors (InvalidArgument): not an array, empty, an element not an object, `role`
// missing or not a string, a content part not an object, `content` of another type.
absl::StatusOr<std::vector<ChatMessage>> ParseChatMessages(const nlohmann::json& messages);

}  // namespace aibrix::tokenizer
