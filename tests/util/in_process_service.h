// An in-process aibrix-cache Service for integration tests: one model served by one pod per
// upstream port (a static config in a TempDir of its own), HTTP on port 0, routing with
// least-request (seed 7), two I/O and two worker threads, ext_proc off (tests turn it on with
// `extproc_addr = "127.0.0.1:0"`), engine metrics not scraped (tests of the scraper set
// `metric_refresh_ms`), no shutdown delay; and the checks
// the proxy tests share (running counts, /metrics series, exactly-once settlement).
//
// Thread safety: one owner thread (a test fixture).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "aibrix/server/service.h"
#include "tests/util/temp_dir.h"

namespace aibrix::testing {

class InProcessService {
 public:
  InProcessService() = default;
  ~InProcessService() { Stop(); }
  InProcessService(const InProcessService&) = delete;
  InProcessService& operator=(const InProcessService&) = delete;

  // Starts the service for `model` on `ports` (pods in this order); `tune` adjusts the config
  // first. Reports a fatal test failure when it does not start (use ASSERT_NO_FATAL_FAILURE).
  void Start(const std::string& model, const std::vector<int>& ports,
             const std::function<void(server::ServiceConfig&)>& tune = nullptr);
  // Stops the service and removes its config directory. Idempotent.
  void Stop();

  server::Service& service() { return *service_; }
  // Running requests summed over every pod.
  int TotalRunning();
  // The value of one /metrics series ("name" or "name{labels}"); 0 when absent.
  double Metric(const std::string& series);
  // Every proxied request ended: nothing in flight in the Store, no pod running anything, and
  // the tracker saw exactly `requests` admissions and as many completions (waits up to
  // `deadline` for them).
  void ExpectSettled(int requests, std::chrono::milliseconds deadline);

 private:
  std::string model_;
  std::unique_ptr<TempDir> config_dir_;
  std::unique_ptr<server::Service> service_;
};

}  // namespace aibrix::testing
