// libFuzzer target: loadgen's trace line parsers (Mooncake and JSONL) must reject any input
// with a status, never crash; an accepted Mooncake line must rebuild a prompt of exactly
// input_length tokens whose blocks are the listed ids' blocks. Seed corpus:
// tests/fuzz/corpus/trace_line.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "tools/loadgen/mooncake_trace.h"
#include "tools/loadgen/workload.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string line(reinterpret_cast<const char*>(data), size);
  (void)aibrix::loadgen::ParseTraceLine(line, 1, 16);
  auto r = aibrix::loadgen::ParseMooncakeLine(line, 1);
  if (!r.ok()) return 0;
  if (r->input_length < 1 || r->input_length > aibrix::loadgen::kMaxTraceInputLength ||
      r->output_length < 0) {
    std::abort();
  }
  if (r->input_length > (1 << 16)) return 0;  // keep each run fast
  const int block_tokens = 1 + static_cast<int>(size % 64);
  const aibrix::loadgen::BlockPrompt p{r->hash_ids, r->input_length, block_tokens, 7};
  const std::vector<uint32_t> tokens = p.Tokens();
  if (static_cast<int64_t>(tokens.size()) != r->input_length) std::abort();
  if (static_cast<int64_t>(p.Text().size()) != r->input_length) std::abort();
  // Block 0 depends on hash_ids[0] only.
  if (!r->hash_ids.empty()) {
    const aibrix::loadgen::BlockPrompt head{{r->hash_ids[0]}, 1, block_tokens, 8};
    if (head.Tokens()[0] != tokens[0]) std::abort();
  }
  for (uint32_t t : tokens) {
    if (t >= aibrix::loadgen::kBlockPromptVocab) std::abort();
  }
  return 0;
}
