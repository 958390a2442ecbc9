#include "aibrix/extproc/wire.h"

#include "aibrix/http/types.h"

namespace aibrix::extproc {

std::string_view HeaderValue(const core_v3::HeaderMap& headers, std::string_view name) {
  for (const core_v3::HeaderValue& header : headers.headers()) {
    if (header.key() != name) continue;
    return header.raw_value().empty() ? std::string_view(header.value())
                                      : std::string_view(header.raw_value());
  }
  return {};
}

void SetHeader(ext_proc_v3::HeaderMutation& mutation, std::string_view key,
               std::string_view value) {
  core_v3::HeaderValue* header = mutation.add_set_headers()->mutable_header();
  header->set_key(std::string(key));
  header->set_raw_value(std::string(value));
}

void FillImmediateError(ext_proc_v3::ImmediateResponse& response, int status,
                        std::string_view message, std::string_view error_header,
                        std::string_view error_value) {
  http::Response res;
  http::SendError(res, status, message);
  response.mutable_status()->set_code(static_cast<::envoy::type::v3::StatusCode>(status));
  SetHeader(*response.mutable_headers(), "content-type", "application/json");
  if (!error_header.empty()) SetHeader(*response.mutable_headers(), error_header, error_value);
  response.set_body(std::move(res.body));
  response.set_details(std::string("aibrix_cache_") + std::to_string(status));
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  // Every byte of `b` (the secret) is visited whatever `a` holds.
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < b.size(); ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ static_cast<unsigned char>(b[i]));
  }
  return diff == 0;
}

}  // namespace aibrix::extproc
