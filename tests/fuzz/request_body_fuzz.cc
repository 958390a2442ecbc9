// libFuzzer target: the routing/proxy request-body parser must reject any input with a
// status, never crash. Seed corpus: tests/fuzz/corpus/request_body.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "aibrix/server/request_body.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto body =
      aibrix::server::ParseRequestBody(std::string_view(reinterpret_cast<const char*>(data), size));
  if (body.ok() && body->token_ids) {
    for (uint32_t id : *body->token_ids) (void)id;
  }
  return 0;
}
