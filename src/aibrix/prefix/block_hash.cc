#include "aibrix/prefix/block_hash.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstring>
#include <string>

namespace aibrix::prefix {
namespace {

constexpr uint64_t kOdd = 0x9E3779B97F4A7C15ULL;
constexpr uint64_t kZeroReplacement = 0x8000000000000001ULL;
constexpr uint64_t kContextSeed = 0x61696272'69782d70ULL;  // "aibrix-p"

inline BlockKey NonZero(uint64_t k) { return k == 0 ? kZeroReplacement : k; }

inline BlockKey MixStep(BlockKey parent, const uint32_t* block, size_t bytes) {
  const uint64_t h = XXH3_64bits(block, bytes);
  return NonZero(Mix64((parent * kOdd) ^ h));
}

inline BlockKey SeededStep(BlockKey parent, const uint32_t* block, size_t bytes) {
  return NonZero(XXH3_64bits_withSeed(block, bytes, parent));
}

}  // namespace

uint64_t ContextRoot(const HashContext& ctx) {
  // Length-prefixed fields so ("ab","c") and ("a","bc") differ.
  std::string buf;
  buf.reserve(ctx.model.size() + ctx.adapter.size() + 20);
  const auto put_u64 = [&buf](uint64_t v) { buf.append(reinterpret_cast<const char*>(&v), 8); };
  put_u64(ctx.model.size());
  buf.append(ctx.model);
  put_u64(ctx.adapter.size());
  buf.append(ctx.adapter);
  put_u64(ctx.kv_group);
  return NonZero(XXH3_64bits_withSeed(buf.data(), buf.size(), kContextSeed));
}

BlockHasher::BlockHasher(int block_size, ChainScheme scheme)
    : block_size_(block_size > 0 ? block_size : kDefaultBlockSize), scheme_(scheme) {}

BlockKey BlockHasher::Next(BlockKey parent, std::span<const uint32_t> block) const {
  const size_t bytes = sizeof(uint32_t) * block_size_;
  return scheme_ == ChainScheme::kMixChain ? MixStep(parent, block.data(), bytes)
                                           : SeededStep(parent, block.data(), bytes);
}

size_t BlockHasher::HashInto(BlockKey parent, std::span<const uint32_t> tokens,
                             BlockKey* out) const {
  const size_t n = tokens.size() / block_size_;
  const size_t bytes = sizeof(uint32_t) * block_size_;
  const uint32_t* p = tokens.data();
  if (scheme_ == ChainScheme::kMixChain) {
    for (size_t i = 0; i < n; ++i, p += block_size_) {
      parent = MixStep(parent, p, bytes);
      out[i] = parent;
    }
  } else {
    for (size_t i = 0; i < n; ++i, p += block_size_) {
      parent = SeededStep(parent, p, bytes);
      out[i] = parent;
    }
  }
  return n;
}

std::vector<BlockKey> BlockHasher::Hash(const HashContext& ctx,
                                        std::span<const uint32_t> tokens) const {
  std::vector<BlockKey> keys(NumBlocks(tokens.size()));
  HashInto(ContextRoot(ctx), tokens, keys.data());
  return keys;
}

}  // namespace aibrix::prefix
