#include "aibrix/store/pod.h"

#include "aibrix/store/test_pods.h"
#include "gtest/gtest.h"

namespace aibrix::store {
namespace {

using testing::MakePod;

TEST(PodTest, ReadinessNeedsIpReadyConditionAndNoTermination) {
  PodObject pod = MakePod("p", "m");
  EXPECT_TRUE(IsPodReady(pod));
  pod.ready_condition = false;
  EXPECT_FALSE(IsPodReady(pod));
  pod = MakePod("p", "m", "");
  EXPECT_FALSE(IsPodReady(pod));
  pod = MakePod("p", "m");
  pod.deletion_timestamp = "2026-01-01T00:00:00Z";
  EXPECT_FALSE(IsPodReady(pod));
  pod.phase = "Succeeded";  // a finished pod being deleted is not "terminating"
  EXPECT_TRUE(IsPodReady(pod));
}

TEST(PodTest, LabelsWithDefaults) {
  PodObject pod = MakePod("p", "m");
  EXPECT_EQ(PodMetricPort(pod), 8000);
  EXPECT_EQ(PodEngine(pod), "vllm");
  EXPECT_FALSE(PodKvEventsEnabled(pod));
  EXPECT_EQ(PodLoraId(pod), -1);
  pod.labels[kMetricPortLabel] = "9090";
  pod.labels[kEngineLabel] = "sglang";
  pod.labels[kKvEventsEnabledLabel] = "true";
  pod.labels[kLoraIdLabel] = "123";
  EXPECT_EQ(PodMetricPort(pod), 9090);
  EXPECT_EQ(PodEngine(pod), "sglang");
  EXPECT_TRUE(PodKvEventsEnabled(pod));
  EXPECT_EQ(PodLoraId(pod), 123);
  pod.labels[kMetricPortLabel] = "nope";
  pod.labels[kKvEventsEnabledLabel] = "True";  // exactly "true" only
  pod.labels[kLoraIdLabel] = "x";
  EXPECT_EQ(PodMetricPort(pod), 8000);
  EXPECT_FALSE(PodKvEventsEnabled(pod));
  EXPECT_EQ(PodLoraId(pod), -1);
}

TEST(PodTest, ServingPortAndDataParallelSize) {
  PodObject pod = MakePod("p", "m");
  EXPECT_EQ(PodServingPort(pod), 8000);
  EXPECT_EQ(PodDataParallelSize(pod), 1);
  pod.labels[kPortLabel] = "9000";
  pod.containers[0].env.push_back({"data-parallel-size", "3"});
  EXPECT_EQ(PodServingPort(pod), 9000);
  EXPECT_EQ(PodDataParallelSize(pod), 3);
  pod.labels[kPortLabel] = "bad";
  EXPECT_EQ(PodServingPort(pod), 8000);  // falls back to the container port
}

TEST(PodTest, ModelClaimStateRules) {
  PodObject pod = MakePod("p", "");
  pod.annotations["modelclaim.aibrix.ai/x"] = R"({"model":"a","port":70000})";
  pod.annotations["modelclaim.aibrix.ai/y"] = R"({"model":"b"})";
  pod.annotations["modelclaim.aibrix.ai/z"] = R"({"model":"c","port":1,"state":"weird"})";
  pod.annotations["other/annotation"] = R"({"model":"d","port":1})";
  auto claims = PodModelClaims(pod);
  ASSERT_EQ(claims.size(), 1u);
  EXPECT_EQ(claims[0].model, "b");
  EXPECT_EQ(claims[0].state, "activating");
  EXPECT_EQ(claims[0].port, 0);
}

TEST(PodStateTest, SampleTakesTheFirstScopeThatHoldsTheMetric) {
  PodState state;
  const std::chrono::steady_clock::time_point t{std::chrono::seconds(5)};
  const std::string_view adapter_then_base[] = {"lora", "base"};
  EXPECT_FALSE(state.Sample(adapter_then_base, "x").has_value());
  state.SetMetric("x", MetricValue{SimpleMetric{1, {{"a", "b"}}}, t});
  auto s = state.Sample(adapter_then_base, "x");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->value, 1);
  EXPECT_FALSE(s->histogram);
  EXPECT_EQ(s->scraped_at, t);
  state.SetModelMetric("base", "x", MetricValue{SimpleMetric{2, {}}, t});
  EXPECT_EQ(state.Sample(adapter_then_base, "x")->value, 2);
  HistogramMetric h;
  h.sum = 9;
  h.count = 3;
  state.SetModelMetric("lora", "x", MetricValue{h, t});
  s = state.Sample(adapter_then_base, "x");
  ASSERT_TRUE(s.has_value());
  EXPECT_TRUE(s->histogram);
  EXPECT_EQ(s->value, 3);
  EXPECT_EQ(s->count, 3);
  // Model names may contain '/'; the pod scope alone when no model is given.
  state.SetModelMetric("org/model", "y", MetricValue{SimpleMetric{4, {}}, t});
  const std::string_view org[] = {"org/model"};
  EXPECT_EQ(state.Sample(org, "y")->value, 4);
  EXPECT_EQ(state.Sample({}, "x")->value, 1);
}

}  // namespace
}  // namespace aibrix::store
