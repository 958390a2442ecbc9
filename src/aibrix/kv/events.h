// Decoded vLLM KV-cache events (../shared/protocols/README.md §1.6) and the EventSink seam
// through which the KV event subscribers hand them to the prefix index.
//
// The types are plain values. Thread safety of an EventSink: see the interface.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace aibrix::kv {

// An engine's block hash, normalised to 64 bits: msgpack ints as their two's-complement
// uint64; byte strings as their last 8 bytes read big-endian (what vLLM sends as the int).
using EngineHash = uint64_t;

struct BlockStored {
  std::vector<EngineHash> block_hashes;
  std::optional<EngineHash> parent_block_hash;  // nullopt: the run starts at token 0
  std::vector<uint32_t> token_ids;              // may be empty (a tier update of known hashes)
  int64_t block_size = 0;
  std::optional<int64_t> lora_id;
  std::optional<std::string> medium;  // "GPU", "CPU", ...; nullopt means GPU
  std::optional<std::string> lora_name;
  std::optional<std::string> extra_keys_json;  // extra_keys re-encoded as JSON, when present
  std::optional<int64_t> group_idx;
  std::optional<std::string> kv_cache_spec_kind;
  std::optional<int64_t> kv_cache_spec_sliding_window;
};

struct BlockRemoved {
  std::vector<EngineHash> block_hashes;
  std::optional<std::string> medium;
  std::optional<int64_t> group_idx;
};

struct AllBlocksCleared {};

using Event = std::variant<BlockStored, BlockRemoved, AllBlocksCleared>;

// One KVEventBatch: everything one engine scheduler step produced.
struct EventBatch {
  double ts = 0;  // engine wall clock, seconds since the epoch
  std::vector<Event> events;
  std::optional<int64_t> data_parallel_rank;
};

// Which pod an event stream belongs to, as the subscriber knows it.
struct PodSource {
  std::string pod_key;   // "namespace/name"
  std::string model;     // the pod's base model name
  int64_t lora_id = -1;  // label model.aibrix.ai/lora-id, -1 when absent
};

// Receives decoded events. Implemented by the prefix index; a recording sink in tests.
//
// Thread safety: implementations must accept calls for different pods concurrently. Calls
// for one pod come from one thread at a time, in stream order.
class EventSink {
 public:
  virtual ~EventSink() = default;
  // Applies every event of `batch`, in order, as coming from `source`.
  virtual void ApplyBatch(const PodSource& source, const EventBatch& batch) = 0;
  // Forgets everything `pod_key` holds (engine restart, unrecoverable gap, pod gone).
  virtual void ClearPod(const std::string& pod_key) = 0;
};

}  // namespace aibrix::kv
