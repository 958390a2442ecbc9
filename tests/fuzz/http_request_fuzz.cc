// libFuzzer target: HTTP request framing (request head and chunked body) must reject any
// input with a status, never crash, never consume more than it was given and never decode
// more than the body limit. Seed corpus: tests/fuzz/corpus/http_request.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "aibrix/server/http_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t head_size = aibrix::server::RequestHeadSize(input);
  if (head_size > size) std::abort();
  if (head_size == 0) return 0;
  auto head = aibrix::server::ParseRequestHead(input.substr(0, head_size));
  if (!head.ok() || !head->chunked) return 0;
  // The body arrives in pieces of a size taken from the head's length.
  constexpr uint64_t kLimit = 4096;
  aibrix::server::ChunkedDecoder decoder(kLimit);
  const size_t piece = 1 + head_size % 7;
  std::string body, pending;
  for (size_t at = head_size; at < size && !decoder.done(); at += piece) {
    pending.append(input.substr(at, piece));
    auto used = decoder.Feed(pending, &body);
    if (!used.ok()) return 0;
    if (*used > pending.size() || body.size() > kLimit) std::abort();
    pending.erase(0, *used);
  }
  return 0;
}
