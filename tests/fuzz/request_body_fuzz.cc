// libFuzzer target: the routing/proxy request-body parser must reject any input with a
// status, never crash, and its fast path must agree with the whole-body DOM parse (same
// verdict, same fields, same error), with either reader of token-id windows (AVX-512 VBMI
// where the CPU has it, chosen by the input's length; SSE2). Seed corpus:
// tests/fuzz/corpus/request_body.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "aibrix/gateway/request_body.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  aibrix::gateway::internal::SetWideTokenWindows(size % 2 == 0);
  const auto body = aibrix::gateway::ParseRequestBody(json);
  const auto dom = aibrix::gateway::internal::ParseRequestBodyDom(json);
  if (body.ok() != dom.ok()) std::abort();
  if (!body.ok()) {
    if (body.status() != dom.status()) std::abort();
    return 0;
  }
  if (body->model != dom->model || body->algorithm != dom->algorithm ||
      body->request_id != dom->request_id || body->user != dom->user ||
      body->stream != dom->stream || body->token_ids != dom->token_ids ||
      body->prompt != dom->prompt || body->messages != dom->messages ||
      body->input_tokens != dom->input_tokens || body->output_tokens != dom->output_tokens) {
    std::abort();
  }
  return 0;
}
