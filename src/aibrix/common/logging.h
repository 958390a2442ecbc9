// Logging: one spdlog logger per component, and a rate limiter for log lines on paths that
// untrusted input can hit many times per second.
//
// Thread safety: Logger() and RateLimiter are safe to use from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "aibrix/common/clock.h"
#include "spdlog/spdlog.h"

namespace aibrix::common {

// The logger named `component`, created on first use with the process-wide sink and level.
std::shared_ptr<spdlog::logger> Logger(const std::string& component);

// Sets the level of every existing and future logger ("trace", "debug", "info", "warn",
// "error", "off"). Returns false for an unknown level name.
bool SetLogLevel(const std::string& level);

// Allows at most `per_interval` events in each interval; counts the suppressed ones so the
// next allowed line can say how many were dropped. Lock-free. Intervals are measured on
// `clock` (monotonic time), which must outlive the limiter; tests pass a FakeClock.
class RateLimiter {
 public:
  explicit RateLimiter(int per_interval = 5,
                       std::chrono::nanoseconds interval = std::chrono::seconds(1),
                       const Clock& clock = SystemClock::Instance())
      : per_interval_(per_interval), interval_ns_(interval.count()), clock_(clock) {}

  // True if the caller may log now. `suppressed`, when non-null, receives the number of
  // events dropped since the last allowed one.
  bool Allow(uint64_t* suppressed = nullptr);

 private:
  // Constant after construction.
  const int per_interval_;
  const int64_t interval_ns_;
  const Clock& clock_;
  // Updated with relaxed atomics by every caller.
  std::atomic<int64_t> window_start_ns_{0};
  std::atomic<int> in_window_{0};
  std::atomic<uint64_t> suppressed_{0};
};

// Logs a warning of `component` when `limiter` allows it, ending the line with the number
// of similar lines suppressed since the last one logged. Typical use, on a path that bad
// input can hit many times per second:
//   static common::RateLimiter limiter;
//   common::WarnLimited(limiter, "kvevents", "pod {}: bad frame", pod);
template <typename... Args>
void WarnLimited(RateLimiter& limiter, const std::string& component,
                 fmt::format_string<Args...> format, Args&&... args) {
  uint64_t suppressed = 0;
  if (!limiter.Allow(&suppressed)) return;
  Logger(component)->warn("{} ({} similar lines suppressed)",
                          fmt::format(format, std::forward<Args>(args)...), suppressed);
}

}  // namespace aibrix::common
