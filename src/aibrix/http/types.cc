#include "aibrix/http/types.h"

#include <algorithm>

#include "nlohmann/json.hpp"

namespace aibrix::http {
namespace {

constexpr size_t kMaxErrorMessage = 1024;

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

}  // namespace

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return Lower(x) == Lower(y); });
}

std::string_view Headers::Get(std::string_view name) const {
  for (const Field& field : fields_) {
    if (EqualsIgnoreCase(field.first, name)) return field.second;
  }
  return {};
}

bool Headers::Has(std::string_view name) const {
  return std::any_of(fields_.begin(), fields_.end(),
                     [&](const Field& field) { return EqualsIgnoreCase(field.first, name); });
}

void Headers::Set(std::string_view name, std::string_view value) {
  Remove(name);
  fields_.emplace_back(std::string(name), std::string(value));
}

void Headers::Add(std::string name, std::string value) {
  fields_.emplace_back(std::move(name), std::move(value));
}

void Headers::Remove(std::string_view name) {
  std::erase_if(fields_, [&](const Field& field) { return EqualsIgnoreCase(field.first, name); });
}

std::string PercentDecode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '%' && i + 2 < in.size() && HexValue(in[i + 1]) >= 0 && HexValue(in[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(in[i + 1]) * 16 + HexValue(in[i + 2])));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

namespace {

// application/x-www-form-urlencoded decoding: '+' is a space, then percent escapes.
std::string FormDecode(std::string_view in) {
  std::string plus_as_space(in);
  for (char& c : plus_as_space) {
    if (c == '+') c = ' ';
  }
  return PercentDecode(plus_as_space);
}

}  // namespace

std::optional<std::string> Request::QueryParam(std::string_view name) const {
  std::string_view rest = query;
  while (!rest.empty()) {
    const size_t amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    const size_t eq = pair.find('=');
    if (FormDecode(pair.substr(0, eq)) == name) {
      return eq == std::string_view::npos ? std::string() : FormDecode(pair.substr(eq + 1));
    }
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

void Response::SetBody(std::string content, std::string_view content_type) {
  body = std::move(content);
  headers.Set("Content-Type", content_type);
}

std::string_view ErrorType(int status) {
  switch (status) {
    case 404:
      return "not_found_error";
    case 408:
      return "timeout";
    case 413:
      return "request_too_large";
    case 414:
      return "uri_too_long";
    case 431:
      return "request_header_too_large";
    case 502:
      return "upstream_error";
    case 503:
      return "service_unavailable";
    case 504:
      return "timeout";
    default:
      return status >= 500 ? "internal_error" : "invalid_request_error";
  }
}

void SendError(Response& res, int status, std::string_view message, std::string_view type) {
  std::string text(message.substr(0, kMaxErrorMessage));
  if (message.size() > kMaxErrorMessage) text += "...";
  nlohmann::json body = {{"error",
                          {{"message", std::move(text)},
                           {"type", type.empty() ? ErrorType(status) : type},
                           {"code", status}}}};
  SendJson(res, body, status);
}

void SendJson(Response& res, const nlohmann::json& body, int status) {
  res.status = status;
  res.SetBody(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
              "application/json");
}

}  // namespace aibrix::http
