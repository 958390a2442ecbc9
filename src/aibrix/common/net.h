// Host/port parsing shared by configuration and clients.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace aibrix::common {

struct HostPort {
  std::string host;  // IPv6 literals without brackets
  uint16_t port = 0;
};

// Whether port 0 ("any free port", for listening addresses) is accepted.
enum class PortZero { kRejected, kAllowed };

// Parses "host:port", "[v6]:port", or (when `default_port` > 0) a bare host / "[v6]".
// Errors: empty host, malformed brackets, port not an integer in 1..65535 (0..65535 when
// port zero is allowed).
absl::StatusOr<HostPort> ParseHostPort(std::string_view text, int default_port = 0,
                                       PortZero zero = PortZero::kRejected);

// "host:port", with IPv6 literals bracketed.
std::string FormatHostPort(std::string_view host, uint16_t port);

}  // namespace aibrix::common
