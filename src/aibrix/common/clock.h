// An injectable clock, the one seam through which tests control time.
//
// Thread safety: implementations are safe to call from any thread.
#pragma once

#include <atomic>
#include <chrono>

namespace aibrix::common {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic time, for intervals and timeouts.
  virtual std::chrono::steady_clock::time_point Now() const = 0;
  // Wall-clock time, for timestamps shown to people and other processes.
  virtual std::chrono::system_clock::time_point WallNow() const = 0;
};

// The process's real clocks.
class SystemClock final : public Clock {
 public:
  std::chrono::steady_clock::time_point Now() const override {
    return std::chrono::steady_clock::now();
  }
  std::chrono::system_clock::time_point WallNow() const override {
    return std::chrono::system_clock::now();
  }
  // A shared instance (stateless, so sharing it is safe).
  static const SystemClock& Instance() {
    static const SystemClock clock;
    return clock;
  }
};

// A clock that moves only when told to; both time lines advance together.
class FakeClock final : public Clock {
 public:
  std::chrono::steady_clock::time_point Now() const override {
    return std::chrono::steady_clock::time_point(offset());
  }
  std::chrono::system_clock::time_point WallNow() const override {
    return std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(offset()));
  }
  void Advance(std::chrono::nanoseconds d) { offset_ns_.fetch_add(d.count()); }

 private:
  std::chrono::nanoseconds offset() const { return std::chrono::nanoseconds(offset_ns_.load()); }
  std::atomic<int64_t> offset_ns_{1'000'000'000};
};

}  // namespace aibrix::common
