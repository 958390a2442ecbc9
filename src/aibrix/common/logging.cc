#include "aibrix/common/logging.h"

#include <mutex>

#include "spdlog/sinks/stdout_color_sinks.h"

namespace aibrix::common {
namespace {

std::mutex& RegistryMutex() {
  static std::mutex mu;
  return mu;
}

}  // namespace

std::shared_ptr<spdlog::logger> Logger(const std::string& component) {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  if (auto existing = spdlog::get(component)) return existing;
  auto logger = spdlog::stderr_color_mt(component);
  logger->set_level(spdlog::get_level());
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ [%n] %v");
  return logger;
}

bool SetLogLevel(const std::string& level) {
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") return false;
  spdlog::set_level(parsed);
  return true;
}

bool RateLimiter::Allow(uint64_t* suppressed) {
  const int64_t now =
      std::chrono::duration_cast<std::chrono::nanoseconds>(clock_.Now().time_since_epoch()).count();
  int64_t start = window_start_ns_.load(std::memory_order_relaxed);
  if (now - start >= interval_ns_ &&
      window_start_ns_.compare_exchange_strong(start, now, std::memory_order_relaxed)) {
    in_window_.store(0, std::memory_order_relaxed);
  }
  if (in_window_.fetch_add(1, std::memory_order_relaxed) < per_interval_) {
    uint64_t dropped = suppressed_.exchange(0, std::memory_order_relaxed);
    if (suppressed != nullptr) *suppressed = dropped;
    return true;
  }
  suppressed_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

}  // namespace aibrix::common
