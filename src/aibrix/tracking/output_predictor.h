// aibrix::tracking::OutputPredictor — guesses how many tokens a request will generate from the
// (input, output) token counts of the model's recently finished requests: the reference's
// SimpleOutputPredictor (spec §3.4).
//
// Finished requests are counted in log2 buckets of input and output tokens, in a ring of 10 s
// slots, and a summary holds the sum of the live slots. Predict(prompt) draws an output bucket
// at random, weighted by the counts seen for the prompt's input bucket, and returns 2^bucket.
// With no history for that input bucket it returns the cold-start value (1, "optimistic").
//
// Retention: with `window` W the ring has W/10 s + 1 slots (+1 more if W is not a multiple of
// 10 s), as in the reference, and traces stay in the summary while fewer than ring_slots()-1
// whole 10 s periods have passed since the period they were added in (the current, partial
// period counts as one). For W = 240 s a trace is visible for 230-240 s after it was added.
//
// Differences from the reference, on purpose (the spec's ⚠ oddities):
//  - Slots are indexed by absolute 10 s period (period p lives in slot p % ring_slots()), so
//    after a gap of several periods exactly the periods that left the window are retired; the
//    reference advanced the head by one slot and kept a per-slot "skip" count instead, and
//    logged and skipped the rotation when its bookkeeping disagreed.
//  - Predict() also retires expired periods, so a model that went quiet stops predicting from
//    traces older than the window (the reference rotated only on AddTrace).
//  - Rotation runs on the calling thread, at most once per 10 s period, not in a goroutine.
//
// Thread safety: every method may be called from any thread. AddTrace and Predict hold a
// shared lock and touch only atomic counters; once per 10 s period one caller takes the lock
// exclusively to retire the expired slots. Random draws come from a lock-free, seeded
// splitmix64 sequence, so a single-threaded caller gets a deterministic series.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <shared_mutex>
#include <vector>

#include "aibrix/common/clock.h"

namespace aibrix::tracking {

// What Predict returns for an input bucket with no history.
enum class ColdStart {
  kOptimistic,   // 1 (the reference's default)
  kRandom,       // uniform in [1, 4096]
  kInput,        // the prompt length (at least 1)
  kPessimistic,  // 4096
};

class OutputPredictor {
 public:
  // Width of one ring slot.
  static constexpr std::chrono::seconds kSlotPeriod{10};

  struct Options {
    // Largest token counts told apart; larger ones share the last bucket.
    int64_t max_input_tokens = int64_t{1} << 20;
    int64_t max_output_tokens = int64_t{1} << 20;
    // How long a trace counts (see Retention above). Values below 10 s are raised to 10 s.
    std::chrono::nanoseconds window = std::chrono::seconds(240);
    ColdStart cold_start = ColdStart::kOptimistic;
    uint64_t seed = 0x5eed;
  };

  // `clock` is borrowed and must outlive the predictor; time starts at construction.
  // Non-positive maxima are treated as 1.
  OutputPredictor(const common::Clock& clock, Options options);
  OutputPredictor(const OutputPredictor&) = delete;
  OutputPredictor& operator=(const OutputPredictor&) = delete;

  // Counts `count` finished requests with these token counts in the current period.
  // Non-positive `count` is ignored; negative token counts fall in bucket 0.
  void AddTrace(int64_t input_tokens, int64_t output_tokens, int64_t count = 1);

  // A power of two drawn from the output buckets of `prompt_tokens`' input bucket, weighted by
  // their counts; the cold-start value when that input bucket has no live traces. Always >= 1.
  int64_t Predict(int64_t prompt_tokens);

  // --- Introspection (tests, debug pages) ---------------------------------------------
  // ceil(log2(max + 1)): 21 for 2^20, 4 for 8, 5 for 16.
  int input_buckets() const { return input_buckets_; }
  int output_buckets() const { return output_buckets_; }
  // Counters per slot (input_buckets × output_buckets). The reference had one more per slot,
  // its "skip" counter, which the absolute period index replaces.
  int cells_per_slot() const { return cells_; }
  // window/10 s + 1, +1 if the window is not a multiple of 10 s: 7 for 60 s, 8 for 65 s.
  int ring_slots() const { return ring_slots_; }
  // 0 for tokens <= 0, else round(log2(tokens)) clamped to [0, limit - 1].
  static int TokenToBucket(int64_t tokens, int limit);
  // Row-major cell of (input bucket, output bucket).
  int BucketIndex(int input_bucket, int output_bucket) const {
    return input_bucket * output_buckets_ + output_bucket;
  }
  // Live traces whose input falls in `input_tokens`' bucket (the reference's inputsSums).
  // Retires expired periods first.
  int64_t InputCount(int64_t input_tokens);
  // Live traces in the (input, output) bucket pair (the reference's summary `inputs`).
  int64_t Count(int64_t input_tokens, int64_t output_tokens);

 private:
  // The 10 s period `clock_` is in, counted from construction.
  int64_t CurrentPeriod() const;
  // Retires the periods that left the window if the clock entered a new period.
  void MaybeAdvance();
  // Subtracts slot `slot` from the summaries and zeroes it. REQUIRES: mu_ held exclusively.
  void RetireSlot(int64_t slot);
  int64_t ColdPrediction(int64_t prompt_tokens);
  // Uniform in [0, n). REQUIRES: n > 0.
  int64_t NextRandom(int64_t n);

  // Constant after construction.
  const common::Clock& clock_;
  const ColdStart cold_start_;
  const int input_buckets_;
  const int output_buckets_;
  const int cells_;
  const int ring_slots_;
  const std::chrono::steady_clock::time_point start_;

  // Shared by AddTrace/Predict (which only touch atomics), exclusive for retiring slots.
  // std::shared_mutex rather than absl::Mutex so ThreadSanitizer sees it.
  mutable std::shared_mutex mu_;
  // The newest period; changes only under mu_ held exclusively, read without it as a hint.
  std::atomic<int64_t> period_{0};
  // ring_slots_ × cells_ counters, slot-major.
  std::vector<std::atomic<int64_t>> slots_;
  // Sum of the live slots, per cell and per input bucket. Writers add to summary_ before
  // input_sums_ (release), so a reader that loads input_sums_ (acquire) then walks summary_
  // sees at least that total.
  std::vector<std::atomic<int64_t>> summary_;
  std::vector<std::atomic<int64_t>> input_sums_;

  std::atomic<uint64_t> rng_state_;
};

}  // namespace aibrix::tracking
