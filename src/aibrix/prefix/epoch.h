// Epoch-based reclamation for the prefix index's lock-free readers.
//
// Readers wrap every access to shared arrays in a ReadGuard (two atomic increments on a
// per-thread stripe, no lock, no shared cache line with other reader threads in the common
// case). A writer that has unpublished an object (swapped a pointer) calls Synchronize(),
// which returns once every reader that could still see the old object has left; the writer
// may then free it. Synchronize() flips the epoch twice and drains each parity (the classic
// two-phase grace period), so a reader holding a stale epoch value cannot slip through.
//
// Thread safety: ReadGuard may be created on any thread (nesting is allowed). Synchronize()
// may be called from any thread that is not inside a ReadGuard (it would wait for itself).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>

namespace aibrix::prefix {

class EpochManager {
 public:
  EpochManager() = default;
  EpochManager(const EpochManager&) = delete;
  EpochManager& operator=(const EpochManager&) = delete;

  class ReadGuard {
   public:
    explicit ReadGuard(EpochManager& m);
    ~ReadGuard() { counter_->fetch_sub(1, std::memory_order_seq_cst); }
    ReadGuard(const ReadGuard&) = delete;
    ReadGuard& operator=(const ReadGuard&) = delete;

   private:
    std::atomic<int64_t>* counter_;
  };

  // Blocks until every ReadGuard that existed when the call started has been destroyed.
  void Synchronize();

 private:
  static constexpr int kStripes = 16;
  struct alignas(64) Stripe {
    std::array<std::atomic<int64_t>, 2> active{};
  };
  static int StripeOfThisThread();

  std::atomic<uint64_t> epoch_{0};
  std::array<Stripe, kStripes> stripes_{};
  std::mutex sync_mu_;  // serialises Synchronize() callers
};

}  // namespace aibrix::prefix
