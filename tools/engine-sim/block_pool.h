// BlockPool: engine-sim's paged KV cache with prefix caching, modelled on vLLM V1's
// BlockPool (vllm/v1/core/block_pool.py).
//
//  * `num_blocks` physical blocks of `block_size` tokens. A block is in use (ref_cnt > 0)
//    or free. Free blocks sit in one LRU queue: the head is evicted first.
//  * A full block can be cached under its chained hash (block_hash.h). Cached blocks stay
//    cached after their requests free them, until the free queue hands them out again:
//    that eviction removes the hash and records BlockRemoved.
//  * Requests free their blocks in reverse order onto the queue tail (as vLLM does), so a
//    chain's tail is evicted before its head, and recently used prefixes survive longest.
//  * Caching a run of newly full blocks records one BlockStored (parent hash, hashes,
//    token ids, block_size, medium "GPU"). A hash already cached by another block is not
//    cached twice (vLLM would keep a second physical copy and announce it again; the
//    simulator keeps one copy so its cache contents and its event stream map one to one).
//  * Events accumulate until TakeEvents(); the engine drains them once per scheduler step.
//
// Thread safety: none; the engine serialises all calls under its mutex.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "aibrix/kv/events.h"
#include "block_hash.h"

namespace aibrix::enginesim {

// One cached block as GET /sim/cache reports it.
struct CachedBlock {
  int block_id = 0;
  BlockHash hash = 0;
  std::optional<BlockHash> parent;  // nullopt for the first block of a chain
  int64_t block_index = 0;          // position in its chain (0 = tokens [0, block_size))
  int ref_cnt = 0;
  std::vector<uint32_t> tokens;
  std::string lora_name;  // empty for the base model
};

class BlockPool {
 public:
  // REQUIRES: num_blocks > 0, block_size > 0.
  BlockPool(int num_blocks, int block_size);

  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  int num_blocks() const { return static_cast<int>(blocks_.size()); }
  int block_size() const { return block_size_; }
  int num_free() const { return num_free_; }
  int num_cached() const { return static_cast<int>(cached_.size()); }
  // Fraction of blocks in use (vLLM's kv_cache_usage_perc), 0..1.
  double usage() const { return 1.0 - static_cast<double>(num_free_) / blocks_.size(); }

  // Number of leading `hashes` that are cached.
  int CountCachedPrefix(std::span<const BlockHash> hashes) const;
  // How many of the first `n` hashes' blocks are free (taking them shrinks the free queue).
  // REQUIRES: CountCachedPrefix(hashes) >= n.
  int CountFreeAmongCached(std::span<const BlockHash> hashes, int n) const;
  // Takes a reference on the cached blocks of hashes[0..n) and returns their ids.
  // REQUIRES: CountCachedPrefix(hashes) >= n.
  std::vector<int> TouchCached(std::span<const BlockHash> hashes, int n);

  // Takes the free queue's head (evicting its hash, if any) with ref_cnt 1.
  // REQUIRES: num_free() > 0.
  int Allocate();

  // Caches blocks [from, to) of a request: block_ids[i] holds tokens
  // [i*block_size, (i+1)*block_size) of `tokens`, whose chain hash is hashes[i].
  // `lora_name`/`lora_id` (empty/0 for the base model) go into the BlockStored event.
  // REQUIRES: from <= to <= block_ids.size(), to <= hashes.size(), tokens cover `to` blocks.
  void CacheFullBlocks(std::span<const int> block_ids, std::span<const BlockHash> hashes,
                       std::span<const uint32_t> tokens, int from, int to,
                       std::string_view lora_name = {}, int64_t lora_id = 0);

  // Drops one reference on each block; blocks reaching 0 join the free queue tail in
  // reverse order of `block_ids`.
  void Free(std::span<const int> block_ids);

  // vLLM's reset_prefix_cache: only when no block is in use. Uncaches every block and
  // records AllBlocksCleared. Returns false (and changes nothing) while blocks are in use.
  bool ResetPrefixCache();

  // Engine restart: every block free and uncached, queue in id order, pending events
  // discarded, nothing recorded. REQUIRES: no request holds blocks any more.
  void DropAll();

  // The events recorded since the last call, in order.
  std::vector<kv::Event> TakeEvents();

  // Every cached block: free ones first in eviction order (next victim first), then the
  // blocks in use in id order.
  std::vector<CachedBlock> Snapshot() const;

 private:
  struct Block {
    int ref_cnt = 0;
    int prev = -1;  // free-queue links, -1 = none
    int next = -1;
    bool in_free_queue = false;
    bool cached = false;
    BlockHash hash = 0;
    std::optional<BlockHash> parent;
    int64_t block_index = 0;
    std::vector<uint32_t> tokens;  // the cached block's tokens (for events and /sim/cache)
    std::string lora_name;
  };

  void PushBack(int id);
  void Unlink(int id);
  void Uncache(int id);

  const int block_size_;
  std::vector<Block> blocks_;
  int head_ = -1;
  int tail_ = -1;
  int num_free_ = 0;
  absl::flat_hash_map<BlockHash, int> cached_;  // hash -> block id
  std::vector<kv::Event> events_;
};

}  // namespace aibrix::enginesim
