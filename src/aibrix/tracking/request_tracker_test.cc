#include "aibrix/tracking/request_tracker.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace aibrix::tracking {
namespace {

TEST(RequestTrackerTest, FinishedRequestsFeedTraceAndPredictor) {
  common::FakeClock clock;
  RequestTracker tracker(clock);
  tracker.OnAdmitted("llama");
  tracker.OnAdmitted("llama");
  tracker.OnFinished("llama", 1, 1);
  const nlohmann::json trace = tracker.TraceJson("llama");
  ASSERT_TRUE(trace.is_object());
  EXPECT_EQ(trace["0:0"], 1);
  EXPECT_EQ(trace["meta_total_reqs"], 2);
  EXPECT_EQ(trace["meta_pending_reqs"], 1);
  EXPECT_EQ(trace["meta_v"], 4);
  OutputPredictor* predictor = tracker.Predictor("llama");
  ASSERT_NE(predictor, nullptr);
  EXPECT_EQ(predictor->InputCount(1), 1);
  EXPECT_EQ(predictor->Predict(1), 1);
  EXPECT_EQ(tracker.Predictor("llama"), predictor);  // same object every time
}

TEST(RequestTrackerTest, FinishedWithoutOutputTokensOnlyCounts) {
  common::FakeClock clock;
  RequestTracker tracker(clock);
  tracker.OnAdmitted("llama");
  tracker.OnFinished("llama", 500, std::nullopt);
  const nlohmann::json trace = tracker.TraceJson("llama");
  EXPECT_EQ(trace["meta_pending_reqs"], 0);
  EXPECT_EQ(trace.size(), 6u);  // meta keys only
  EXPECT_EQ(tracker.Predictor("llama")->InputCount(500), 0);
}

TEST(RequestTrackerTest, ModelsAreSeparate) {
  common::FakeClock clock;
  RequestTracker tracker(clock);
  tracker.OnFinished("a", 100, 256);
  EXPECT_EQ(tracker.Predictor("a")->Predict(100), 256);
  EXPECT_EQ(tracker.Predictor("b")->Predict(100), 1);
  EXPECT_TRUE(tracker.TraceJson("never-seen").is_null());
  EXPECT_EQ(tracker.model_count(), 2u);
}

TEST(RequestTrackerTest, ModelLimitIgnoresNewModels) {
  common::FakeClock clock;
  RequestTracker::Options options;
  options.max_models = 2;
  RequestTracker tracker(clock, options);
  tracker.OnAdmitted("a");
  tracker.OnAdmitted("b");
  tracker.OnAdmitted("c");
  tracker.OnFinished("c", 1, 1);
  EXPECT_EQ(tracker.Predictor("c"), nullptr);
  EXPECT_TRUE(tracker.TraceJson("c").is_null());
  EXPECT_EQ(tracker.ignored_model_calls(), 3);
  EXPECT_EQ(tracker.model_count(), 2u);
  tracker.OnAdmitted("a");  // known models still work
  EXPECT_EQ(tracker.TraceJson("a")["meta_total_reqs"], 2);
}

TEST(RequestTrackerTest, SwapTracesReturnsActiveModelsAndResets) {
  common::FakeClock clock;
  RequestTracker tracker(clock);
  tracker.OnAdmitted("b");
  tracker.OnAdmitted("a");
  tracker.OnFinished("a", 8, 8);
  tracker.Predictor("idle");
  auto traces = tracker.SwapTraces();
  ASSERT_EQ(traces.size(), 2u);
  EXPECT_EQ(traces[0].model, "a");
  EXPECT_EQ(traces[0].snapshot.completed_requests, 1);
  EXPECT_EQ(traces[0].snapshot.buckets.at("30:30"), 1);
  EXPECT_EQ(traces[1].model, "b");
  EXPECT_EQ(traces[1].snapshot.pending_requests, 1);
  EXPECT_TRUE(tracker.SwapTraces().empty());
  // The predictor keeps its history across trace swaps.
  EXPECT_EQ(tracker.Predictor("a")->Predict(8), 8);
}

TEST(RequestTrackerTest, ConcurrentModelsAndRequests) {
  common::FakeClock clock;
  RequestTracker tracker(clock);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&tracker, t] {
      for (int i = 0; i < 5000; ++i) {
        const std::string model = "m" + std::to_string((i + t) % 16);
        tracker.OnAdmitted(model);
        tracker.Predictor(model)->Predict(100);
        tracker.OnFinished(model, 100, 10);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(tracker.model_count(), 16u);
  int64_t total = 0;
  for (const auto& trace : tracker.SwapTraces()) {
    EXPECT_EQ(trace.snapshot.pending_requests, 0);
    total += trace.snapshot.total_requests;
  }
  EXPECT_EQ(total, 8 * 5000);
}

}  // namespace
}  // namespace aibrix::tracking
