#include "metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace aibrix::enginesim {
namespace {

using ::testing::HasSubstr;

// family -> set of `le` values, from an exposition text.
// family -> its `le` values in order, from an exposition text. (No std::regex: GCC 12's
// <regex> trips -Wmaybe-uninitialized in sanitizer builds.)
std::map<std::string, std::vector<std::string>> Buckets(const std::string& text) {
  std::map<std::string, std::vector<std::string>> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const size_t b = line.find("_bucket{");
    const size_t le = line.find("le=\"");
    if (line.empty() || line[0] == '#' || b == std::string::npos || le == std::string::npos) {
      continue;
    }
    const size_t end = line.find('"', le + 4);
    out[line.substr(0, b)].push_back(line.substr(le + 4, end - le - 4));
  }
  return out;
}

TEST(MetricsTest, NumbersLookLikePrometheusClient) {
  EXPECT_EQ(FormatPromValue(3), "3.0");
  EXPECT_EQ(FormatPromValue(0), "0.0");
  EXPECT_EQ(FormatPromValue(0.0421875), "0.0421875");
  EXPECT_EQ(FormatPromValue(0.001), "0.001");
  EXPECT_EQ(FormatPromValue(2560), "2560.0");
}

TEST(MetricsTest, HistogramIsCumulativeWithCountAndSum) {
  Histogram h({1, 2, 5});
  h.Observe(0.5);
  h.Observe(2);
  h.Observe(7);
  std::string out;
  h.Render(&out, "x", "help", "0", "m");
  EXPECT_THAT(out, HasSubstr("x_bucket{engine=\"0\",le=\"1.0\",model_name=\"m\"} 1.0\n"));
  EXPECT_THAT(out, HasSubstr("x_bucket{engine=\"0\",le=\"2.0\",model_name=\"m\"} 2.0\n"));
  EXPECT_THAT(out, HasSubstr("x_bucket{engine=\"0\",le=\"5.0\",model_name=\"m\"} 2.0\n"));
  EXPECT_THAT(out, HasSubstr("x_bucket{engine=\"0\",le=\"+Inf\",model_name=\"m\"} 3.0\n"));
  EXPECT_THAT(out, HasSubstr("x_count{engine=\"0\",model_name=\"m\"} 3.0\n"));
  EXPECT_THAT(out, HasSubstr("x_sum{engine=\"0\",model_name=\"m\"} 9.5\n"));
}

TEST(MetricsTest, BucketsMatchTheVllmSample) {
  std::ifstream f(std::string(AIBRIX_TESTDATA_DIR) + "/metrics/vllm_metrics_sample.txt");
  ASSERT_TRUE(f.good());
  std::stringstream sample;
  sample << f.rdbuf();
  auto want = Buckets(sample.str());
  EngineMetrics m(8192);
  std::string out;
  m.Render(&out, EngineGauges{}, "0", "m");
  auto got = Buckets(out);
  int compared = 0;
  for (const auto& [family, les] : got) {
    auto it = want.find(family);
    if (it == want.end()) continue;
    EXPECT_EQ(les, it->second) << family;
    ++compared;
  }
  EXPECT_GE(compared, 12);
  // Every HELP has a TYPE and every sample line belongs to a declared family.
  std::set<std::string> families;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) families.insert(line.substr(7, line.find(' ', 7) - 7));
  }
  for (const char* name :
       {"vllm:num_requests_running",         "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",          "vllm:gpu_cache_usage_perc",
        "vllm:prefix_cache_queries_total",   "vllm:prefix_cache_hits_total",
        "vllm:time_to_first_token_seconds",  "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",   "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",      "vllm:time_per_output_token_seconds",
        "vllm:inter_token_latency_seconds",  "vllm:cpu_cache_usage_perc",
        "vllm:num_requests_success_total",   "engine_utilization",
        "vllm:request_prefill_time_seconds", "vllm:request_decode_time_seconds",
        "vllm:request_prompt_tokens",        "vllm:request_generation_tokens"}) {
    EXPECT_TRUE(families.contains(name)) << name;
  }
}

TEST(MetricsTest, BusyWindowIsTheBusyFractionOfTheLastWindow) {
  using std::chrono::milliseconds;
  const BusyWindow::Time t0{std::chrono::seconds(100)};
  BusyWindow w(std::chrono::seconds(1));
  EXPECT_EQ(w.Utilization(t0), 0);
  w.Add(t0, t0 + milliseconds(200));
  w.Add(t0 + milliseconds(200), t0 + milliseconds(300));  // back to back: merged
  w.Add(t0 + milliseconds(500), t0 + milliseconds(600));
  EXPECT_DOUBLE_EQ(w.Utilization(t0 + milliseconds(1000)), 0.4);
  // A step still running counts up to now only.
  w.Add(t0 + milliseconds(900), t0 + milliseconds(1500));
  EXPECT_DOUBLE_EQ(w.Utilization(t0 + milliseconds(1000)), 0.5);
  // The window slides: [0.3 s, 1.3 s] holds 0.5–0.6 and 0.9–1.3.
  EXPECT_DOUBLE_EQ(w.Utilization(t0 + milliseconds(1300)), 0.5);
  EXPECT_DOUBLE_EQ(w.Utilization(t0 + milliseconds(3000)), 0);
  w.Reset();
  EXPECT_EQ(w.Utilization(t0 + milliseconds(1000)), 0);
}

TEST(MetricsTest, RendersTheGaugesAndSuccessTotalItIsGiven) {
  EngineMetrics m(8192);
  m.request_success = {2, 3, 1};
  EngineGauges g;
  g.num_running = 4;
  g.num_waiting = 7;
  g.kv_cache_usage = 0.25;
  g.utilization = 0.75;
  std::string out;
  m.Render(&out, g, "0", "m");
  for (const char* line :
       {"vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 4.0\n",
        "vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 7.0\n",
        "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.25\n",
        "vllm:gpu_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.25\n",
        "vllm:cpu_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.0\n",
        "engine_utilization{engine=\"0\",model_name=\"m\"} 0.75\n",
        "vllm:num_requests_success_total{engine=\"0\",model_name=\"m\"} 6.0\n"}) {
    EXPECT_THAT(out, HasSubstr(line));
  }
}

}  // namespace
}  // namespace aibrix::enginesim
