// Bridging std::string_view and Debian's Abseil, which is built with its own
// absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW 0): the two do not convert implicitly.
// Use fmt::format for messages; convert with AsAbsl() for Abseil lookups and AsStd() for
// absl::Status::message().
//
// Thread safety: pure functions.
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace aibrix::common {

inline absl::string_view AsAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}
inline std::string_view AsStd(absl::string_view s) { return std::string_view(s.data(), s.size()); }

}  // namespace aibrix::common
