// Block hashing for the prefix index: token ids -> one chained 64-bit key per complete block.
//
// A block is `block_size` consecutive token ids (uint32, hashed as their little-endian bytes);
// a trailing partial block is ignored. Keys are chained: key_i depends on key_{i-1}, so one
// key identifies a whole prefix and one table probe answers "is this exact prefix present".
// The context (model, LoRA adapter, KV-cache group) seeds the chain, so two adapters never
// produce the same keys for the same tokens.
//
// Two chain schemes (both XXH3-64, Debian libxxhash):
//  * kMixChain (default): h_i = XXH3(block_i) computed independently per block, then
//    key_i = Mix(key_{i-1} * kOdd ^ h_i) with a bijective 64-bit mixer. The block hashes do
//    not depend on each other, so the CPU overlaps them: ~2x faster than the seeded chain.
//  * kSeededChain: key_i = XXH3_withSeed(block_i, seed = key_{i-1}) (the textbook chain).
// Both give every key a dependence on the whole prefix and the context. An index and the
// routers that query it must use the same BlockHasher configuration.
//
// Key 0 is never produced (remapped), so tables may use 0 as "empty".
//
// Thread safety: BlockHasher is immutable after construction; all functions are pure.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace aibrix::prefix {

inline constexpr int kDefaultBlockSize = 16;

// A chained block key (our own hash, not the engine's).
using BlockKey = uint64_t;

enum class ChainScheme { kMixChain, kSeededChain };

// What a chain is computed for. kv_group is the index's notion of the KV-cache group (the
// exact index folds every main-attention group into group 0, see exact_index.h).
struct HashContext {
  std::string_view model;
  std::string_view adapter;  // "" = base model
  uint32_t kv_group = 0;
};

// 64-bit bijective finaliser (moremur-style multiply-xorshift).
constexpr uint64_t Mix64(uint64_t x) {
  x ^= x >> 27;
  x *= 0x3C79AC492BA7B653ULL;
  x ^= x >> 33;
  x *= 0x1C69B3F74AC4AE35ULL;
  x ^= x >> 27;
  return x;
}

// The inverse of Mix64 (for reporting and tests).
inline uint64_t UnMix64(uint64_t x) {
  // The inverse of a multiply by an odd constant, modulo 2^64 (Newton's iteration: correct
  // to 3 bits, each step doubles them).
  constexpr auto inverse = [](uint64_t a) {
    uint64_t y = a;
    for (int i = 0; i < 5; ++i) y *= 2 - a * y;
    return y;
  };
  x ^= (x >> 27) ^ (x >> 54);
  x *= inverse(0x1C69B3F74AC4AE35ULL);
  x ^= x >> 33;
  x *= inverse(0x3C79AC492BA7B653ULL);
  x ^= (x >> 27) ^ (x >> 54);
  return x;
}

// The chain's starting value for a context. Never 0.
uint64_t ContextRoot(const HashContext& ctx);

class BlockHasher {
 public:
  // REQUIRES: block_size > 0.
  explicit BlockHasher(int block_size = kDefaultBlockSize,
                       ChainScheme scheme = ChainScheme::kMixChain);

  int block_size() const { return block_size_; }
  ChainScheme scheme() const { return scheme_; }

  // Number of complete blocks in `num_tokens` tokens.
  size_t NumBlocks(size_t num_tokens) const { return num_tokens / block_size_; }

  // The key of one block given its parent key (the root for block 0).
  // REQUIRES: block.size() == block_size().
  BlockKey Next(BlockKey parent, std::span<const uint32_t> block) const;

  // Writes the keys of the complete blocks of `tokens` (chained from `parent`) to `out`,
  // which must have room for NumBlocks(tokens.size()) keys. Returns the number written.
  size_t HashInto(BlockKey parent, std::span<const uint32_t> tokens, BlockKey* out) const;

  // Convenience: all keys of `tokens` under `ctx`.
  std::vector<BlockKey> Hash(const HashContext& ctx, std::span<const uint32_t> tokens) const;

 private:
  const int block_size_;
  const ChainScheme scheme_;
};

}  // namespace aibrix::prefix
