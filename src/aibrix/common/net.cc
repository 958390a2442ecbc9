#include "aibrix/common/net.h"

#include <charconv>

#include "aibrix/common/status_macros.h"
#include "fmt/format.h"

namespace aibrix::common {
namespace {

absl::StatusOr<uint16_t> ParsePort(std::string_view text, std::string_view whole, PortZero zero) {
  int port = 0;
  const int lowest = zero == PortZero::kAllowed ? 0 : 1;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
  if (ec != std::errc() || end != text.data() + text.size() || port < lowest || port > 65535) {
    return absl::InvalidArgumentError(fmt::format(
        "invalid port '{}' in '{}': want an integer in {}..65535", text, whole, lowest));
  }
  return static_cast<uint16_t>(port);
}

}  // namespace

absl::StatusOr<HostPort> ParseHostPort(std::string_view text, int default_port, PortZero zero) {
  HostPort out;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close == 1) {
      return absl::InvalidArgumentError(fmt::format("malformed IPv6 address '{}'", text));
    }
    out.host = std::string(text.substr(1, close - 1));
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        return absl::InvalidArgumentError(fmt::format("malformed address '{}'", text));
      }
      port_text = rest.substr(1);
      if (port_text.empty()) {
        return absl::InvalidArgumentError(fmt::format("missing port in '{}'", text));
      }
    }
  } else {
    size_t colon = text.rfind(':');
    if (colon != std::string_view::npos && text.find(':') != colon) {
      return absl::InvalidArgumentError(
          fmt::format("IPv6 address '{}' must be bracketed: [addr]:port", text));
    }
    out.host = std::string(text.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = text.substr(colon + 1);
      if (port_text.empty()) {
        return absl::InvalidArgumentError(fmt::format("missing port in '{}'", text));
      }
    }
  }
  if (out.host.empty()) {
    return absl::InvalidArgumentError(fmt::format("missing host in '{}'", text));
  }
  if (port_text.empty()) {
    if (default_port <= 0) {
      return absl::InvalidArgumentError(fmt::format("missing port in '{}'", text));
    }
    out.port = static_cast<uint16_t>(default_port);
    return out;
  }
  ASSIGN_OR_RETURN(out.port, ParsePort(port_text, text, zero));
  return out;
}

std::string FormatHostPort(std::string_view host, uint16_t port) {
  if (host.find(':') != std::string_view::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

}  // namespace aibrix::common
