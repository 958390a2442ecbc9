#include "aibrix/tokenizer/chat_json.h"

#include "absl/status/status.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace aibrix::tokenizer {

absl::StatusOr<std::vector<ChatMessage>> ParseChatMessages(const nlohmann::json& messages) {
  if (!messages.is_array()) return absl::InvalidArgumentError("`messages` must be an array");
  if (messages.empty()) return absl::InvalidArgumentError("`messages` must not be empty");
  std::vector<ChatMessage> out;
  out.reserve(messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    const nlohmann::json& m = messages[i];
    if (!m.is_object()) {
      return absl::InvalidArgumentError(fmt::format("messages[{}] must be an object", i));
    }
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return absl::InvalidArgumentError(fmt::format("messages[{}].role must be a string", i));
    }
    ChatMessage msg;
    msg.role = role->get<std::string>();
    auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      // An assistant message carrying only tool calls: rendered with empty content.
    } else if (content->is_string()) {
      msg.content = content->get<std::string>();
    } else if (content->is_array()) {
      for (const nlohmann::json& part : *content) {
        if (!part.is_object()) {
          return absl::InvalidArgumentError(
              fmt::format("messages[{}].content parts must be objects", i));
        }
        auto type = part.find("type");
        auto text = part.find("text");
        if (type != part.end() && type->is_string() && *type == "text" && text != part.end() &&
            text->is_string()) {
          msg.content += text->get<std::string>();
        }
      }
    } else {
      return absl::InvalidArgumentError(
          fmt::format("messages[{}].content must be a string, an array of parts or null", i));
    }
    out.push_back(std::move(msg));
  }
  return out;
}

}  // namespace aibrix::tokenizer
