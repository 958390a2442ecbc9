// The KV event workload of one simulated vLLM engine (the Fleet's engines): realistic batch
// shapes, deterministic by seed.
//
// Model: a pool of `prompts` shared prompts (token ids a pure function of the seed and the
// prompt, the same on every engine, so several pods hold the same prefixes and a router query
// for PromptTokens(p, n) matches them). Each request picks a prompt and a target length; the
// engine caches the prompt's blocks it does not hold yet in runs of min..max blocks, one
// BlockStored per run (block_size tokens per block, parent = the block before the run, none
// at token 0), a few runs per batch — what vLLM's BlockPool.cache_full_blocks emits. Over
// capacity, the least recently used prompt's chain tail is evicted first (BlockRemoved,
// tail to head, as vLLM's LRU free-block queue does for a finished request). Now and then
// the engine clears everything (AllBlocksCleared, e.g. a reset_prefix_cache call).
//
// Engine hashes are a function of (seed, engine, restart epoch, prompt, block): different
// per engine and per restart (vLLM's NONE_HASH is random per process), stable otherwise.
//
// Thread safety: a plain value; one owner thread.
#pragma once

#include <cstdint>
#include <list>
#include <random>
#include <vector>

#include "aibrix/kv/events.h"

namespace aibrix::kvpublish {

struct WorkloadOptions {
  uint64_t seed = 1;
  int block_size = 16;
  int prompts = 64;             // shared prompt pool
  int max_prompt_blocks = 512;  // 8k tokens at block size 16
  int min_request_blocks = 4;   // a request's prompt length, in blocks
  int min_blocks_per_event = 2;
  int max_blocks_per_event = 8;
  int max_events_per_batch = 3;    // BlockStored runs per batch (1..max)
  int64_t capacity_blocks = 4096;  // blocks an engine caches before evicting
  int clear_every_batches = 5000;  // mean interval of AllBlocksCleared; 0: never
};

// Token `t` of shared prompt `prompt` (below a Llama-3-sized vocabulary).
uint32_t PromptToken(uint64_t seed, int prompt, int t);
// The first `blocks` blocks of a shared prompt.
std::vector<uint32_t> PromptTokens(uint64_t seed, int prompt, int blocks, int block_size = 16);

class EngineWorkload {
 public:
  EngineWorkload(const WorkloadOptions& options, int engine);

  // The next batch (at least one event); `ts` is its timestamp. Adds the blocks stored and
  // removed to the counters below.
  kv::EventBatch NextBatch(double ts);
  // The engine restarted: nothing cached, new hash epoch.
  void Restart();

  // The engine hash of block `block` of `prompt` in the current epoch.
  kv::EngineHash HashOf(int prompt, int block) const;
  int64_t cached_blocks() const { return cached_total_; }
  uint64_t blocks_stored() const { return blocks_stored_; }
  uint64_t blocks_removed() const { return blocks_removed_; }
  uint64_t clears() const { return clears_; }

 private:
  void StartRequest();
  void Touch(int prompt);
  void EvictFor(int64_t blocks, int keep_prompt, kv::EventBatch& batch);

  const WorkloadOptions options_;
  const int engine_;
  std::mt19937_64 rng_;
  uint64_t epoch_ = 0;
  std::vector<int> cached_;  // per prompt: leading blocks held
  std::list<int> lru_;       // prompts with cached blocks, least recently used first
  std::vector<std::list<int>::iterator> lru_pos_;
  std::vector<bool> in_lru_;
  int64_t cached_total_ = 0;
  int request_prompt_ = -1;
  int request_blocks_ = 0;
  uint64_t blocks_stored_ = 0;
  uint64_t blocks_removed_ = 0;
  uint64_t clears_ = 0;
};

}  // namespace aibrix::kvpublish
