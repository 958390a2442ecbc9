#include "aibrix/metrics/reexport.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>

#include "aibrix/store/test_pods.h"
#include "prometheus/text_serializer.h"

namespace aibrix::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kModel[] = "org/model-a";

class ExporterTest : public ::testing::Test {
 protected:
  ExporterTest() {
    ExporterOptions options;
    options.max_age = std::chrono::milliseconds(1000);
    options.gateway_pod = "gw-0";
    options.clock = &clock_;
    exporter_ =
        std::make_unique<EngineMetricsExporter>(store_, EngineMetricRegistry::Default(), options);
  }

  void AddPod(const std::string& name, bool ready = true) {
    store::PodObject pod = store::testing::MakePod(name, kModel);
    pod.ready_condition = ready;
    pod.labels[store::kRoleNameLabel] = "worker";
    ASSERT_TRUE(store_.AddPod(pod));
  }

  store::MetricValue Simple(double v) {
    store::MetricValue value;
    value.value = store::SimpleMetric{v, {}};
    value.scraped_at = clock_.Now();
    return value;
  }
  store::MetricValue Hist() {
    store::HistogramMetric h;
    h.sum = 10;
    h.count = 4;
    h.buckets = {{1.0, 1}, {2.0, 3}, {std::numeric_limits<double>::infinity(), 4}};
    store::MetricValue value;
    value.value = h;
    value.scraped_at = clock_.Now();
    return value;
  }

  std::string Render() { return prometheus::TextSerializer().Serialize(exporter_->Collect()); }

  common::FakeClock clock_;
  store::Store store_;
  std::unique_ptr<EngineMetricsExporter> exporter_;
};

TEST_F(ExporterTest, ReexportsWithTheReferenceNamesAndLabels) {
  AddPod("p0");
  ASSERT_TRUE(
      store_.SetPodModelMetric("default/p0", kModel, "prompt_tokens_total", Simple(500)).ok());
  ASSERT_TRUE(
      store_.SetPodModelMetric("default/p0", kModel, "num_requests_running", Simple(3)).ok());
  ASSERT_TRUE(
      store_.SetPodModelMetric("default/p0", kModel, "e2e_request_latency_seconds", Hist()).ok());
  ASSERT_TRUE(store_.SetPodMetric("default/p0", "http_requests_total", Simple(9)).ok());
  // Not exported: internal (no registry entry) and label-query values.
  ASSERT_TRUE(
      store_.SetPodMetric("default/p0", "realtime_running_requests_drain_rate_1m", Simple(1)).ok());
  ASSERT_TRUE(store_.SetPodMetric("default/p0", "max_lora", Simple(4)).ok());
  const std::string text = Render();
  const std::string labels =
      "engine_type=\"vllm\",gateway_pod=\"gw-0\",model=\"org/model-a\",namespace=\"default\","
      "pod=\"p0\",role=\"worker\",role_replica_index=\"\",roleset=\"\",model_name=\"org/model-a\"";
  EXPECT_THAT(text, HasSubstr("# TYPE prompt_tokens_total counter\nprompt_tokens_total{" + labels +
                              "} 500\n"));
  EXPECT_THAT(text, HasSubstr("num_requests_running{" + labels + "} 3\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE e2e_request_latency_seconds histogram"));
  EXPECT_THAT(text, HasSubstr("e2e_request_latency_seconds_count{" + labels + "} 4\n"));
  EXPECT_THAT(text, HasSubstr("e2e_request_latency_seconds_bucket{" + labels + ",le=\"2\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("e2e_request_latency_seconds_p50{" + labels + "} 1.5\n"));
  EXPECT_THAT(text, HasSubstr("e2e_request_latency_seconds_p99{"));
  EXPECT_THAT(text,
              HasSubstr("http_requests_total{engine_type=\"vllm\",gateway_pod=\"gw-0\",model=\"\","
                        "namespace=\"default\",pod=\"p0\",role=\"worker\","
                        "role_replica_index=\"\",roleset=\"\"} 9\n"));
  EXPECT_THAT(text, HasSubstr("model_replicas{engine_type=\"vllm\",gateway_pod=\"gw-0\","
                              "model=\"org/model-a\",namespace=\"default\",pod=\"p0\","
                              "role=\"worker\",role_replica_index=\"\",roleset=\"\","
                              "model_name=\"org/model-a\"} 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("realtime_running_requests_drain_rate_1m")));
  EXPECT_THAT(text, Not(HasSubstr("max_lora")));
  EXPECT_THAT(text, HasSubstr("aibrix_cache_stale_metrics 0\n"));
  // Counters are the engine's value, whatever the number of scrapes.
  EXPECT_THAT(Render(), HasSubstr("prompt_tokens_total{" + labels + "} 500\n"));
}

TEST_F(ExporterTest, StaleValuesAreCountedNotExported) {
  AddPod("p0");
  ASSERT_TRUE(
      store_.SetPodModelMetric("default/p0", kModel, "num_requests_waiting", Simple(2)).ok());
  clock_.Advance(std::chrono::milliseconds(1500));
  ASSERT_TRUE(
      store_.SetPodModelMetric("default/p0", kModel, "num_requests_running", Simple(3)).ok());
  const std::string text = Render();
  EXPECT_THAT(text, Not(HasSubstr("num_requests_waiting{")));
  EXPECT_THAT(text, HasSubstr("num_requests_running{"));
  EXPECT_THAT(text, HasSubstr("aibrix_cache_stale_metrics 1\n"));
}

TEST_F(ExporterTest, DeletedAndUnreadyPodsAndRoleSpecificMetrics) {
  AddPod("p0");
  AddPod("unready", /*ready=*/false);
  AddPod("pd-prefill-0");
  ASSERT_TRUE(
      store_.SetPodModelMetric("default/p0", kModel, "num_requests_running", Simple(3)).ok());
  ASSERT_TRUE(
      store_
          .SetPodModelMetric("default/pd-prefill-0", kModel, "request_decode_time_seconds", Hist())
          .ok());
  ASSERT_TRUE(
      store_
          .SetPodModelMetric("default/pd-prefill-0", kModel, "request_prefill_time_seconds", Hist())
          .ok());
  std::string text = Render();
  EXPECT_THAT(text, HasSubstr("pod=\"p0\""));
  EXPECT_THAT(text, Not(HasSubstr("model_replicas{engine_type=\"vllm\",gateway_pod=\"gw-0\",model="
                                  "\"org/model-a\",namespace=\"default\",pod=\"unready\"")));
  EXPECT_THAT(text, Not(HasSubstr("request_decode_time_seconds")));
  EXPECT_THAT(text, HasSubstr("request_prefill_time_seconds_count{"));
  ASSERT_TRUE(store_.DeletePod("default", "p0"));
  text = Render();
  EXPECT_THAT(text, Not(HasSubstr("pod=\"p0\"")));
}

}  // namespace
}  // namespace aibrix::metrics
