// Encodes decoded KV event batches back into vLLM's msgpack payload (ZMQ frame 2) for every
// wire era of ../shared/protocols/README.md §1.6. Used by engine-sim, by the test publisher
// and by the tests, which check it reproduces the vectors in tests/testdata/kv (copies of
// ../shared/protocols/vectors/kv) byte for byte.
//
// Thread safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "aibrix/kv/events.h"

namespace aibrix::kvpublish {

// The wire eras (vector prefixes p1..p7, m1). ParseWireFormat accepts the names in brackets
// (case-insensitive), and the vector prefixes p1..p7 / m1.
enum class WireFormat {
  kV0_9_0,     // [0.9.0]      batch [ts, events]; BlockStored 6 elements; signed int hashes
  kV0_9_1,     // [0.9.1]      batch [ts, events, dp_rank]; otherwise as 0.9.0
  kMedium,     // [medium]     + medium; unsigned hashes (BlockStored 7, BlockRemoved 3)
  kLoraName,   // [lora-name]  + lora_name (BlockStored 8)
  kExtraKeys,  // [extra-keys] + extra_keys (BlockStored 9)
  kGroupIdx,   // [group-idx]  + group_idx (BlockStored 10, BlockRemoved 4)
  kSpecKind,   // [spec-kind]  + kv_cache_spec_kind, _sliding_window (BlockStored 12)
  kMap,        // [map]        events as msgpack maps (vLLM PR #42892); batch stays an array
};

enum class HashEncoding {
  kInt,      // msgpack integer (signed in the 0.9.x eras, unsigned afterwards)
  kBytes32,  // VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0: 32-byte bin, last 8 bytes = hash BE
};

// vLLM's msgpack bytes for `batch` in era `format`. Fields the era does not carry are
// dropped; a missing data_parallel_rank is written as nil where the era has the field. In
// the map era, optional keys (extra_keys, group_idx, kv_cache_spec_*) are written only when
// set, as msgspec's omit_defaults does. extra_keys_json is converted back from JSON
// ({"$bin": hex} objects become bin); invalid JSON is written as nil.
std::string EncodeBatch(const kv::EventBatch& batch, WireFormat format,
                        HashEncoding hashes = HashEncoding::kInt);

// Parses an era name (see WireFormat). InvalidArgument for anything else.
absl::StatusOr<WireFormat> ParseWireFormat(std::string_view name);
// The canonical name ("0.9.0", "0.9.1", "medium", "lora-name", "extra-keys", "group-idx",
// "spec-kind", "map").
std::string_view WireFormatName(WireFormat format);

}  // namespace aibrix::kvpublish
