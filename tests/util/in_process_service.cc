#include "tests/util/in_process_service.h"

#include "fmt/format.h"
#include "gtest/gtest.h"
#include "tests/util/metrics_text.h"
#include "tests/util/poll.h"

namespace aibrix::testing {

void InProcessService::Start(const std::string& model, const std::vector<int>& ports,
                             const std::function<void(server::ServiceConfig&)>& tune) {
  model_ = model;
  std::string yaml = fmt::format("models:\n  - name: {}\n    endpoints:\n", model);
  for (int port : ports) yaml += fmt::format("      - \"127.0.0.1:{}\"\n", port);
  config_dir_ = std::make_unique<TempDir>("in-process");

  server::ServiceConfig config;
  config.http_addr = "127.0.0.1:0";
  config.extproc_addr = "";  // the ext_proc tests turn it on (127.0.0.1:0)
  // Tests whose fake engines count connections must not see scrapes; tests of the scraper
  // set an interval.
  config.metric_refresh_ms = 0;
  config.static_config = config_dir_->Write("config.yaml", yaml);
  config.routing_algorithm = "least-request";
  config.routing_seed = 7;
  config.io_threads = 2;
  config.shutdown_delay_ms = 0;
  config.shutdown_grace_ms = 0;
  if (tune) tune(config);
  service_ = std::make_unique<server::Service>(config);
  const absl::Status started = service_->Start();
  ASSERT_TRUE(started.ok()) << started;
  ASSERT_EQ(service_->store().ListPods().size(), ports.size());
}

void InProcessService::Stop() {
  if (service_) service_->Stop();
  service_.reset();
  config_dir_.reset();
}

int InProcessService::TotalRunning() {
  int running = 0;
  for (const store::PodRef& pod : service_->store().ListPods()) running += pod->state->running();
  return running;
}

double InProcessService::Metric(const std::string& series) {
  return SeriesValue(service_->RenderMetrics(), series);
}

void InProcessService::ExpectSettled(int requests, std::chrono::milliseconds deadline) {
  int64_t admitted = 0;
  int64_t finished = 0;
  auto drain_traces = [&] {
    for (const auto& trace : service_->tracker().SwapTraces()) {
      admitted += trace.snapshot.total_requests;
      finished += trace.snapshot.completed_requests;
    }
  };
  const bool settled = Eventually(
      [&] {
        drain_traces();
        return finished >= requests && service_->store().InFlightRequests() == 0 &&
               TotalRunning() == 0;
      },
      deadline);
  EXPECT_TRUE(settled) << "in flight " << service_->store().InFlightRequests() << ", running "
                       << TotalRunning() << ", finished " << finished;
  EXPECT_EQ(service_->store().InFlightRequests(), 0u);
  EXPECT_EQ(TotalRunning(), 0);
  drain_traces();
  EXPECT_EQ(admitted, requests);
  EXPECT_EQ(finished, requests);
  EXPECT_EQ(service_->tracker().TraceJson(model_)["meta_pending_reqs"], 0);
}

}  // namespace aibrix::testing
