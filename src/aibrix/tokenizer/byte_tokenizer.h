// ByteTokenizer: the deterministic local tokenizer shared by engine-sim and the service.
//
// Rules (documented in docs/engine-sim.md; changing them changes every token id):
//  * Text: one token per UTF-8 byte, token id = the byte value (0..255). No special tokens
//    are added (add_special_tokens is accepted and ignored). Vocabulary size 256.
//  * Chat template, per message in order:   "<|" + role + "|>\n" + content + "\n"
//    then, with add_generation_prompt:      "<|assistant|>\n"
//    With continue_final_message the final message's closing "\n" is omitted.
//  * Detokenize maps each id back to its byte; ids >= 256 are an error. The bytes are
//    returned as they are (they need not be valid UTF-8 when cut mid-character).
//
// Thread safety: stateless; safe to share across threads.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "aibrix/tokenizer/tokenizer.h"

namespace aibrix::tokenizer {

// Renders `messages` through the chat template above. Errors: InvalidArgument when both
// options are set.
absl::StatusOr<std::string> RenderChatTemplate(std::span<const ChatMessage> messages,
                                               const ChatOptions& options);

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int kVocabSize = 256;

  absl::StatusOr<TokenIds> Tokenize(std::string_view text) const override;
  // Errors: InvalidArgument for no messages or both options set.
  absl::StatusOr<TokenIds> TokenizeChat(std::span<const ChatMessage> messages,
                                        const ChatOptions& options) const override;
  absl::StatusOr<std::string> Detokenize(std::span<const TokenId> ids) const override;

  // Infallible fast path of Tokenize.
  static TokenIds Encode(std::string_view text);
  // The text of one token (its single byte), for vLLM's `token_strs`. REQUIRES: id < 256.
  static std::string TokenString(TokenId id) { return std::string(1, static_cast<char>(id)); }
};

}  // namespace aibrix::tokenizer
