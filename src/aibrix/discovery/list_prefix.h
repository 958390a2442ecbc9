// The continue token of a LIST page told from the first bytes of its body, so the informer
// can ask for the next page while this one is still arriving (Kubernetes writes a list's
// `metadata` before its `items`). Only a hint: the page is decoded in full afterwards
// (k8s_decoder.h), and the informer checks that both agree.
//
// The scan follows the top-level object's fields until `metadata` has ended; it does not
// validate what it skips. It gives up (kUnknown) when `items` comes first, on bytes that are
// not the expected shape, on a token with escapes, or when the metadata has not ended within
// the first kMaxScanBytes.
//
// Thread safety: a pure function.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace aibrix::discovery {

struct ListPrefix {
  enum class State {
    kNeedMore,  // the metadata has not ended yet: call again with more bytes
    kFound,     // `continue_token` is the page's (empty on the last page)
    kUnknown,   // cannot be told from the prefix: wait for the whole page
  };
  State state = State::kNeedMore;
  std::string continue_token;
};

inline constexpr size_t kMaxListPrefixScanBytes = 64 << 10;

// `prefix`: the first bytes of a LIST response body (any length).
ListPrefix ScanListPrefix(std::string_view prefix);

}  // namespace aibrix::discovery
