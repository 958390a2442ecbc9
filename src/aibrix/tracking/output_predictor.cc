#include "aibrix/tracking/output_predictor.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <mutex>

namespace aibrix::tracking {
namespace {

// ceil(log2(max + 1)) without floating point: the bit width of max.
int BucketsFor(int64_t max_tokens) {
  return static_cast<int>(std::bit_width(static_cast<uint64_t>(std::max<int64_t>(max_tokens, 1))));
}

int RingSlotsFor(std::chrono::nanoseconds window) {
  const std::chrono::nanoseconds period = OutputPredictor::kSlotPeriod;
  window = std::max(window, period);
  int64_t slots = window / period + 1;
  if (window % period != std::chrono::nanoseconds::zero()) ++slots;
  return static_cast<int>(slots);
}

constexpr int64_t kColdLimit = 4096;

}  // namespace

OutputPredictor::OutputPredictor(const common::Clock& clock, Options options)
    : clock_(clock),
      cold_start_(options.cold_start),
      input_buckets_(BucketsFor(options.max_input_tokens)),
      output_buckets_(BucketsFor(options.max_output_tokens)),
      cells_(input_buckets_ * output_buckets_),
      ring_slots_(RingSlotsFor(options.window)),
      start_(clock.Now()),
      slots_(static_cast<size_t>(ring_slots_) * static_cast<size_t>(cells_)),
      summary_(static_cast<size_t>(cells_)),
      input_sums_(static_cast<size_t>(input_buckets_)),
      rng_state_(options.seed) {}

int OutputPredictor::TokenToBucket(int64_t tokens, int limit) {
  if (tokens <= 0 || limit <= 1) return 0;
  const auto bucket = static_cast<int64_t>(std::lround(std::log2(static_cast<double>(tokens))));
  return static_cast<int>(std::clamp<int64_t>(bucket, 0, limit - 1));
}

int64_t OutputPredictor::CurrentPeriod() const {
  const auto elapsed = clock_.Now() - start_;
  // A clock reading from before construction belongs to period 0.
  if (elapsed <= std::chrono::steady_clock::duration::zero()) return 0;
  return elapsed / std::chrono::duration_cast<std::chrono::steady_clock::duration>(kSlotPeriod);
}

void OutputPredictor::MaybeAdvance() {
  const int64_t now = CurrentPeriod();
  if (now <= period_.load(std::memory_order_acquire)) return;
  std::unique_lock lock(mu_);
  const int64_t current = period_.load(std::memory_order_relaxed);
  if (now <= current) return;  // another caller advanced meanwhile
  // Live periods go from (current - K, current] to (now - K, now], K = ring_slots_ - 1:
  // retire the periods (current - K, now - K].
  const int64_t kept = ring_slots_ - 1;
  const int64_t first = std::max<int64_t>(current - kept + 1, 0);
  const int64_t last = now - kept;
  if (last - first + 1 >= ring_slots_) {
    // Quiet for longer than the ring: everything goes.
    for (auto& counter : slots_) counter.store(0, std::memory_order_relaxed);
    for (auto& counter : summary_) counter.store(0, std::memory_order_relaxed);
    for (auto& counter : input_sums_) counter.store(0, std::memory_order_relaxed);
  } else {
    for (int64_t p = first; p <= last; ++p) RetireSlot(p % ring_slots_);
  }
  period_.store(now, std::memory_order_release);
}

void OutputPredictor::RetireSlot(int64_t slot) {
  std::atomic<int64_t>* cells = &slots_[static_cast<size_t>(slot * cells_)];
  for (int i = 0; i < cells_; ++i) {
    const int64_t value = cells[i].exchange(0, std::memory_order_relaxed);
    if (value == 0) continue;
    summary_[static_cast<size_t>(i)].fetch_sub(value, std::memory_order_relaxed);
    input_sums_[static_cast<size_t>(i / output_buckets_)].fetch_sub(value,
                                                                    std::memory_order_relaxed);
  }
}

void OutputPredictor::AddTrace(int64_t input_tokens, int64_t output_tokens, int64_t count) {
  if (count <= 0) return;
  MaybeAdvance();
  const int in = TokenToBucket(input_tokens, input_buckets_);
  const int cell = BucketIndex(in, TokenToBucket(output_tokens, output_buckets_));
  std::shared_lock lock(mu_);
  const int64_t slot = period_.load(std::memory_order_relaxed) % ring_slots_;
  slots_[static_cast<size_t>(slot * cells_ + cell)].fetch_add(count, std::memory_order_relaxed);
  summary_[static_cast<size_t>(cell)].fetch_add(count, std::memory_order_relaxed);
  input_sums_[static_cast<size_t>(in)].fetch_add(count, std::memory_order_release);
}

int64_t OutputPredictor::Predict(int64_t prompt_tokens) {
  MaybeAdvance();
  const int in = TokenToBucket(prompt_tokens, input_buckets_);
  std::shared_lock lock(mu_);
  const int64_t range = input_sums_[static_cast<size_t>(in)].load(std::memory_order_acquire);
  if (range <= 0) return ColdPrediction(prompt_tokens);
  const int64_t cursor = NextRandom(range);
  int64_t accumulated = 0;
  for (int out = 0; out < output_buckets_; ++out) {
    accumulated +=
        summary_[static_cast<size_t>(BucketIndex(in, out))].load(std::memory_order_relaxed);
    if (cursor < accumulated) return int64_t{1} << out;
  }
  // Unreachable while writers keep their order (see summary_); kept as the reference's fallback.
  return int64_t{1} << (output_buckets_ - 1);
}

int64_t OutputPredictor::InputCount(int64_t input_tokens) {
  MaybeAdvance();
  std::shared_lock lock(mu_);
  return input_sums_[static_cast<size_t>(TokenToBucket(input_tokens, input_buckets_))].load(
      std::memory_order_acquire);
}

int64_t OutputPredictor::Count(int64_t input_tokens, int64_t output_tokens) {
  MaybeAdvance();
  const int cell = BucketIndex(TokenToBucket(input_tokens, input_buckets_),
                               TokenToBucket(output_tokens, output_buckets_));
  std::shared_lock lock(mu_);
  return summary_[static_cast<size_t>(cell)].load(std::memory_order_relaxed);
}

int64_t OutputPredictor::ColdPrediction(int64_t prompt_tokens) {
  switch (cold_start_) {
    case ColdStart::kOptimistic:
      return 1;
    case ColdStart::kRandom:
      return 1 + NextRandom(kColdLimit);
    case ColdStart::kInput:
      return std::max<int64_t>(prompt_tokens, 1);
    case ColdStart::kPessimistic:
      return kColdLimit;
  }
  return 1;
}

int64_t OutputPredictor::NextRandom(int64_t n) {
  // splitmix64: one atomic add per draw, no lock, good enough spread for a weighted pick.
  uint64_t z = rng_state_.fetch_add(0x9e3779b97f4a7c15ULL, std::memory_order_relaxed) +
               0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return static_cast<int64_t>(z % static_cast<uint64_t>(n));
}

}  // namespace aibrix::tracking
