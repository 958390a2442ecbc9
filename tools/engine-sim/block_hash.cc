#include "block_hash.h"

#include <cstring>
#include <string_view>

#include "xxhash.h"

namespace aibrix::enginesim {

BlockHash NoneHash(uint64_t seed) {
  static constexpr std::string_view kNone = "engine-sim-none-hash";
  return XXH3_64bits_withSeed(kNone.data(), kNone.size(), seed);
}

BlockHash HashBlock(BlockHash parent, std::span<const uint32_t> block_tokens, uint64_t seed,
                    std::string_view extra) {
  // Fixed little-endian layout so the value does not depend on the host.
  unsigned char stack_buf[8 + 4 * 64];
  std::vector<unsigned char> heap_buf;
  const size_t size = 8 + 4 * block_tokens.size() + extra.size();
  unsigned char* buf = stack_buf;
  if (size > sizeof stack_buf) {
    heap_buf.resize(size);
    buf = heap_buf.data();
  }
  for (int i = 0; i < 8; ++i) buf[i] = static_cast<unsigned char>(parent >> (8 * i));
  for (size_t t = 0; t < block_tokens.size(); ++t) {
    for (int i = 0; i < 4; ++i) {
      buf[8 + 4 * t + i] = static_cast<unsigned char>(block_tokens[t] >> (8 * i));
    }
  }
  if (!extra.empty()) std::memcpy(buf + 8 + 4 * block_tokens.size(), extra.data(), extra.size());
  return XXH3_64bits_withSeed(buf, size, seed);
}

void ExtendBlockHashes(std::span<const uint32_t> tokens, int block_size, uint64_t seed,
                       std::vector<BlockHash>* hashes, std::string_view extra) {
  const size_t full = tokens.size() / static_cast<size_t>(block_size);
  for (size_t i = hashes->size(); i < full; ++i) {
    const BlockHash parent = i == 0 ? NoneHash(seed) : (*hashes)[i - 1];
    hashes->push_back(HashBlock(parent, tokens.subspan(i * block_size, block_size), seed, extra));
  }
}

}  // namespace aibrix::enginesim
