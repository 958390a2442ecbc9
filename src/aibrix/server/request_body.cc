#include "aibrix/server/request_body.h"

#include "fmt/format.h"
#include "simdjson.h"

namespace aibrix::server {
namespace {

// The DOM API dispatches at run time to the best kernel of the CPU (the on-demand API would
// be fixed at compile time to the portable fallback with Debian's default flags).
namespace dom = simdjson::dom;

absl::Status FieldError(std::string_view field, std::string_view want) {
  return absl::InvalidArgumentError(fmt::format("'{}' must be {}", field, want));
}

absl::StatusOr<std::vector<uint32_t>> TokenArray(dom::element value, std::string_view field) {
  dom::array array;
  if (value.get_array().get(array) != simdjson::SUCCESS) {
    return FieldError(field, "an array of token ids");
  }
  std::vector<uint32_t> ids;
  ids.reserve(array.size());
  for (dom::element element : array) {
    uint64_t id = 0;
    if (element.get_uint64().get(id) != simdjson::SUCCESS || id > UINT32_MAX) {
      return absl::InvalidArgumentError(
          fmt::format("'{}': token ids must be integers in [0, 2^32)", field));
    }
    ids.push_back(static_cast<uint32_t>(id));
  }
  return ids;
}

absl::StatusOr<std::string> String(dom::element value, std::string_view field) {
  std::string_view text;
  if (value.get_string().get(text) != simdjson::SUCCESS) return FieldError(field, "a string");
  return std::string(text);
}

absl::StatusOr<RequestBody> Parse(dom::element root) {
  dom::object object;
  if (root.get_object().get(object) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("request body must be a JSON object");
  }
  RequestBody body;
  for (dom::key_value_pair field : object) {
    const std::string_view key = field.key;
    const dom::element value = field.value;
    if (key == "model") {
      auto s = String(value, key);
      if (!s.ok()) return s.status();
      body.model = std::move(*s);
    } else if (key == "algorithm" || key == "request_id") {
      auto s = String(value, key);
      if (!s.ok()) return s.status();
      (key == "algorithm" ? body.algorithm : body.request_id) = std::move(*s);
    } else if (key == "stream") {
      bool stream = false;
      if (value.get_bool().get(stream) != simdjson::SUCCESS) return FieldError(key, "a boolean");
      body.stream = stream;
    } else if (key == "token_ids") {
      auto ids = TokenArray(value, key);
      if (!ids.ok()) return ids.status();
      body.token_ids = std::move(*ids);
    } else if (key == "prompt") {
      if (value.is_string()) {
        auto s = String(value, key);
        if (!s.ok()) return s.status();
        body.prompt = std::move(*s);
      } else if (value.is_array()) {
        auto ids = TokenArray(value, key);
        if (!ids.ok()) {
          return FieldError(
              key, "a string or an array of token ids (batched prompts are not supported)");
        }
        body.token_ids = std::move(*ids);
      } else {
        return FieldError(key, "a string or an array of token ids");
      }
    } else if (key == "messages") {
      if (!value.is_array()) return FieldError(key, "an array of messages");
      body.messages_json = simdjson::minify(value);
    } else if (key == "input_tokens" || key == "output_tokens") {
      uint64_t count = 0;
      if (value.get_uint64().get(count) != simdjson::SUCCESS) {
        return FieldError(key, "a non-negative integer");
      }
      (key == "input_tokens" ? body.input_tokens : body.output_tokens) = count;
    }
    // Other fields (max_tokens, temperature, ...) are the engine's business: skipped.
  }
  return body;
}

}  // namespace

absl::StatusOr<RequestBody> ParseRequestBody(std::string_view json) {
  thread_local dom::parser parser;
  dom::element root;
  if (parser.parse(json.data(), json.size(), /*realloc_if_needed=*/true).get(root) !=
      simdjson::SUCCESS) {
    return absl::InvalidArgumentError("malformed JSON in request body");
  }
  return Parse(root);
}

}  // namespace aibrix::server
