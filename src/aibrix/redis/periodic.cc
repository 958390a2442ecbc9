#include "aibrix/redis/periodic.h"

#include <condition_variable>
#include <mutex>

namespace aibrix::redis {

PeriodicThread::PeriodicThread(DelayFn delay, std::function<void()> round)
    : delay_(std::move(delay)), round_(std::move(round)) {}

void PeriodicThread::Start() {
  if (thread_.joinable()) return;
  thread_ = std::jthread([this](std::stop_token stop) { Loop(stop); });
}

void PeriodicThread::Stop() {
  if (!thread_.joinable()) return;
  thread_.request_stop();
  thread_.join();
}

void PeriodicThread::Loop(std::stop_token stop) {
  std::mutex mu;
  std::condition_variable_any wake;
  std::unique_lock<std::mutex> lock(mu);
  while (!stop.stop_requested()) {
    // Returns early only when stop is requested (the predicate is never true otherwise).
    wake.wait_for(lock, stop, delay_(), [] { return false; });
    if (stop.stop_requested()) break;
    round_();
  }
}

}  // namespace aibrix::redis
