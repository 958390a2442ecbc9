#include "aibrix/kvpublish/workload.h"

#include <algorithm>

namespace aibrix::kvpublish {
namespace {

constexpr uint32_t kVocabulary = 128256;

uint64_t Mix(uint64_t x) {  // splitmix64's finaliser
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// What every token of a seed's prompts shares (hoisted out of the per-token loops).
uint64_t PromptBase(uint64_t seed) { return Mix(seed ^ 0x70726f6d7074ULL); }

uint32_t TokenAt(uint64_t base, int prompt, int t) {
  return static_cast<uint32_t>(
      Mix(base ^ (static_cast<uint64_t>(prompt) << 32) ^ static_cast<uint64_t>(t)) % kVocabulary);
}

}  // namespace

uint32_t PromptToken(uint64_t seed, int prompt, int t) {
  return TokenAt(PromptBase(seed), prompt, t);
}

std::vector<uint32_t> PromptTokens(uint64_t seed, int prompt, int blocks, int block_size) {
  const uint64_t base = PromptBase(seed);
  std::vector<uint32_t> tokens(static_cast<size_t>(blocks) * block_size);
  for (size_t t = 0; t < tokens.size(); ++t) tokens[t] = TokenAt(base, prompt, static_cast<int>(t));
  return tokens;
}

EngineWorkload::EngineWorkload(const WorkloadOptions& options, int engine)
    : options_(options),
      engine_(engine),
      rng_(Mix(options.seed) ^ Mix(static_cast<uint64_t>(engine) + 1)),
      cached_(options.prompts, 0),
      lru_pos_(options.prompts),
      in_lru_(options.prompts, false) {}

kv::EngineHash EngineWorkload::HashOf(int prompt, int block) const {
  const uint64_t h = Mix(Mix(Mix(options_.seed ^ (static_cast<uint64_t>(engine_) << 20) ^ epoch_) ^
                             static_cast<uint64_t>(prompt)) ^
                         static_cast<uint64_t>(block));
  return h == 0 ? 1 : h;
}

void EngineWorkload::Restart() {
  ++epoch_;
  std::fill(cached_.begin(), cached_.end(), 0);
  std::fill(in_lru_.begin(), in_lru_.end(), false);
  lru_.clear();
  cached_total_ = 0;
  request_prompt_ = -1;
}

void EngineWorkload::StartRequest() {
  // Popular prompts more often: the square of a uniform variate skews towards low ids.
  std::uniform_real_distribution<double> u(0, 1);
  const double x = u(rng_);
  request_prompt_ = std::min(options_.prompts - 1, static_cast<int>(x * x * options_.prompts));
  std::uniform_int_distribution<int> len(
      std::min(options_.min_request_blocks, options_.max_prompt_blocks),
      options_.max_prompt_blocks);
  request_blocks_ = len(rng_);
}

void EngineWorkload::Touch(int prompt) {
  if (in_lru_[prompt]) lru_.erase(lru_pos_[prompt]);
  lru_pos_[prompt] = lru_.insert(lru_.end(), prompt);
  in_lru_[prompt] = true;
}

void EngineWorkload::EvictFor(int64_t blocks, int keep_prompt, kv::EventBatch& batch) {
  while (cached_total_ + blocks > options_.capacity_blocks && !lru_.empty()) {
    int victim = lru_.front();
    if (victim == keep_prompt) {
      if (lru_.size() == 1) return;
      victim = *std::next(lru_.begin());
    }
    // Evict the victim's tail: up to what is needed, at least a run's worth.
    const int64_t need = cached_total_ + blocks - options_.capacity_blocks;
    const int n = static_cast<int>(
        std::min<int64_t>(cached_[victim], std::max<int64_t>(need, options_.max_blocks_per_event)));
    kv::BlockRemoved removed;
    removed.block_hashes.reserve(n);
    for (int b = cached_[victim] - 1; b >= cached_[victim] - n; --b) {
      removed.block_hashes.push_back(HashOf(victim, b));
    }
    removed.medium = "GPU";
    cached_[victim] -= n;
    cached_total_ -= n;
    blocks_removed_ += static_cast<uint64_t>(n);
    if (cached_[victim] == 0) {
      lru_.erase(lru_pos_[victim]);
      in_lru_[victim] = false;
    }
    batch.events.emplace_back(std::move(removed));
  }
}

kv::EventBatch EngineWorkload::NextBatch(double ts) {
  kv::EventBatch batch;
  batch.ts = ts;
  batch.data_parallel_rank = 0;
  if (options_.clear_every_batches > 0 &&
      std::uniform_int_distribution<int>(0, options_.clear_every_batches - 1)(rng_) == 0) {
    batch.events.emplace_back(kv::AllBlocksCleared{});
    std::fill(cached_.begin(), cached_.end(), 0);
    std::fill(in_lru_.begin(), in_lru_.end(), false);
    lru_.clear();
    cached_total_ = 0;
    request_prompt_ = -1;
    ++clears_;
    return batch;
  }
  const int runs = std::uniform_int_distribution<int>(1, options_.max_events_per_batch)(rng_);
  for (int r = 0; r < runs; ++r) {
    // A request whose prompt is already cached up to its length stores nothing: next one.
    for (int attempts = 0;
         attempts < 64 && (request_prompt_ < 0 || cached_[request_prompt_] >= request_blocks_);
         ++attempts) {
      StartRequest();
    }
    if (cached_[request_prompt_] >= request_blocks_) break;
    const int p = request_prompt_;
    const int want = std::uniform_int_distribution<int>(options_.min_blocks_per_event,
                                                        options_.max_blocks_per_event)(rng_);
    const int n = std::min(want, request_blocks_ - cached_[p]);
    EvictFor(n, p, batch);
    const int first = cached_[p];
    kv::BlockStored stored;
    stored.block_hashes.reserve(n);
    for (int b = first; b < first + n; ++b) stored.block_hashes.push_back(HashOf(p, b));
    if (first > 0) stored.parent_block_hash = HashOf(p, first - 1);
    stored.token_ids.resize(static_cast<size_t>(n) * options_.block_size);
    const uint64_t base = PromptBase(options_.seed);
    for (size_t i = 0; i < stored.token_ids.size(); ++i) {
      stored.token_ids[i] = TokenAt(base, p, first * options_.block_size + static_cast<int>(i));
    }
    stored.block_size = options_.block_size;
    stored.medium = "GPU";
    batch.events.emplace_back(std::move(stored));
    cached_[p] += n;
    cached_total_ += n;
    blocks_stored_ += static_cast<uint64_t>(n);
    Touch(p);
  }
  if (batch.events.empty()) {  // every prompt fully cached at its request length
    batch.events.emplace_back(kv::AllBlocksCleared{});
    Restart();
    --epoch_;  // a clear, not a restart: same hash epoch
    ++clears_;
  }
  return batch;
}

}  // namespace aibrix::kvpublish
