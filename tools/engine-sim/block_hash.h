// engine-sim's prefix-cache block hashes: a 64-bit chained hash in the spirit of vLLM's
// (protocols/README.md §2.1), deterministic across processes for a given seed.
//
//   NONE_HASH(seed) = XXH3_64bits_withSeed("engine-sim-none-hash", seed)
//   h_0 = XXH3_64bits_withSeed(LE64(NONE_HASH) ‖ LE32(t_0) … LE32(t_{B-1}), seed)
//   h_i = XXH3_64bits_withSeed(LE64(h_{i-1})  ‖ LE32 tokens of block i,   seed)
//   With a LoRA adapter, its name's bytes are appended to every block's input (vLLM puts
//   the adapter name in each block's extra keys), so adapters never share blocks.
//
// Only full blocks are hashed. Consumers must treat these values as opaque engine keys.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace aibrix::enginesim {

using BlockHash = uint64_t;

// The chain's seed value, the "parent" of block 0.
BlockHash NoneHash(uint64_t seed);

// Hash of one full block whose parent (previous block, or NoneHash) is `parent`.
// `extra`: the LoRA adapter name, empty for the base model.
BlockHash HashBlock(BlockHash parent, std::span<const uint32_t> block_tokens, uint64_t seed,
                    std::string_view extra = {});

// Extends `hashes` (the chain of `tokens` so far) to cover every full block of `tokens`.
// REQUIRES: hashes->size() <= tokens.size() / block_size.
void ExtendBlockHashes(std::span<const uint32_t> tokens, int block_size, uint64_t seed,
                       std::vector<BlockHash>* hashes, std::string_view extra = {});

}  // namespace aibrix::enginesim
