// aibrix::redis::PeriodicThread — a thread that runs a round, waits, and runs it again until
// stopped: each Redis feature runs on one, so no Redis I/O ever happens on an HTTP or routing
// thread.
//
// Thread safety: Start and Stop from one owner thread; `round` and `delay` run on the
// periodic thread only.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <thread>

namespace aibrix::redis {

class PeriodicThread {
 public:
  // How long to wait before the next round (real time; computed before each wait).
  using DelayFn = std::function<std::chrono::nanoseconds()>;

  PeriodicThread(DelayFn delay, std::function<void()> round);
  ~PeriodicThread() { Stop(); }
  PeriodicThread(const PeriodicThread&) = delete;
  PeriodicThread& operator=(const PeriodicThread&) = delete;

  // Starts the thread: wait delay(), run round(), repeat. Idempotent.
  void Start();
  // Wakes the thread and joins it (a round in progress finishes first). Idempotent.
  void Stop();

 private:
  void Loop(std::stop_token stop);

  const DelayFn delay_;
  const std::function<void()> round_;
  std::jthread thread_;
};

}  // namespace aibrix::redis
