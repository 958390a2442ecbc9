// The project's own HTTP message types: what handlers see of a request and what they answer,
// whatever carries the bytes (the server on Asio, the upstream client on Beast). Handlers
// never see Asio, Beast or any other HTTP library.
//
// Thread safety: plain values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nlohmann/json_fwd.hpp"

namespace aibrix::http {

// Header fields in arrival order; names compare case-insensitively.
class Headers {
 public:
  using Field = std::pair<std::string, std::string>;

  // The first value of `name`, or "" when absent.
  std::string_view Get(std::string_view name) const;
  bool Has(std::string_view name) const;
  // Replaces every field `name` with one field.
  void Set(std::string_view name, std::string_view value);
  // Appends a field (repeats allowed).
  void Add(std::string name, std::string value);
  void Remove(std::string_view name);

  const std::vector<Field>& fields() const { return fields_; }
  bool empty() const { return fields_.empty(); }

 private:
  std::vector<Field> fields_;
};

// Case-insensitive ASCII comparison (header names, tokens).
bool EqualsIgnoreCase(std::string_view a, std::string_view b);

struct Request {
  std::string method;
  std::string target;  // as sent: path and query
  std::string path;    // percent-decoded path
  std::string query;   // after '?', not decoded
  int minor_version = 1;
  Headers headers;
  std::string body;
  std::string remote_addr;
  // Values of the route pattern's {parameters}, percent-decoded, in pattern order.
  std::vector<std::string> params;

  // The value of query parameter `name` (the first if repeated), form-decoded: '+' is a
  // space and %XX escapes are decoded; "" for a name without '='; nullopt when absent.
  std::optional<std::string> QueryParam(std::string_view name) const;
};

struct Response {
  int status = 200;
  Headers headers;
  std::string body;

  // Sets the body and its Content-Type.
  void SetBody(std::string body, std::string_view content_type);
};

// Percent-decodes `in` ('+' stays '+'); invalid escapes are kept as sent.
std::string PercentDecode(std::string_view in);

// The OpenAI-style error type for an HTTP status (not_found_error, request_too_large, ...).
std::string_view ErrorType(int status);
// Writes `{"error": {"message", "type", "code"}}` with `status`. `type` defaults to the one
// ErrorType(status) names. The message is cut to 1 KiB (it may quote untrusted input).
void SendError(Response& res, int status, std::string_view message, std::string_view type = {});
// Writes `body` as application/json with `status` (invalid UTF-8 is replaced).
void SendJson(Response& res, const nlohmann::json& body, int status = 200);

}  // namespace aibrix::http
