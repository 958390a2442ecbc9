#include "aibrix/routing/random_source.h"

#include <random>

namespace aibrix::routing {

namespace {
uint64_t SeedOrEntropy(uint64_t seed) {
  if (seed != 0) return seed;
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}
}  // namespace

RandomSource::RandomSource(uint64_t seed) : state_(SeedOrEntropy(seed)) {}

uint64_t RandomSource::Next() {
  uint64_t z =
      state_.fetch_add(0x9e3779b97f4a7c15ULL, std::memory_order_relaxed) + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace aibrix::routing
