// libFuzzer target for the KV event decoder. Properties checked beyond "no crash":
//  - a batch that decodes re-encodes (map era) into bytes that decode again to the same events;
//  - under a memory budget (taken from the input's last byte, so small budgets are explored)
//    decoding either succeeds with the same events as the unlimited decode, or fails with
//    ResourceExhausted, or fails with the same error code as the unlimited decode.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <variant>

#include "aibrix/kvevents/decoder.h"
#include "aibrix/kvpublish/encoder.h"

namespace {

using namespace aibrix;

bool SameEvents(const kv::EventBatch& a, const kv::EventBatch& b) {
  if (a.events.size() != b.events.size()) return false;
  for (size_t i = 0; i < a.events.size(); ++i) {
    if (a.events[i].index() != b.events[i].index()) return false;
    if (const auto* s = std::get_if<kv::BlockStored>(&a.events[i])) {
      const auto& t = std::get<kv::BlockStored>(b.events[i]);
      if (s->block_hashes != t.block_hashes || s->token_ids != t.token_ids ||
          s->parent_block_hash != t.parent_block_hash || s->block_size != t.block_size) {
        return false;
      }
    }
    if (const auto* r = std::get_if<kv::BlockRemoved>(&a.events[i])) {
      if (r->block_hashes != std::get<kv::BlockRemoved>(b.events[i]).block_hashes) return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view payload(reinterpret_cast<const char*>(data), size);
  kvevents::DecodeStats stats;
  auto batch = kvevents::DecodeBatch(payload, &stats);

  // The same bytes under a budget between 0 and ~64 KiB.
  const size_t budget = size == 0 ? 0 : size_t{data[size - 1]} << 8;
  auto limited = kvevents::DecodeBatch(payload, nullptr, kvevents::DecodeLimits{budget});
  if (limited.ok()) {
    if (!batch.ok() || !SameEvents(*batch, *limited)) std::abort();
  } else if (limited.status().code() != absl::StatusCode::kResourceExhausted) {
    // Not a budget failure: the unlimited decode must fail the same way.
    if (batch.ok() || batch.status().code() != limited.status().code()) std::abort();
  }

  if (!batch.ok()) return 0;
  auto again = kvevents::DecodeBatch(kvpublish::EncodeBatch(*batch, kvpublish::WireFormat::kMap));
  if (!again.ok() || !SameEvents(*batch, *again)) std::abort();
  return 0;
}
