// The tokenizer seam: text or chat messages in, token ids out, and back.
//
// Two tokenizers produce the ids routing hashes: ByteTokenizer (byte_tokenizer.h), the local
// deterministic tokenizer that engine-sim serves and the service's routing uses, so both
// sides produce identical token ids, implements this synchronous interface; RemoteTokenizer
// (remote_tokenizer.h) calls a vLLM /tokenize endpoint (protocols/README.md §5) and is
// asynchronous, so it has its own interface on an io_context. Chat messages are our own
// type (ChatMessage): the service's request parser reads them straight from the body, and
// a remote tokenizer serialises them itself.
//
// Thread safety: implementations must be safe to call concurrently from many threads.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

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

// One chat message reduced to what the chat template renders: an OpenAI message's role and
// its text (a string content as it is; the "text" parts of an array content concatenated;
// null content as ""). Parsed by gateway/request_body (simdjson) in the service and by
// ParseChatMessages (chat_json.h) elsewhere, with the same rules and errors.
struct ChatMessage {
  std::string role;
  std::string content;

  bool operator==(const ChatMessage&) const = default;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`. Errors: implementation-specific.
  virtual absl::StatusOr<TokenIds> Tokenize(std::string_view text) const = 0;

  // Token ids of `messages` rendered through the chat template.
  // Errors: InvalidArgument for no messages or contradictory options.
  virtual absl::StatusOr<TokenIds> TokenizeChat(std::span<const ChatMessage> messages,
                                                const ChatOptions& options) const = 0;

  // Text of `ids`. Errors: InvalidArgument for an id outside the vocabulary.
  virtual absl::StatusOr<std::string> Detokenize(std::span<const TokenId> ids) const = 0;
};

}  // namespace aibrix::tokenizer
