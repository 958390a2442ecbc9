// Equality and printing of kv::EventBatch for tests.
#pragma once

#include <ostream>
#include <variant>

#include "aibrix/kv/events.h"
#include "fmt/format.h"
#include "fmt/ranges.h"

namespace aibrix::kv {

inline bool operator==(const BlockStored& a, const BlockStored& b) {
  return a.block_hashes == b.block_hashes && a.parent_block_hash == b.parent_block_hash &&
         a.token_ids == b.token_ids && a.block_size == b.block_size && a.lora_id == b.lora_id &&
         a.medium == b.medium && a.lora_name == b.lora_name &&
         a.extra_keys_json == b.extra_keys_json && a.group_idx == b.group_idx &&
         a.kv_cache_spec_kind == b.kv_cache_spec_kind &&
         a.kv_cache_spec_sliding_window == b.kv_cache_spec_sliding_window;
}
inline bool operator==(const BlockRemoved& a, const BlockRemoved& b) {
  return a.block_hashes == b.block_hashes && a.medium == b.medium && a.group_idx == b.group_idx;
}
inline bool operator==(const AllBlocksCleared&, const AllBlocksCleared&) { return true; }
inline bool operator==(const EventBatch& a, const EventBatch& b) {
  return a.ts == b.ts && a.events == b.events && a.data_parallel_rank == b.data_parallel_rank;
}

template <typename T>
std::string OptStr(const std::optional<T>& v) {
  return v ? fmt::format("{}", *v) : "nil";
}

inline void PrintTo(const EventBatch& b, std::ostream* os) {
  *os << fmt::format("{{ts={} dp={} events=[", b.ts, OptStr(b.data_parallel_rank));
  for (const auto& e : b.events) {
    if (const auto* s = std::get_if<BlockStored>(&e)) {
      *os << fmt::format(
          "Stored(h={} parent={} tokens={} bs={} lora_id={} medium={} lora_name={} extra={} "
          "group={} kind={} sw={}) ",
          s->block_hashes, OptStr(s->parent_block_hash), s->token_ids.size(), s->block_size,
          OptStr(s->lora_id), OptStr(s->medium), OptStr(s->lora_name), OptStr(s->extra_keys_json),
          OptStr(s->group_idx), OptStr(s->kv_cache_spec_kind),
          OptStr(s->kv_cache_spec_sliding_window));
    } else if (const auto* r = std::get_if<BlockRemoved>(&e)) {
      *os << fmt::format("Removed(h={} medium={} group={}) ", r->block_hashes, OptStr(r->medium),
                         OptStr(r->group_idx));
    } else {
      *os << "Cleared ";
    }
  }
  *os << "]}";
}

}  // namespace aibrix::kv
