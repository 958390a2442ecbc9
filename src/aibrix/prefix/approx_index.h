// ApproxIndex: the prefix index fed by routing decisions (the reference's prefix-cache
// policy, for pods that publish no KV events). After each routing decision the router calls
// Record(prompt, chosen pod); queries then answer as if the pod had cached every block it
// was sent, until the pod's LRU capacity or the TTL drops them.
//
// Per pod: a radix tree of the recorded chains. A node is a run of consecutive block keys
// (one vector, no per-block allocation) with the time and order of its last touch; a
// Record walks the tree comparing its keys with the runs (a memory-speed compare, no hash
// lookup per block), touches the nodes on its path, splits a run where the prompt diverges
// or ends inside it, and appends one node for its new blocks. Recording a 128k-token prompt
// the pod already holds therefore costs a compare of 8,192 keys plus one touch per node on
// the path; only new blocks touch the shared holder table. A node is touched whenever a
// descendant is, so the least recently touched leaf holds the least recent blocks:
// capacity eviction cuts that leaf's run from its tail, TTL eviction drops whole expired
// leaves, and every pod's key set stays prefix-closed, which keeps the shared jump search
// (holder_table.h) exact. Within one touch, blocks nearer the head count as more recent (as
// a per-block LRU touching the last block first). Expired entries are dropped on the pod's
// next Record and by Sweep(), which the owner calls periodically (the reference sweeps
// every second). Keys are chained, so a key can only appear at one place of a pod's tree;
// a 64-bit collision that would put it in two is detected at the run boundary and the rest
// of that prompt is not recorded.
//
// The holder table, directory, epoch, pod registry and query body are IndexCore's
// (index_core.h), shared with ExactIndex; this class adds the per-pod LRU.
//
// Thread safety: Record/RemovePod/Sweep lock one pod at a time (no global lock); queries
// take no lock and may run concurrently with them.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "aibrix/common/clock.h"
#include "aibrix/prefix/block_hash.h"
#include "aibrix/prefix/index_core.h"
#include "aibrix/prefix/types.h"

namespace prometheus {
class Registry;
}

namespace aibrix::prefix {

struct ApproxIndexOptions {
  int block_size = kDefaultBlockSize;
  ChainScheme scheme = ChainScheme::kMixChain;
  // AIBRIX_PREFIX_CACHE_BLOCK_NUMBER (the reference applies it to the whole table; we apply
  // it per pod so one busy pod cannot evict the others).
  uint64_t max_blocks_per_pod = 200'000;
  // AIBRIX_PREFIX_CACHE_EVICTION_DURATION_MINS.
  std::chrono::nanoseconds ttl = std::chrono::minutes(20);
  // Not owned; must outlive the index.
  const common::Clock* clock = &common::SystemClock::Instance();
};

class ApproxIndex {
 public:
  explicit ApproxIndex(ApproxIndexOptions options = {}, prometheus::Registry* registry = nullptr);
  ~ApproxIndex();
  ApproxIndex(const ApproxIndex&) = delete;
  ApproxIndex& operator=(const ApproxIndex&) = delete;

  // Records that `pod` was sent a prompt: all its complete blocks become (most recently)
  // held by the pod. `keys` must be a whole chain from block 0, from hasher().
  void RecordKeys(std::span<const BlockKey> keys, const std::string& pod);
  void Record(const HashContext& ctx, std::span<const uint32_t> tokens, const std::string& pod);

  // Forgets a pod (deleted, or it now publishes KV events).
  void RemovePod(const std::string& pod);
  // Drops entries older than the TTL in every pod. Returns how many were dropped.
  uint64_t Sweep();

  // Queries, as ExactIndex's (tier is always "GPU").
  void MatchKeys(std::span<const BlockKey> keys, MatchVisitor visit) const {
    core_.MatchKeys(keys, visit);
  }
  void MatchTokens(const HashContext& ctx, std::span<const uint32_t> tokens,
                   MatchVisitor visit) const {
    core_.MatchTokens(ctx, tokens, visit);
  }
  std::vector<PodMatch> Match(const HashContext& ctx, std::span<const uint32_t> tokens) const {
    return core_.Match(ctx, tokens);
  }

  const BlockHasher& hasher() const { return core_.hasher(); }
  std::optional<PodIndexStats> Stats(const std::string& pod) const;
  std::vector<PodIndexStats> AllStats() const;
  uint64_t memberships() const { return core_.memberships(); }
  uint64_t bytes() const { return core_.bytes(); }

  struct PodLru;  // defined in approx_index.cc
  struct Metrics;

 private:
  // Evicts least recent leaves (capacity: from their tails) while over capacity or older
  // than the TTL. REQUIRES: lru.mu held.
  uint64_t TrimLocked(PodLru& lru, int64_t now_ns);
  // Publishes the pod's size (stats, gauge) and bytes. REQUIRES: lru.mu held.
  void PublishLocked(PodLru& lru);

  // Constant after construction (metrics_ before core_: the core keeps its pod gauge family).
  const ApproxIndexOptions options_;
  const std::unique_ptr<Metrics> metrics_;
  // Thread-safe: the table, directory, queries and counters (index_core.h).
  IndexCore core_;
  // Registry lock never held while a pod's mutex is taken (index_core.h).
  PodRegistry<PodLru> pods_;
};

}  // namespace aibrix::prefix
