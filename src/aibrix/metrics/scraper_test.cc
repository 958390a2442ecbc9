#include "aibrix/metrics/scraper.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "aibrix/store/test_pods.h"
#include "httplib.h"
#include "tests/util/poll.h"
#include "tests/util/refused_port.h"

namespace aibrix::metrics {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::Eventually;

constexpr char kModel[] = "meta-llama/Llama-3.1-8B-Instruct";

std::string VllmSample() {
  std::ifstream in(std::string(AIBRIX_TESTDATA_DIR) + "/metrics/vllm_metrics_sample.txt");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A fake engine on a loopback port: /metrics answers what the test says (body, status,
// redirect), optionally held until released; requests and their concurrency are counted.
class FakeEngine {
 public:
  explicit FakeEngine(int port = 0) {
    server_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      const int now = ++in_flight_;
      int seen = max_in_flight_.load();
      while (now > seen && !max_in_flight_.compare_exchange_weak(seen, now)) {
      }
      ++requests_;
      {
        std::unique_lock<std::mutex> lock(mu_);
        released_.wait_for(lock, seconds(10), [this] { return !hold_; });
        res.status = status_;
        if (!location_.empty()) res.set_header("Location", location_);
        res.set_content(body_, "text/plain; version=0.0.4");
      }
      --in_flight_;
    });
    server_.Get("/elsewhere", [this](const httplib::Request&, httplib::Response& res) {
      ++redirected_;
      res.set_content(body_, "text/plain");
    });
    if (port == 0) {
      port_ = server_.bind_to_any_port("127.0.0.1");
    } else if (server_.bind_to_port("127.0.0.1", port)) {
      port_ = port;
    }
    if (port_ > 0) {
      thread_ = std::thread([this] { server_.listen_after_bind(); });
      while (!server_.is_running()) std::this_thread::sleep_for(milliseconds(1));
    }
  }
  ~FakeEngine() {
    Release();
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  int port() const { return port_; }
  void Set(std::string body, int status = 200, std::string location = "") {
    std::lock_guard<std::mutex> lock(mu_);
    body_ = std::move(body);
    status_ = status;
    location_ = std::move(location);
  }
  void Hold() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_ = true;
  }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      hold_ = false;
    }
    released_.notify_all();
  }
  int requests() const { return requests_.load(); }
  int in_flight() const { return in_flight_.load(); }
  int max_in_flight() const { return max_in_flight_.load(); }
  int redirected() const { return redirected_.load(); }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable released_;
  std::string body_;
  int status_ = 200;
  std::string location_;
  bool hold_ = false;
  std::atomic<int> requests_{0};
  std::atomic<int> in_flight_{0};
  std::atomic<int> max_in_flight_{0};
  std::atomic<int> redirected_{0};
};

class ScraperTest : public ::testing::Test {
 protected:
  // The scraper goes first: its pooled connections close, so the engines' servers stop at
  // once rather than after their keep-alive timeout.
  void TearDown() override { scraper_.reset(); }

  // A fake engine that lives until the end of the test (after the scraper).
  FakeEngine& Engine(int port = 0) {
    return *engines_.emplace_back(std::make_unique<FakeEngine>(port));
  }

  void StartScraper(ScraperOptions options = {}) {
    options.clock = &clock_;
    if (options.interval == milliseconds(50)) options.interval = milliseconds(5);
    scraper_ =
        std::make_unique<Scraper>(store_, EngineMetricRegistry::Default(), options, registry_);
    ASSERT_TRUE(scraper_->Start().ok());
  }

  void AddPod(const std::string& name, int port, const std::string& engine = "", int dp_size = 1) {
    store::PodObject pod = store::testing::MakePod(name, kModel, "127.0.0.1");
    pod.labels[store::kMetricPortLabel] = std::to_string(port);
    if (!engine.empty()) pod.labels[store::kEngineLabel] = engine;
    if (dp_size > 1)
      pod.containers[0].env.emplace_back("data-parallel-size", std::to_string(dp_size));
    ASSERT_TRUE(store_.AddPod(pod));
  }

  std::shared_ptr<store::PodState> State(const std::string& name) {
    auto pod = store_.GetPod("default", name);
    return pod.ok() ? (*pod)->state : nullptr;
  }

  // Waits until the loop has run `n` more ticks (so anything it would start, it has).
  void WaitTicks(int n = 5) {
    const uint64_t target = scraper_->ticks() + static_cast<uint64_t>(n);
    ASSERT_TRUE(Eventually([&] { return scraper_->ticks() >= target; }));
  }

  double Counter(const std::string& family, const std::map<std::string, std::string>& labels) {
    for (const auto& f : registry_.Collect()) {
      if (f.name != family) continue;
      for (const auto& m : f.metric) {
        std::map<std::string, std::string> have;
        for (const auto& l : m.label) have[l.name] = l.value;
        if (have == labels) return m.counter.value;
      }
    }
    return -1;  // no such series
  }

  common::FakeClock clock_;
  store::Store store_;
  prometheus::Registry registry_;
  std::vector<std::unique_ptr<FakeEngine>> engines_;
  std::unique_ptr<Scraper> scraper_;
};

TEST_F(ScraperTest, ValuesLandInTheStoreStampedWithTheScrapeTime) {
  FakeEngine& engine = Engine();
  engine.Set(VllmSample());
  AddPod("p0", engine.port());
  StartScraper();
  auto state = State("p0");
  ASSERT_TRUE(
      Eventually([&] { return state->ModelMetric(kModel, "num_requests_running").has_value(); }));
  auto running = state->ModelMetric(kModel, "num_requests_running");
  EXPECT_EQ(running->Simple(), 3);
  EXPECT_EQ(running->scraped_at, clock_.Now());
  EXPECT_TRUE(running->FreshAt(clock_.Now(), milliseconds(1000)));
  auto ttft = state->ModelMetric(kModel, "time_to_first_token_seconds");
  ASSERT_TRUE(ttft.has_value());
  ASSERT_NE(ttft->histogram(), nullptr);
  EXPECT_EQ(ttft->histogram()->count, 40);
  EXPECT_GT(ttft->histogram()->Percentile(99), ttft->histogram()->Percentile(50));
  EXPECT_EQ(state->Metric("http_requests_total")->Simple(), 1280);
  // The scrape is counted after its values are stored.
  EXPECT_TRUE(Eventually([&] {
    return Counter("aibrix_cache_metric_scrapes_total", {{"result", "ok"}}) == 1;
  }));
  // The fake clock has not moved: the next scrape is not due, however many ticks pass.
  WaitTicks();
  EXPECT_EQ(engine.requests(), 1);
  clock_.Advance(milliseconds(5));
  ASSERT_TRUE(Eventually([&] { return engine.requests() == 2; }));
}

TEST_F(ScraperTest, MetricsThatStopBeingScrapedGoStale) {
  FakeEngine& engine = Engine();
  engine.Set(VllmSample());
  AddPod("p0", engine.port());
  StartScraper();
  auto state = State("p0");
  ASSERT_TRUE(
      Eventually([&] { return state->ModelMetric(kModel, "num_requests_waiting").has_value(); }));
  const auto max_age = milliseconds(1000);
  // The engine stops exporting num_requests_waiting: the next scrape refreshes the others.
  engine.Set("vllm:num_requests_running{model_name=\"" + std::string(kModel) + "\"} 7\n");
  clock_.Advance(milliseconds(1500));
  ASSERT_TRUE(Eventually([&] {
    auto v = state->ModelMetric(kModel, "num_requests_running");
    return v && v->Simple() == 7;
  }));
  EXPECT_TRUE(state->ModelMetric(kModel, "num_requests_running")->FreshAt(clock_.Now(), max_age));
  EXPECT_FALSE(state->ModelMetric(kModel, "num_requests_waiting")->FreshAt(clock_.Now(), max_age));
  // The engine fails from now on: nothing is refreshed, everything goes stale.
  engine.Set("oops", 500);
  const int before = engine.requests();
  clock_.Advance(milliseconds(1500));
  ASSERT_TRUE(Eventually([&] { return engine.requests() > before; }));
  ASSERT_TRUE(Eventually([&] {
    return Counter("aibrix_cache_metric_scrapes_total", {{"result", "status"}}) == 1;
  }));
  EXPECT_FALSE(state->ModelMetric(kModel, "num_requests_running")->FreshAt(clock_.Now(), max_age));
}

TEST_F(ScraperTest, FailuresBackOffWithJitterAndCountByReason) {
  FakeEngine& engine = Engine();
  engine.Set("unavailable", 503);
  AddPod("p0", engine.port());
  ScraperOptions options;
  options.backoff_initial = milliseconds(200);
  options.backoff_max = milliseconds(1000);
  StartScraper(options);
  ASSERT_TRUE(Eventually([&] {
    return Counter("llm_engine_metrics_query_fail",
                   {{"namespace", "default"}, {"pod", "p0"}, {"reason", "status"}}) == 1;
  }));
  // First backoff: within [100, 200] ms.
  clock_.Advance(milliseconds(90));
  WaitTicks();
  EXPECT_EQ(engine.requests(), 1);
  clock_.Advance(milliseconds(120));  // 210 ms
  ASSERT_TRUE(Eventually([&] { return engine.requests() == 2; }));
  ASSERT_TRUE(Eventually([&] {
    return Counter("aibrix_cache_metric_scrapes_total", {{"result", "status"}}) == 2;
  }));
  // Second: within [200, 400] ms.
  clock_.Advance(milliseconds(190));
  WaitTicks();
  EXPECT_EQ(engine.requests(), 2);
  clock_.Advance(milliseconds(220));
  ASSERT_TRUE(Eventually([&] { return engine.requests() == 3; }));
  // Capped at backoff_max.
  for (int i = 4; i <= 8; ++i) {
    ASSERT_TRUE(Eventually([&] {
      return Counter("aibrix_cache_metric_scrapes_total", {{"result", "status"}}) == i - 1;
    }));
    clock_.Advance(milliseconds(1001));
    ASSERT_TRUE(Eventually([&] { return engine.requests() == i; })) << i;
  }
  // Recovery resets the backoff: the next scrape comes one interval after a success.
  engine.Set(VllmSample());
  ASSERT_TRUE(Eventually([&] {
    return Counter("aibrix_cache_metric_scrapes_total", {{"result", "status"}}) == 8;
  }));
  clock_.Advance(milliseconds(1001));
  ASSERT_TRUE(Eventually([&] {
    return Counter("aibrix_cache_metric_scrapes_total", {{"result", "ok"}}) == 1;
  }));
  clock_.Advance(milliseconds(5));
  ASSERT_TRUE(Eventually([&] {
    return Counter("aibrix_cache_metric_scrapes_total", {{"result", "ok"}}) == 2;
  }));
}

TEST_F(ScraperTest, AtMostOneFetchInFlightPerPod) {
  FakeEngine& engine = Engine();
  engine.Set(VllmSample());
  engine.Hold();
  AddPod("p0", engine.port());
  StartScraper();
  ASSERT_TRUE(Eventually([&] { return engine.in_flight() == 1; }));
  for (int i = 0; i < 10; ++i) {
    clock_.Advance(milliseconds(100));  // every tick now finds the pod due
    WaitTicks(2);
  }
  EXPECT_EQ(engine.requests(), 1);
  EXPECT_EQ(engine.max_in_flight(), 1);
  engine.Release();
  auto state = State("p0");
  ASSERT_TRUE(
      Eventually([&] { return state->ModelMetric(kModel, "num_requests_running").has_value(); }));
  // The next scrape follows. It may start before this advance (the clock is already past
  // one interval after the first scrape's start) and then one more follows it: at least two.
  clock_.Advance(milliseconds(100));
  ASSERT_TRUE(Eventually([&] { return engine.requests() >= 2; }));
  EXPECT_EQ(engine.max_in_flight(), 1);
}

TEST_F(ScraperTest, BadInputIsSkippedAndCounted) {
  struct Case {
    std::string name;
    std::function<void(FakeEngine&)> setup;
    std::string reason;
  };
  ScraperOptions options;
  options.read_timeout = milliseconds(300);
  options.max_body_bytes = 64 << 10;
  options.backoff_initial = milliseconds(10);
  options.backoff_max = milliseconds(10);
  testing::RefusedPort refused;
  FakeEngine& redirect = Engine();
  FakeEngine& huge = Engine();
  FakeEngine& garbage = Engine();
  FakeEngine& slow = Engine();
  FakeEngine& missing = Engine();
  redirect.Set("", 302, "/elsewhere");
  huge.Set(std::string(1 << 20, '#'));
  garbage.Set("<html>\n<body>not metrics</body>\n</html>\n");
  slow.Set(VllmSample());
  slow.Hold();
  missing.Set("no such page", 404);
  AddPod("refused", refused.port());
  AddPod("redirect", redirect.port());
  AddPod("huge", huge.port());
  AddPod("garbage", garbage.port());
  AddPod("slow", slow.port());
  AddPod("missing", missing.port());
  AddPod("unknown-engine", garbage.port(), "llamacpp");
  StartScraper(options);
  const std::pair<const char*, const char*> expected[] = {
      {"refused", "connect"},
      {"redirect", "redirect"},
      {"huge", "body_too_large"},
      {"garbage", "parse"},
      {"slow", "timeout"},
      {"missing", "status"},
      {"unknown-engine", "unsupported_engine"},
  };
  for (const auto& [pod, reason] : expected) {
    EXPECT_TRUE(Eventually([&, pod = pod, reason = reason] {
      return Counter("llm_engine_metrics_query_fail",
                     {{"namespace", "default"}, {"pod", pod}, {"reason", reason}}) >= 1;
    })) << pod;
  }
  EXPECT_EQ(redirect.redirected(), 0);  // redirects are not followed
  for (const char* pod : {"refused", "redirect", "huge", "garbage", "slow", "missing"}) {
    EXPECT_TRUE(State(pod)->MetricNames().empty()) << pod;
  }
}

TEST_F(ScraperTest, BadLinesAreCountedAndTheRestUsed) {
  FakeEngine& engine = Engine();
  engine.Set("vllm:num_requests_running{model_name=\"" + std::string(kModel) +
             "\"} 4\nthis line is { broken\nvllm:num_requests_waiting{model_name=\"" + kModel +
             "\"} 2\n");
  AddPod("p0", engine.port());
  StartScraper();
  auto state = State("p0");
  ASSERT_TRUE(
      Eventually([&] { return state->ModelMetric(kModel, "num_requests_waiting").has_value(); }));
  EXPECT_EQ(state->ModelMetric(kModel, "num_requests_running")->Simple(), 4);
  EXPECT_EQ(Counter("aibrix_cache_metric_bad_lines_total", {}), 1);
}

TEST_F(ScraperTest, RemovedPodsStopBeingScrapedAndAreReleased) {
  FakeEngine& ok = Engine();
  FakeEngine& failing = Engine();
  ok.Set(VllmSample());
  failing.Set("", 500);
  AddPod("ok", ok.port());
  AddPod("failing", failing.port());
  StartScraper();
  ASSERT_TRUE(Eventually([&] { return scraper_->pods_tracked() == 2; }));
  ASSERT_TRUE(Eventually([&] {
    return Counter("llm_engine_metrics_query_fail",
                   {{"namespace", "default"}, {"pod", "failing"}, {"reason", "status"}}) == 1;
  }));
  ASSERT_TRUE(Eventually([&] { return ok.requests() == 1; }));
  ASSERT_TRUE(store_.DeletePod("default", "ok"));
  ASSERT_TRUE(store_.DeletePod("default", "failing"));
  ASSERT_TRUE(Eventually([&] { return scraper_->pods_tracked() == 0; }));
  // Its failure series is gone with it.
  EXPECT_EQ(Counter("llm_engine_metrics_query_fail",
                    {{"namespace", "default"}, {"pod", "failing"}, {"reason", "status"}}),
            -1);
  for (int i = 0; i < 5; ++i) {
    clock_.Advance(seconds(20));
    WaitTicks(2);
  }
  EXPECT_EQ(ok.requests(), 1);
  EXPECT_EQ(failing.requests(), 1);
  // An unready pod is not scraped either.
  store::PodObject unready = store::testing::MakePod("unready", kModel, "127.0.0.1");
  unready.labels[store::kMetricPortLabel] = std::to_string(ok.port());
  unready.ready_condition = false;
  ASSERT_TRUE(store_.AddPod(unready));
  WaitTicks();
  EXPECT_EQ(scraper_->pods_tracked(), 0u);
  EXPECT_EQ(ok.requests(), 1);
}

TEST_F(ScraperTest, EveryDataParallelPortIsScrapedAndMerged) {
  // Two engines on consecutive ports (rank r serves metric port + r).
  FakeEngine* rank0 = nullptr;
  FakeEngine* rank1 = nullptr;
  for (int attempt = 0; attempt < 50 && rank1 == nullptr; ++attempt) {
    rank0 = &Engine();
    FakeEngine& next = Engine(rank0->port() + 1);
    if (next.port() > 0) rank1 = &next;
  }
  ASSERT_NE(rank1, nullptr) << "no two consecutive loopback ports";
  const std::string model = kModel;
  rank0->Set("vllm:prompt_tokens_total{model_name=\"" + model + "\"} 100\n");
  rank1->Set("vllm:prompt_tokens_total{model_name=\"" + model + "\"} 23\n");
  AddPod("dp", rank0->port(), "", 2);
  StartScraper();
  auto state = State("dp");
  ASSERT_TRUE(
      Eventually([&] { return state->ModelMetric(kModel, "prompt_tokens_total").has_value(); }));
  EXPECT_EQ(state->ModelMetric(kModel, "prompt_tokens_total")->Simple(), 123);
  EXPECT_EQ(rank0->requests(), 1);
  EXPECT_EQ(rank1->requests(), 1);
}

TEST_F(ScraperTest, ThroughputIsDerivedFromTokenCounters) {
  FakeEngine& engine = Engine();
  const std::string model = kModel;
  const auto body = [&](int prompt, int generated) {
    return "vllm:prompt_tokens_total{model_name=\"" + model + "\"} " + std::to_string(prompt) +
           "\nvllm:generation_tokens_total{model_name=\"" + model + "\"} " +
           std::to_string(generated) + "\n";
  };
  engine.Set(body(1000, 100));
  AddPod("worker-0", engine.port());  // no prefill/decode in the name: derived all the same
  StartScraper();
  auto state = State("worker-0");
  ASSERT_TRUE(Eventually([&] { return engine.requests() == 1; }));
  ASSERT_TRUE(
      Eventually([&] { return state->ModelMetric(kModel, "prompt_tokens_total").has_value(); }));
  EXPECT_FALSE(state->ModelMetric(kModel, "avg_prompt_throughput_toks_per_s").has_value());
  engine.Set(body(3000, 500));
  clock_.Advance(seconds(2));
  ASSERT_TRUE(Eventually(
      [&] { return state->ModelMetric(kModel, "avg_prompt_throughput_toks_per_s").has_value(); }));
  EXPECT_DOUBLE_EQ(state->ModelMetric(kModel, "avg_prompt_throughput_toks_per_s")->Simple(), 1000);
  EXPECT_DOUBLE_EQ(state->ModelMetric(kModel, "avg_generation_throughput_toks_per_s")->Simple(),
                   200);
  // The engine restarts: its counters start again from zero, the rate stays positive.
  engine.Set(body(400, 40));
  clock_.Advance(seconds(2));
  ASSERT_TRUE(Eventually([&] {
    auto v = state->ModelMetric(kModel, "avg_prompt_throughput_toks_per_s");
    return v && v->scraped_at == clock_.Now();
  }));
  EXPECT_DOUBLE_EQ(state->ModelMetric(kModel, "avg_prompt_throughput_toks_per_s")->Simple(),
                   (2000.0 + 400) / 4);
  // The counter is stored as the engine's value, never re-added.
  EXPECT_EQ(state->ModelMetric(kModel, "prompt_tokens_total")->Simple(), 400);
}

TEST_F(ScraperTest, DrainRateFromCompletedRequests) {
  FakeEngine& engine = Engine();
  engine.Set(VllmSample());
  AddPod("p0", engine.port());
  StartScraper();
  WaitTicks();
  auto state = State("p0");
  int id = 0;
  for (int step = 0; step < 3; ++step) {
    for (int i = 0; i < 10; ++i) {
      const std::string rid = "r" + std::to_string(id++);
      ASSERT_TRUE(store_.AddRequest(rid, "default/p0", kModel).ok());
      ASSERT_TRUE(store_.DoneRequest(rid).ok());
    }
    clock_.Advance(seconds(5));
    WaitTicks(2);
  }
  auto drain = state->Metric(kDrainRateMetric);
  ASSERT_TRUE(drain.has_value());
  EXPECT_DOUBLE_EQ(drain->Simple(), 30.0 / 15);
  EXPECT_EQ(drain->scraped_at, clock_.Now());
}

}  // namespace
}  // namespace aibrix::metrics
