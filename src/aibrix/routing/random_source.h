// RandomSource: the routing module's seeded, lock-free random numbers (tie-breaks, `random`,
// the prefix-cache shuffle). SplitMix64 over an atomic counter: one fetch_add per draw, so
// concurrent routers never serialise, and a single-threaded test sees one fixed sequence per
// seed.
//
// Thread safety: every method may be called concurrently.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace aibrix::routing {

class RandomSource {
 public:
  // seed 0 = seed from std::random_device.
  explicit RandomSource(uint64_t seed);
  RandomSource(const RandomSource&) = delete;
  RandomSource& operator=(const RandomSource&) = delete;

  // A uniformly distributed 64-bit value.
  uint64_t Next();
  // A value in [0, n). REQUIRES: n > 0.
  // (Modulo bias is below 2^-50 for the pod counts routing sees.)
  size_t Uniform(size_t n) { return static_cast<size_t>(Next() % n); }

 private:
  std::atomic<uint64_t> state_;
};

}  // namespace aibrix::routing
