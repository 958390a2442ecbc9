// ExactIndex: the prefix index fed by engine KV events (vLLM BlockStored / BlockRemoved /
// AllBlocksCleared), implementing kv::EventSink. It answers, for a prompt, how many leading
// blocks every pod holds in every tier, exactly as the engines reported them.
//
// Event rules (see docs/prefix-index.md):
//  * BlockStored: each engine hash maps to our key computed from the block's tokens; block i
//    chains to block i-1 of the same event, block 0 to the parent's mapped key (or the
//    context root when there is no parent). Unknown parent -> blocks counted as unplaceable,
//    nothing inserted. Context = (PodSource.model, adapter, main KV group): adapter is
//    lora_name when set, else "#lora-id=<n>" when only lora_id is set (never matches a named
//    adapter or the base model: unstable ids must not over-report), else "".
//  * Only main-attention KV groups are indexed (kv_cache_spec_kind full_attention,
//    mla_attention or sink_full_attention; when the kind is absent, group_idx 0 or absent).
//    They share the index's group 0; engine hashes are kept apart per group_idx.
//  * block_size must equal the index's block size and token_ids must hold exactly
//    block_size tokens per hash; otherwise the event is counted and skipped. Empty token_ids
//    = known hashes now also held in `medium`: they are added to that tier.
//  * Engine-hash maps are per (pod, tier). BlockRemoved removes only the sender's membership
//    in that tier. AllBlocksCleared / ClearPod drop a pod's entries in time proportional to
//    the pod's entries.
//  * Prefix closure: a membership counts (is "anchored") only while the pod holds, in the
//    same tier, every ancestor along the engine's parent links; removing a block un-anchors
//    its held descendants and re-storing it re-anchors them. So a pod is never credited
//    past a hole: the answer is the longest run of blocks 0..k-1 all held.
//  * Bounded work: a removal's effect on its descendants is settled at the end of the batch
//    (a block removed and re-stored within one batch costs O(1) whatever hangs below it),
//    and descendants are found through a per-holder children index kept incrementally (no
//    map scans per event). Within a batch, readers may see such a removal late (the block
//    and its subtree still count: prefix-closed); at batch boundaries the index is exact.
//  * Memory: a global budget and a per-pod cap on memberships. Over the limit the writer
//    evicts chain tails (leaves first, then their parents) from the largest pod: eviction
//    never leaves a dangling mapping or a hole.
//
// The holder table, directory, epoch, pod registry and query body are IndexCore's
// (index_core.h), shared with ApproxIndex; this class adds the event rules above.
//
// Thread safety: ApplyBatch/ClearPod/RemovePod may be called concurrently for different pods
// (each pod has its own mutex, uncontended when one subscriber thread feeds it). Match*
// take no lock (epoch-protected reads) and may run on any number of threads concurrently
// with writers. Stats/AllStats/BlocksPerModel take no pod mutex (they read counters the
// writer publishes after each batch), so a long batch never blocks them; UpdateGauges takes
// only a scrape-side mutex.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "aibrix/kv/events.h"
#include "aibrix/prefix/block_hash.h"
#include "aibrix/prefix/index_core.h"
#include "aibrix/prefix/types.h"

namespace prometheus {
class Registry;
}

namespace aibrix::prefix {

struct ExactIndexOptions {
  int block_size = kDefaultBlockSize;
  ChainScheme scheme = ChainScheme::kMixChain;
  // Global budget and per-pod cap, in (block, pod, tier) memberships.
  uint64_t max_memberships = 50'000'000;
  uint64_t max_memberships_per_pod = 4'000'000;
  // When a limit is hit, evict down to limit * (1 - evict_fraction) (hysteresis).
  double evict_fraction = 0.02;
};

class ExactIndex final : public kv::EventSink {
 public:
  // `registry` (optional) receives the index's metric families (see docs/prefix-index.md).
  explicit ExactIndex(ExactIndexOptions options = {}, prometheus::Registry* registry = nullptr);
  ~ExactIndex() override;
  ExactIndex(const ExactIndex&) = delete;
  ExactIndex& operator=(const ExactIndex&) = delete;

  // kv::EventSink.
  void ApplyBatch(const kv::PodSource& source, const kv::EventBatch& batch) override;
  // Drops every entry of `pod_key` (engine restart, gap, pod gone); keeps its registration.
  void ClearPod(const std::string& pod_key) override;
  // ClearPod and forget the pod (its holder ids are recycled). For pod deletion.
  void RemovePod(const std::string& pod_key);

  // Queries. `keys` must come from hasher() with ContextRoot({model, adapter, 0}).
  // Visits every (pod, tier) holding at least the first block, with its leading blocks.
  void MatchKeys(std::span<const BlockKey> keys, MatchVisitor visit) const {
    core_.MatchKeys(keys, visit);
  }
  // Hashes lazily (stops hashing when no pod is left) and visits like MatchKeys.
  void MatchTokens(const HashContext& ctx, std::span<const uint32_t> tokens,
                   MatchVisitor visit) const {
    core_.MatchTokens(ctx, tokens, visit);
  }
  // Convenience: collected results, sorted by matched blocks (desc), then pod, then tier.
  std::vector<PodMatch> Match(const HashContext& ctx, std::span<const uint32_t> tokens) const {
    return core_.Match(ctx, tokens);
  }

  const BlockHasher& hasher() const { return core_.hasher(); }

  // Stats of one pod (nullopt when unknown) and of all pods.
  std::optional<PodIndexStats> Stats(const std::string& pod_key) const;
  std::vector<PodIndexStats> AllStats() const;
  // Memberships per model (sum over the pods serving it).
  std::map<std::string, uint64_t> BlocksPerModel() const;
  // Memberships in total, and bytes used by all structures (from capacities).
  uint64_t memberships() const { return core_.memberships(); }
  uint64_t bytes() const { return core_.bytes(); }
  // Refreshes the index-wide gauges: bytes, and memberships per model (summed from the
  // pods' published counters, no pod lock). Call it before each scrape (the service's
  // RenderMetrics does) — writers only set their own pod's gauge, so the event path takes
  // no index-wide lock. Takes a scrape-only mutex.
  void UpdateGauges() const;

  // For tests: entries visited by the pod's (un)anchoring walks and children-index scans
  // since it was created (the work a removal or re-store costs beyond O(1)).
  uint64_t AnchorWorkForTest(const std::string& pod_key) const;

  // For tests: the engine hashes (group 0) `pod_key` holds in `tier`, anchored or not.
  std::vector<uint64_t> EngineHashesForTest(const std::string& pod_key,
                                            const std::string& tier) const;

  struct PodState;  // defined in exact_index.cc
  struct Metrics;

 private:
  void EnforceBudget(PodState& pod);
  // Evicts up to `count` memberships of `pod`. REQUIRES: pod.mu held.
  uint64_t EvictLocked(PodState& pod, uint64_t count);
  // After a batch (pod.mu released): the pod's and its model's gauges, and the bytes gauge.
  void UpdatePodGauges(PodState& pod);

  // Constant after construction (metrics_ before core_: the core keeps its pod gauge family).
  const ExactIndexOptions options_;
  const std::unique_ptr<Metrics> metrics_;
  // Thread-safe: the table, directory, queries and counters (index_core.h).
  IndexCore core_;
  // Registry lock never held while a pod's mutex is taken (index_core.h).
  PodRegistry<PodState> pods_;
};

}  // namespace aibrix::prefix
