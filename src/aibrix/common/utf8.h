// UTF-8 validation for text that reaches JSON answers or Prometheus exposition.
//
// Thread safety: pure functions.
#pragma once

#include <string_view>

namespace aibrix::common {

// Strict UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF, no truncated
// sequence. ASCII is checked eight bytes at a time.
bool IsValidUtf8(std::string_view s);

}  // namespace aibrix::common
