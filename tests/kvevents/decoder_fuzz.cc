// libFuzzer target for the KV event decoder. Properties checked beyond "no crash": a batch
// that decodes re-encodes (map era) into bytes that decode again to the same events.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <variant>

#include "aibrix/kvevents/decoder.h"
#include "aibrix/kvpublish/encoder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace aibrix;
  kvevents::DecodeStats stats;
  auto batch =
      kvevents::DecodeBatch(std::string_view(reinterpret_cast<const char*>(data), size), &stats);
  if (!batch.ok()) return 0;
  auto again = kvevents::DecodeBatch(kvpublish::EncodeBatch(*batch, kvpublish::WireFormat::kMap));
  if (!again.ok() || again->events.size() != batch->events.size()) std::abort();
  for (size_t i = 0; i < batch->events.size(); ++i) {
    if (batch->events[i].index() != again->events[i].index()) std::abort();
    if (const auto* s = std::get_if<kv::BlockStored>(&batch->events[i])) {
      const auto& t = std::get<kv::BlockStored>(again->events[i]);
      if (s->block_hashes != t.block_hashes || s->token_ids != t.token_ids ||
          s->parent_block_hash != t.parent_block_hash || s->block_size != t.block_size) {
        std::abort();
      }
    }
  }
  return 0;
}
