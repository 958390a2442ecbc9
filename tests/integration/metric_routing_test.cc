// The service's routers over scraped engine metrics, end to end through /cache/route:
// --metric-max-age decides which scraped values count, decisions without any are counted in
// aibrix_routing_metric_fallback_total, and vtc-basic takes the end user from the `user`
// header or body field. The metric values are written into the service's Store as the scraper
// writes them (no engine is contacted: routing only needs the pods' addresses).
#include <chrono>
#include <string>
#include <vector>

#include "fmt/format.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/util/in_process_service.h"
#include "tests/util/refused_port.h"

namespace aibrix {
namespace {

using namespace std::chrono_literals;

constexpr char kModel[] = "llama";

class MetricRoutingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Ten minutes: values written "now" stay fresh however slow the machine.
    ASSERT_NO_FATAL_FAILURE(
        harness_.Start(kModel, {pod0_.port(), pod1_.port()},
                       [](server::ServiceConfig& config) { config.metric_max_age_ms = 600'000; }));
    client_ = std::make_unique<httplib::Client>("127.0.0.1", harness_.service().http_port());
    for (const store::PodRef& pod : harness_.service().store().ListPods()) {
      keys_.push_back(pod->key);  // sorted: the pod on pod0_ first
    }
    ASSERT_EQ(keys_.size(), 2u);
  }

  void SetGauge(int pod, const std::string& name, double value,
                std::chrono::steady_clock::time_point scraped_at) {
    ASSERT_TRUE(
        harness_.service()
            .store()
            .SetPodModelMetric(keys_[pod], kModel, name,
                               store::MetricValue{store::SimpleMetric{value, {}}, scraped_at})
            .ok());
  }

  // The pod /cache/route chooses for `body` (and the header `user` when given).
  std::string Route(const nlohmann::json& body, const std::string& user_header = "") {
    httplib::Headers headers;
    if (!user_header.empty()) headers.emplace("user", user_header);
    auto res = client_->Post("/cache/route", headers, body.dump(), "application/json");
    EXPECT_TRUE(res);
    if (!res) return "";
    EXPECT_EQ(res->status, 200) << res->body;
    return nlohmann::json::parse(res->body)["pod"].get<std::string>();
  }

  double Fallbacks(const std::string& algorithm, const std::string& reason) {
    return harness_.Metric(
        fmt::format("aibrix_routing_metric_fallback_total{{algorithm=\"{}\",reason=\"{}\"}}",
                    algorithm, reason));
  }

  testing::RefusedPort pod0_;
  testing::RefusedPort pod1_;
  testing::InProcessService harness_;
  std::unique_ptr<httplib::Client> client_;
  std::vector<std::string> keys_;
};

TEST_F(MetricRoutingTest, OnlyValuesWithinMetricMaxAgeCount) {
  const nlohmann::json body = {{"model", kModel}, {"algorithm", "least-kv-cache"}, {"prompt", "x"}};
  EXPECT_NE(Route(body), "");
  EXPECT_EQ(Fallbacks("least-kv-cache", "missing"), 1);
  const auto now = std::chrono::steady_clock::now();
  SetGauge(0, "kv_cache_usage_perc", 0.1, now - 700s);  // older than the 600 s max age
  SetGauge(1, "kv_cache_usage_perc", 0.9, now);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Route(body), keys_[1]);
  SetGauge(1, "kv_cache_usage_perc", 0.9, now - 700s);
  EXPECT_NE(Route(body), "");
  EXPECT_EQ(Fallbacks("least-kv-cache", "stale"), 1);
  EXPECT_EQ(Fallbacks("least-kv-cache", "missing"), 1);
}

TEST_F(MetricRoutingTest, VtcBasicTakesTheUserFromTheHeaderOrTheBody) {
  const auto now = std::chrono::steady_clock::now();
  SetGauge(0, "num_requests_running", 0, now);
  SetGauge(1, "num_requests_running", 0, now);
  std::vector<int> ids(40);
  for (int i = 0; i < 40; ++i) ids[i] = i + 1;
  // 40 prompt tokens add 40 + 2 × 60 = 160 tokens to the user; with two pods the user's
  // position is (tokens mod 200) / 100: 0 → the first pod, 1.6 → the second.
  const nlohmann::json alice = {
      {"model", kModel}, {"algorithm", "vtc-basic"}, {"user", "alice"}, {"token_ids", ids}};
  EXPECT_EQ(Route(alice), keys_[0]);
  // The header wins over the body: carol is new (position 0), where alice would go second.
  EXPECT_EQ(Route(alice, "carol"), keys_[0]);
  EXPECT_EQ(Route(alice), keys_[1]);
  EXPECT_EQ(Fallbacks("vtc-basic", "missing"), 0);
}

}  // namespace
}  // namespace aibrix
