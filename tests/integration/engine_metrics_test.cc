// The service scrapes its pods' engine metrics into the Store and re-exports them on its own
// /metrics (spec §9.1); a pod whose engine stops answering goes stale; a deleted pod's series
// disappear.
#include <atomic>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/util/in_process_service.h"
#include "tests/util/poll.h"

namespace aibrix {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kModel[] = "meta-llama/Llama-3.1-8B-Instruct";

TEST(EngineMetricsTest, ScrapedReexportedAndStale) {
  std::ifstream in(std::string(AIBRIX_TESTDATA_DIR) + "/metrics/vllm_metrics_sample.txt");
  std::stringstream sample;
  sample << in.rdbuf();
  std::atomic<bool> healthy{true};
  httplib::Server engine;
  engine.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
    if (healthy.load()) {
      res.set_content(sample.str(), "text/plain; version=0.0.4");
    } else {
      res.status = 500;
    }
  });
  const int port = engine.bind_to_any_port("127.0.0.1");
  std::thread engine_thread([&] { engine.listen_after_bind(); });
  {
    testing::InProcessService service;
    ASSERT_NO_FATAL_FAILURE(service.Start(kModel, {port}, [](server::ServiceConfig& config) {
      config.metric_refresh_ms = 20;
      config.metric_max_age_ms = 300;
    }));
    const store::PodRef pod = service.service().store().ListPods().front();
    ASSERT_TRUE(testing::Eventually(
        [&] { return pod->state->ModelMetric(kModel, "kv_cache_usage_perc").has_value(); }));
    EXPECT_EQ(pod->state->ModelMetric(kModel, "kv_cache_usage_perc")->Simple(), 0.0421875);
    const std::string text = service.service().RenderMetrics();
    EXPECT_THAT(text, HasSubstr("num_requests_running{engine_type=\"vllm\""));
    EXPECT_THAT(text, HasSubstr("model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 3\n"));
    EXPECT_THAT(text, HasSubstr("time_to_first_token_seconds_p90{"));
    EXPECT_THAT(text, HasSubstr("model_replicas{"));
    EXPECT_THAT(text, HasSubstr("aibrix_cache_metric_scrapes_total{result=\"ok\"}"));
    EXPECT_EQ(service.Metric("aibrix_cache_stale_metrics"), 0);

    healthy.store(false);
    ASSERT_TRUE(testing::Eventually([&] { return service.Metric("aibrix_cache_stale_metrics") > 0; }));
    EXPECT_THAT(service.service().RenderMetrics(), Not(HasSubstr("num_requests_running{")));
    EXPECT_THAT(service.service().RenderMetrics(),
                HasSubstr("aibrix_cache_metric_scrapes_total{result=\"status\"}"));
    EXPECT_GT(service.Metric("llm_engine_metrics_query_fail{namespace=\"" + pod->ns() +
                             "\",pod=\"" + pod->name() + "\",reason=\"status\"}"),
              0)
        << service.service().RenderMetrics();
  }
  engine.stop();
  engine_thread.join();
}

}  // namespace
}  // namespace aibrix
