// The tokenizer seam: text or chat messages in, token ids out, and back.
//
// Two implementations share this interface: ByteTokenizer (byte_tokenizer.h), the local
// deterministic tokenizer that engine-sim serves and the service's routing uses, so both
// sides produce identical token ids; and a remote tokenizer that calls a vLLM /tokenize
// endpoint (protocols/README.md §5). Chat messages are passed as the OpenAI `messages`
// JSON array so a remote tokenizer can forward them untouched.
//
// Thread safety: implementations must be safe to call concurrently from many threads.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace aibrix::tokenizer {

using TokenId = uint32_t;
using TokenIds = std::vector<TokenId>;

// Options of a chat tokenization, as vLLM's /tokenize chat form names them.
struct ChatOptions {
  // Append the assistant header so the model starts a new reply (vLLM default: true).
  bool add_generation_prompt = true;
  // Leave the last message open (no closing newline) so the model continues it. Must not be
  // combined with add_generation_prompt (vLLM rejects the pair with 400).
  bool continue_final_message = false;
};

// One chat message reduced to what the chat template renders.
struct ChatMessage {
  std::string role;
  std::string content;
};

// Parses an OpenAI `messages` array. `content` may be a string, null (rendered as ""), or
// an array of parts whose "text" parts are concatenated; other part types are skipped.
// Errors (InvalidArgument): not an array, empty, an element not an object, `role` missing
// or not a string, `content` of another type.
absl::StatusOr<std::vector<ChatMessage>> ParseChatMessages(const nlohmann::json& messages);

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`. Errors: implementation-specific (remote: Unavailable, ...).
  virtual absl::StatusOr<TokenIds> Tokenize(std::string_view text) const = 0;

  // Token ids of `messages` (an OpenAI messages array) rendered through the chat template.
  // Errors: InvalidArgument for malformed messages or contradictory options.
  virtual absl::StatusOr<TokenIds> TokenizeChat(const nlohmann::json& messages,
                                                const ChatOptions& options) const = 0;

  // Text of `ids`. Errors: InvalidArgument for an id outside the vocabulary.
  virtual absl::StatusOr<std::string> Detokenize(std::span<const TokenId> ids) const = 0;
};

}  // namespace aibrix::tokenizer
