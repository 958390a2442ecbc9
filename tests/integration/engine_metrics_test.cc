// The service scrapes its pods' engine metrics into the Store and re-exports them on its own
// /metrics (spec §9.1); a pod whose engine stops answering goes stale. Against real
// engine-sim processes, the metric routers choose by the scraped load and ignore values
// older than --metric-max-age.
#include <signal.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/util/in_process_service.h"
#include "tests/util/poll.h"
#include "tests/util/subprocess.h"

namespace aibrix {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

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
    ASSERT_TRUE(
        testing::Eventually([&] { return service.Metric("aibrix_cache_stale_metrics") > 0; }));
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

// One engine-sim process on port 0, real time (decode steps of 10 ms, one running request at
// a time), serving model "llama".
struct EngineSim {
  EngineSim() {
    auto started = testing::Subprocess::Start(
        {testing::BinaryPath("engine-sim"), "--port", "0", "--model", "llama", "--max-num-seqs",
         "1", "--decode-step-ms", "10", "--decode-step-ms-per-seq", "0", "--max-model-len", "4096",
         "--http-threads", "8"});
    EXPECT_TRUE(started.ok()) << started.status();
    if (!started.ok()) return;
    process = std::move(*started);
    auto listening = process->WaitForListeningPort(20s);
    EXPECT_TRUE(listening.ok()) << listening.status();
    if (listening.ok()) port = *listening;
  }
  // A completion of `max_tokens` tokens straight to the engine (not through the service).
  void Complete(int salt, int max_tokens) const {
    httplib::Client client("127.0.0.1", port);
    client.set_read_timeout(60s);
    const nlohmann::json body = {
        {"model", "llama"}, {"prompt", fmt::format("load {} ", salt)}, {"max_tokens", max_tokens}};
    client.Post("/v1/completions", body.dump(), "application/json");
  }

  std::unique_ptr<testing::Subprocess> process;
  int port = 0;
};

class EngineSimRoutingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GT(busy_.port, 0);
    ASSERT_GT(idle_.port, 0);
    ASSERT_NO_FATAL_FAILURE(
        service_.Start("llama", {busy_.port, idle_.port}, [](server::ServiceConfig& config) {
          config.metric_refresh_ms = 20;
          config.metric_max_age_ms = 1000;
          config.metric_timeout_ms = 300;
        }));
    for (const store::PodRef& pod : service_.service().store().ListPods()) {
      (store::PodServingPort(pod->object) == busy_.port ? busy_pod_ : idle_pod_) = pod;
    }
    ASSERT_TRUE(busy_pod_ && idle_pod_);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", service_.service().http_port());
  }

  void TearDown() override {
    if (stopped_ > 0) kill(stopped_, SIGCONT);
    service_.Stop();
    busy_.process.reset();  // in-flight completions fail: their threads end
    for (std::thread& t : load_) t.join();
  }

  // The fresh scraped value of `name` of `pod` (model scope), or -1.
  double Scraped(const store::PodRef& pod, const std::string& name) {
    auto v = pod->state->ModelMetric("llama", name);
    if (!v || !v->FreshAt(std::chrono::steady_clock::now(), 1s)) return -1;
    return v->histogram() != nullptr ? v->histogram()->count : v->Simple();
  }

  std::string Route(const std::string& algorithm, int salt) {
    const nlohmann::json body = {{"model", "llama"},
                                 {"algorithm", algorithm},
                                 {"prompt", fmt::format("route {} {}", algorithm, salt)}};
    auto res = client_->Post("/cache/route", body.dump(), "application/json");
    EXPECT_TRUE(res);
    if (!res) return "";
    EXPECT_EQ(res->status, 200) << res->body;
    return nlohmann::json::parse(res->body)["pod"].get<std::string>();
  }

  double Fallbacks(const std::string& algorithm) {
    double total = 0;
    for (const char* reason : {"missing", "stale"}) {
      total += service_.Metric(
          fmt::format("aibrix_routing_metric_fallback_total{{algorithm=\"{}\",reason=\"{}\"}}",
                      algorithm, reason));
    }
    return total;
  }

  EngineSim busy_;
  EngineSim idle_;
  testing::InProcessService service_;
  store::PodRef busy_pod_;
  store::PodRef idle_pod_;
  std::unique_ptr<httplib::Client> client_;
  std::vector<std::thread> load_;
  pid_t stopped_ = 0;
};

TEST_F(EngineSimRoutingTest, MetricRoutersChooseByScrapedLoadAndIgnoreStaleValues) {
  // History for the histogram-driven routers: the idle engine served one short request, the
  // busy one two longer ones, the second queued behind the first.
  idle_.Complete(0, 5);
  {
    std::thread second([&] { busy_.Complete(1, 40); });
    busy_.Complete(2, 40);
    second.join();
  }
  // Live load on the busy engine, sent to it directly (this service has nothing in flight, so
  // least-request could not tell the pods apart): one request runs, one waits, for seconds.
  for (int i = 0; i < 2; ++i) load_.emplace_back([this, i] { busy_.Complete(10 + i, 400); });
  ASSERT_TRUE(testing::Eventually([&] {
    return Scraped(busy_pod_, "num_requests_running") == 1 &&
           Scraped(busy_pod_, "num_requests_waiting") == 1 &&
           Scraped(busy_pod_, "kv_cache_usage_perc") > 0 &&
           Scraped(busy_pod_, "engine_utilization") > 0 &&
           Scraped(busy_pod_, "request_generation_tokens") == 2 &&
           Scraped(idle_pod_, "request_generation_tokens") == 1 &&
           Scraped(idle_pod_, "kv_cache_usage_perc") == 0 &&
           Scraped(idle_pod_, "engine_utilization") == 0;  // a second after its last step
  })) << service_.service().RenderMetrics();

  for (const std::string algorithm :
       {"least-kv-cache", "least-gpu-cache", "least-utilization", "least-busy-time",
        "least-latency", "throughput", "kv-aware"}) {
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(Route(algorithm, i), idle_pod_->key) << algorithm;
    }
    EXPECT_EQ(Fallbacks(algorithm), 0) << algorithm;
  }
  EXPECT_EQ(service_.Metric("aibrix_cache_stale_metrics"), 0);

  // The idle engine stops answering (SIGSTOP: connections are accepted, nothing is read):
  // its scrapes time out and its last values, the lowest, go stale. Routers then use the busy
  // pod's fresh values only.
  stopped_ = idle_.process->pid();
  ASSERT_EQ(kill(stopped_, SIGSTOP), 0);
  ASSERT_TRUE(
      testing::Eventually([&] { return service_.Metric("aibrix_cache_stale_metrics") > 0; }));
  for (const std::string algorithm : {"least-kv-cache", "least-utilization", "least-busy-time"}) {
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(Route(algorithm, 100 + i), busy_pod_->key) << algorithm;
    }
  }
  EXPECT_GT(service_.Metric(fmt::format(
                "llm_engine_metrics_query_fail{{namespace=\"{}\",pod=\"{}\",reason=\"timeout\"}}",
                idle_pod_->ns(), idle_pod_->name())),
            0);
}

}  // namespace
}  // namespace aibrix
