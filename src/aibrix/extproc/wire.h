// Reading and writing the pieces of Envoy's ext_proc messages the processor needs, with the
// rules Envoy applies (../shared/protocols/ext_proc.md §1.2): header keys are lower-case;
// values are read from raw_value, falling back to value (Envoy sends raw_value only, other
// proxies value); values are written to raw_value only (a value-only mutation sets the
// header to "" in Envoy, both set is rejected) with `append` unset, i.e. overwrite.
//
// Thread safety: pure functions.
#pragma once

#include <string_view>

#include "envoy/service/ext_proc/v3/external_processor.pb.h"

namespace aibrix::extproc {

namespace ext_proc_v3 = ::envoy::service::ext_proc::v3;
namespace core_v3 = ::envoy::config::core::v3;

// The value of header `name` (lower-case) in `headers`; empty when absent. The first one
// when repeated.
std::string_view HeaderValue(const core_v3::HeaderMap& headers, std::string_view name);

// Adds "set `key` to `value`" (raw_value only, overwrite) to `mutation`.
void SetHeader(ext_proc_v3::HeaderMutation& mutation, std::string_view key, std::string_view value);

// An ImmediateResponse with HTTP `status`, the OpenAI error body
// {"error": {"message", "type", "code"}} (http::SendError's shape), content-type
// application/json and, when `error_header` is set, the AIBrix marker header
// `error_header: error_value` (x-error-routing: true, ...).
void FillImmediateError(ext_proc_v3::ImmediateResponse& response, int status,
                        std::string_view message, std::string_view error_header = {},
                        std::string_view error_value = "true");

// Whether `a` equals `b`, in time that depends on their lengths only (for secrets).
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace aibrix::extproc
