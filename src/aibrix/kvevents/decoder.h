// Decodes one vLLM KVEventBatch payload (ZMQ frame 2) of any wire era
// (../shared/protocols/README.md §1.5-1.7) into a kv::EventBatch.
//
// Accepted: the batch as an array [ts, events(, data_parallel_rank, ...)] or as a map with
// keys ts / events / data_parallel_rank; each event as a positional array (tag first, any
// length, extra trailing elements ignored) or as a map with a "type" key (any key order,
// unknown keys ignored). Hashes may be msgpack ints (uint64, or negative int64 read as
// two's complement) or byte strings (bin or str; normalised to the last 8 bytes read
// big-endian, as vLLM's own int conversion does). token_ids must be ints in uint32 range.
// An event with an unknown tag, or that is neither array nor map, is skipped and counted.
// Optional fields of the wrong type (e.g. SGLang's metadata map at index 7) are ignored.
//
// Errors (InvalidArgument, with what and where): empty, truncated or oversized input, a
// required field missing or of the wrong type, nesting deeper than 32, bytes after the
// batch. Never crashes and never allocates more than the input can justify (every length
// is checked against the remaining bytes before reserving).
//
// The reader is hand-written over the bytes rather than msgpack-cxx's object tree: it
// decodes straight into the result without an intermediate tree or exceptions, which is
// what the decode_blocks_per_s figure (bench/kvevents) needs; msgpack-cxx is used by the
// tests as an independent reference.
//
// Thread safety: pure function.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "aibrix/kv/events.h"

namespace aibrix::kvevents {

struct DecodeStats {
  size_t skipped_events = 0;  // unknown tags or non-array/map events
};

// Payloads larger than this are rejected without being parsed.
inline constexpr size_t kMaxPayloadBytes = 64 << 20;

struct DecodeLimits {
  // Bound on the decoded batch's memory (as DecodedBytes counts it): a payload that would
  // decode to more fails with ResourceExhausted before the memory is allocated (a
  // BlockRemoved of 1-byte hashes expands 8 times).
  size_t max_decoded_bytes = SIZE_MAX;
};

absl::StatusOr<kv::EventBatch> DecodeBatch(std::string_view payload, DecodeStats* stats = nullptr,
                                           const DecodeLimits& limits = {});

// Bytes a decoded batch holds (its vectors and strings; what the event queues charge).
size_t DecodedBytes(const kv::EventBatch& batch);

}  // namespace aibrix::kvevents
