#include "aibrix/prefix/epoch.h"

#include <thread>

namespace aibrix::prefix {

int EpochManager::StripeOfThisThread() {
  static std::atomic<int> next{0};
  thread_local const int stripe = next.fetch_add(1, std::memory_order_relaxed) % kStripes;
  return stripe;
}

EpochManager::ReadGuard::ReadGuard(EpochManager& m) {
  const uint64_t e = m.epoch_.load(std::memory_order_seq_cst);
  counter_ = &m.stripes_[StripeOfThisThread()].active[e & 1];
  counter_->fetch_add(1, std::memory_order_seq_cst);
}

void EpochManager::Synchronize() {
  std::lock_guard<std::mutex> lock(sync_mu_);
  for (int round = 0; round < 2; ++round) {
    const uint64_t old = epoch_.fetch_add(1, std::memory_order_seq_cst);
    for (auto& stripe : stripes_) {
      int spins = 0;
      while (stripe.active[old & 1].load(std::memory_order_seq_cst) != 0) {
        if (++spins > 64) std::this_thread::yield();
      }
    }
  }
}

}  // namespace aibrix::prefix
