// Jittered exponential backoff for retrying requests to the API server: each delay is drawn
// from [step/2, step], and the step doubles from `initial` up to `max`; Reset() after a
// success. The jitter keeps many replicas that lost the API server together from coming
// back in lockstep.
//
// Thread safety: one thread at a time.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>

namespace aibrix::discovery {

class Backoff {
 public:
  // REQUIRES: 0 < initial <= max.
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max, uint64_t seed)
      : initial_(initial), max_(max), step_(initial), rng_(seed) {}

  // The delay before the next attempt.
  std::chrono::milliseconds Next() {
    const int64_t step = step_.count();
    const int64_t delay = std::uniform_int_distribution<int64_t>(step / 2, step)(rng_);
    step_ = std::min(max_, step_ * 2);
    return std::chrono::milliseconds(delay);
  }
  void Reset() { step_ = initial_; }

 private:
  const std::chrono::milliseconds initial_;
  const std::chrono::milliseconds max_;
  std::chrono::milliseconds step_;
  std::mt19937_64 rng_;
};

}  // namespace aibrix::discovery
