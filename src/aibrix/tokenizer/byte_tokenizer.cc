#include "aibrix/tokenizer/byte_tokenizer.h"

#include "absl/status/status.h"
#include "aibrix/common/status_macros.h"
#include "fmt/format.h"

namespace aibrix::tokenizer {

absl::StatusOr<std::string> RenderChatTemplate(std::span<const ChatMessage> messages,
                                               const ChatOptions& options) {
  if (options.add_generation_prompt && options.continue_final_message) {
    return absl::InvalidArgumentError(
        "cannot set both `continue_final_message` and `add_generation_prompt` to true");
  }
  size_t size = 16;
  for (const ChatMessage& m : messages) size += m.role.size() + m.content.size() + 6;
  std::string out;
  out.reserve(size);
  for (size_t i = 0; i < messages.size(); ++i) {
    out += "<|";
    out += messages[i].role;
    out += "|>\n";
    out += messages[i].content;
    if (!(options.continue_final_message && i + 1 == messages.size())) out += '\n';
  }
  if (options.add_generation_prompt) out += "<|assistant|>\n";
  return out;
}

TokenIds ByteTokenizer::Encode(std::string_view text) {
  TokenIds ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

absl::StatusOr<TokenIds> ByteTokenizer::Tokenize(std::string_view text) const {
  return Encode(text);
}

absl::StatusOr<TokenIds> ByteTokenizer::TokenizeChat(std::span<const ChatMessage> messages,
                                                     const ChatOptions& options) const {
  if (messages.empty()) return absl::InvalidArgumentError("`messages` must not be empty");
  ASSIGN_OR_RETURN(std::string text, RenderChatTemplate(messages, options));
  return Encode(text);
}

absl::StatusOr<std::string> ByteTokenizer::Detokenize(std::span<const TokenId> ids) const {
  std::string out(ids.size(), '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] >= static_cast<TokenId>(kVocabSize)) {
      return absl::InvalidArgumentError(fmt::format(
          "token id {} at position {} is out of vocabulary (size {})", ids[i], i, kVocabSize));
    }
    out[i] = static_cast<char>(ids[i]);
  }
  return out;
}

}  // namespace aibrix::tokenizer
