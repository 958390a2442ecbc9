// Per-second rates of a cumulative counter sampled over time, with counter-reset handling:
// a value below the previous one means the counter restarted from zero (an engine restart),
// so the increase since the previous sample is the new value itself, never a negative delta.
//
// Snapshots are kept at least `min_spacing` apart (so a 50 ms scrape loop does not turn
// the window into noise), at most `max_snapshots` and `max_age` old. The rate is the
// reset-corrected increase from the snapshot closest to (last sample - window) to the last
// sample, divided by the time between them; none until that time is at least `min_elapsed`.
//
// Thread safety: a value; one thread at a time.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <optional>

namespace aibrix::metrics {

struct CounterRateOptions {
  std::chrono::nanoseconds min_spacing{std::chrono::seconds(1)};
  std::chrono::nanoseconds window{std::chrono::seconds(10)};
  std::chrono::nanoseconds max_age{std::chrono::minutes(5)};
  size_t max_snapshots = 20;
  std::chrono::nanoseconds min_elapsed{std::chrono::seconds(1)};
};

class CounterRate {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  explicit CounterRate(CounterRateOptions options = {}) : options_(options) {}

  // Records the counter's value at `now` (times must not go backwards).
  void Observe(TimePoint now, double value);
  // Increase per second over the window ending at the last observation; nullopt until there
  // is a snapshot at least min_elapsed older than it.
  std::optional<double> Rate() const;

 private:
  struct Snapshot {
    TimePoint at;
    double total;
  };
  CounterRateOptions options_;
  std::deque<Snapshot> snapshots_;
  double total_ = 0;  // reset-corrected increase since the first observation
  std::optional<double> last_value_;
  TimePoint last_at_{};
};

}  // namespace aibrix::metrics
