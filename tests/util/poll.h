// Waiting for a condition in tests without fixed sleeps: poll it until it holds or a
// generous deadline passes (the deadline only bounds a failing test; no test asserts speed).
//
// Thread safety: a free function; `probe` runs on the calling thread.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace aibrix::testing {

// Calls `probe` every `every` until it returns true (then true) or `timeout` has passed
// (then false, after one last call).
inline bool Eventually(const std::function<bool()>& probe,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10),
                       std::chrono::milliseconds every = std::chrono::milliseconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (probe()) return true;
    std::this_thread::sleep_for(every);
  }
  return probe();
}

}  // namespace aibrix::testing
