#include "stats.h"

#include "client.h"
#include "gtest/gtest.h"

namespace aibrix::loadgen {
namespace {

TEST(PercentileTest, InterpolatesBetweenRanks) {
  const std::vector<double> v = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(v, 1), 10);
  EXPECT_DOUBLE_EQ(Percentile(v, 0.5), 5.5);
  EXPECT_DOUBLE_EQ(Percentile(v, 0.9), 9.1);
  EXPECT_NEAR(Percentile(v, 0.99), 9.91, 1e-12);
  EXPECT_DOUBLE_EQ(Percentile({}, 0.5), 0);
  EXPECT_DOUBLE_EQ(Percentile({3}, 0.99), 3);
}

TEST(SummarizeTest, UnsortedInput) {
  std::vector<double> v;
  for (int i = 100; i >= 1; --i) v.push_back(i);  // 100..1
  Summary s = Summarize(v);
  EXPECT_EQ(s.count, 100u);
  EXPECT_DOUBLE_EQ(s.mean, 50.5);
  EXPECT_DOUBLE_EQ(s.p50, 50.5);
  EXPECT_DOUBLE_EQ(s.p90, 90.1);
  EXPECT_DOUBLE_EQ(s.p99, 99.01);
  EXPECT_DOUBLE_EQ(s.max, 100);
  nlohmann::json j = SummaryToJson(s, 1000);
  EXPECT_DOUBLE_EQ(j["p90"].get<double>(), 90100);
  EXPECT_EQ(j["count"], 100);
  EXPECT_EQ(Summarize({}).count, 0u);
}

constexpr char kMetrics[] = R"(# HELP vllm:prefix_cache_queries_total Prefix cache queries
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="llama"} 1200.0
vllm:prefix_cache_queries_total{engine="1",model_name="llama"} 800.0
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="llama"} 600.0
vllm:prefix_cache_hits_total{engine="1",model_name="we}ird \"x\""} 200.0
vllm:prefix_cache_hits_total_other 99
vllm:gpu_prefix_cache_queries_total{engine="0",model_name="llama"} 5.0
vllm:gpu_prefix_cache_hits_total{engine="0",model_name="llama"} 5.0
)";

TEST(EngineCountersTest, SumsSeriesOfTheExactNames) {
  absl::StatusOr<EngineCounters> c = ParseEngineCounters(kMetrics);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->queries, 2000);
  EXPECT_DOUBLE_EQ(c->hits, 800);
}

TEST(EngineCountersTest, FallsBackToTheDeprecatedNames) {
  absl::StatusOr<EngineCounters> c = ParseEngineCounters(
      "vllm:gpu_prefix_cache_queries_total{a=\"b\"} 10 1700000000\r\n"
      "vllm:gpu_prefix_cache_hits_total 4\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->queries, 10);
  EXPECT_DOUBLE_EQ(c->hits, 4);
}

TEST(EngineCountersTest, MissingOrBrokenIsAnError) {
  EXPECT_EQ(ParseEngineCounters("vllm:num_requests_running 3\n").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ParseEngineCounters("vllm:prefix_cache_queries_total abc\n"
                                "vllm:prefix_cache_hits_total 1\n")
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ParseEngineCounters("vllm:prefix_cache_queries_total{a=\"b\" 1\n").ok());
}

TEST(EngineCountersTest, ReadsTheQueueAndPrefillTimeTotals) {
  const std::string text = std::string(kMetrics) +
                           "# TYPE vllm:request_queue_time_seconds histogram\n"
                           "vllm:request_queue_time_seconds_bucket{le=\"0.5\"} 3\n"
                           "vllm:request_queue_time_seconds_sum{engine=\"0\"} 1.5\n"
                           "vllm:request_queue_time_seconds_sum{engine=\"1\"} 0.5\n"
                           "vllm:request_queue_time_seconds_count{engine=\"0\"} 3\n"
                           "vllm:request_queue_time_seconds_count{engine=\"1\"} 1\n"
                           "vllm:request_prefill_time_seconds_sum 0.25\n";
  absl::StatusOr<EngineCounters> c = ParseEngineCounters(text);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->queue.has_value());
  EXPECT_DOUBLE_EQ(c->queue->seconds, 2.0);
  EXPECT_DOUBLE_EQ(c->queue->count, 4);
  EXPECT_FALSE(c->prefill.has_value());  // a `_sum` sample without a histogram TYPE line
  EXPECT_FALSE(ParseEngineCounters(kMetrics)->queue.has_value());
  EXPECT_EQ(ParseEngineCounters(std::string(kMetrics) + "vllm:request_queue_time_seconds_sum x\n"
                                                        "vllm:request_queue_time_seconds_count 1\n")
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MeanDeltaTest, MeanOverTheRun) {
  EXPECT_DOUBLE_EQ(*MeanDelta(TimeTotals{1.0, 10}, TimeTotals{4.0, 16}), 0.5);
  EXPECT_FALSE(MeanDelta(TimeTotals{1.0, 10}, TimeTotals{1.0, 10}).has_value());  // no request
  EXPECT_FALSE(MeanDelta(TimeTotals{1.0, 10}, TimeTotals{0.5, 12}).has_value());  // restarted
  EXPECT_FALSE(MeanDelta(std::nullopt, TimeTotals{1.0, 10}).has_value());
}

TEST(HitRateDeltaTest, DeltaOverTheRun) {
  EXPECT_DOUBLE_EQ(*HitRateDelta({100, 50, {}, {}}, {300, 130, {}, {}}), 0.4);
  EXPECT_FALSE(
      HitRateDelta({100, 50, {}, {}}, {100, 50, {}, {}}).has_value());         // nothing looked up
  EXPECT_FALSE(HitRateDelta({100, 50, {}, {}}, {20, 0, {}, {}}).has_value());  // engine restarted
}

TEST(SseParserTest, EventsSplitAcrossFeedsAndLineEndings) {
  std::vector<std::string> got;
  SseParser p([&](std::string_view d) {
    got.emplace_back(d);
    return true;
  });
  const std::string stream =
      ": comment\n\ndata: {\"a\":1}\n\ndata:{\"b\":2}\r\n\r\nevent: x\ndata: l1\ndata: l2\n\n"
      "data: [DONE]\n\n";
  // Every split point gives the same events.
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    got.clear();
    SseParser q([&](std::string_view d) {
      got.emplace_back(d);
      return true;
    });
    ASSERT_TRUE(q.Feed(std::string_view(stream).substr(0, cut)));
    ASSERT_TRUE(q.Feed(std::string_view(stream).substr(cut)));
    ASSERT_EQ(got.size(), 4u) << cut;
    EXPECT_EQ(got[0], "{\"a\":1}");
    EXPECT_EQ(got[1], "{\"b\":2}");
    EXPECT_EQ(got[2], "l1\nl2");
    EXPECT_EQ(got[3], "[DONE]");
    EXPECT_EQ(q.pending_bytes(), 0u);
  }
  // An unterminated event is not delivered.
  got.clear();
  EXPECT_TRUE(p.Feed("data: partial\n"));
  EXPECT_TRUE(got.empty());
  EXPECT_GT(p.pending_bytes(), 0u);
}

TEST(SseParserTest, CallbackCanStopTheParse) {
  int calls = 0;
  SseParser p([&](std::string_view) { return ++calls < 2; });
  EXPECT_FALSE(p.Feed("data: 1\n\ndata: 2\n\ndata: 3\n\n"));
  EXPECT_EQ(calls, 2);
}

TEST(ParseHttpUrlTest, Forms) {
  absl::StatusOr<HttpUrl> u = ParseHttpUrl("http://127.0.0.1:8090/metrics");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 8090);
  EXPECT_EQ(u->path, "/metrics");
  EXPECT_EQ(u->Origin(), "http://127.0.0.1:8090");
  u = ParseHttpUrl("localhost:1234");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "localhost");
  EXPECT_EQ(u->port, 1234);
  EXPECT_EQ(u->path, "/");
  u = ParseHttpUrl("http://[::1]:99");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->Origin(), "http://[::1]:99");
  u = ParseHttpUrl("http://example");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->port, 80);
  EXPECT_FALSE(ParseHttpUrl("https://x:1").ok());
  EXPECT_FALSE(ParseHttpUrl("http://x:0").ok());
  EXPECT_FALSE(ParseHttpUrl("http://x:70000").ok());
  EXPECT_FALSE(ParseHttpUrl("http://x:12a").ok());
  EXPECT_FALSE(ParseHttpUrl("http://:80").ok());
  EXPECT_FALSE(ParseHttpUrl("http://[::1").ok());
}

}  // namespace
}  // namespace aibrix::loadgen
