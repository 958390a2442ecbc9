// A counter that many threads update without sharing a cache line: each thread adds to one
// of kStripes padded slots chosen by its thread id; reads sum the slots (rare, e.g. metrics).
//
// Thread safety: all methods are safe from any thread; Value() is a racy-but-atomic sum.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>

namespace aibrix::common {

class StripedCounter {
 public:
  void Add(int64_t delta) {
    stripes_[StripeIndex()].value.fetch_add(delta, std::memory_order_relaxed);
  }
  int64_t Value() const {
    int64_t total = 0;
    for (const Stripe& stripe : stripes_) total += stripe.value.load(std::memory_order_relaxed);
    return total;
  }

 private:
  static constexpr size_t kStripes = 16;
  struct alignas(64) Stripe {
    std::atomic<int64_t> value{0};
  };
  static size_t StripeIndex() {
    thread_local const size_t index =
        std::hash<std::thread::id>{}(std::this_thread::get_id()) % kStripes;
    return index;
  }
  std::array<Stripe, kStripes> stripes_;
};

}  // namespace aibrix::common
