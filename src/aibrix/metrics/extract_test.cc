#include "aibrix/metrics/extract.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "aibrix/metrics/registry.h"

namespace aibrix::metrics {
namespace {

constexpr char kLlama[] = "meta-llama/Llama-3.1-8B-Instruct";

std::string ReadTestdata(const std::string& name) {
  std::ifstream in(std::string(AIBRIX_TESTDATA_DIR) + "/metrics/" + name);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Extracts `bodies` for `engine` and answers lookups by (model, internal name).
class Result {
 public:
  Result(std::string_view engine, const std::vector<std::string>& bodies,
         std::string_view pod_model = "")
      : bindings_(EngineMetricRegistry::Default().BindingsFor(engine)) {
    Extractor extractor(bindings_, pod_model);
    for (const std::string& body : bodies) {
      auto parsed = ParseExposition(body);
      EXPECT_TRUE(parsed.ok()) << parsed.status();
      parsed_.push_back(std::move(*parsed));
      extractor.Add(parsed_.back());
    }
    out_ = extractor.Finish(std::chrono::steady_clock::time_point(std::chrono::seconds(7)));
  }
  std::optional<store::MetricValue> Pod(std::string_view name) const {
    for (const auto& [def, value] : out_.pod) {
      if (def->name == name) return value;
    }
    return std::nullopt;
  }
  std::optional<store::MetricValue> Model(std::string_view model, std::string_view name) const {
    for (const auto& v : out_.model) {
      if (v.model == model && v.def->name == name) return v.value;
    }
    return std::nullopt;
  }
  double ModelSimple(std::string_view model, std::string_view name) const {
    auto v = Model(model, name);
    EXPECT_TRUE(v.has_value()) << model << " " << name;
    return v ? v->Simple() : -1;
  }
  const Extracted& out() const { return out_; }

 private:
  std::vector<Binding> bindings_;
  std::vector<ParsedBody> parsed_;
  Extracted out_;
};

TEST(RegistryTest, EnginesAndPaths) {
  const auto& registry = EngineMetricRegistry::Default();
  for (std::string_view engine : {"vllm", "sglang", "trtllm", "xllm"}) {
    EXPECT_TRUE(registry.Knows(engine));
    EXPECT_FALSE(registry.BindingsFor(engine).empty()) << engine;
  }
  EXPECT_FALSE(registry.Knows("llamacpp"));
  EXPECT_TRUE(registry.BindingsFor("llamacpp").empty());
  EXPECT_EQ(EngineMetricRegistry::MetricsPath("trtllm"), "/prometheus/metrics");
  EXPECT_EQ(EngineMetricRegistry::MetricsPath("vllm"), "/metrics");
  const EngineMetricDef* running = registry.Find("num_requests_running");
  ASSERT_NE(running, nullptr);
  EXPECT_EQ(running->type, EngineMetricType::kGauge);
  EXPECT_EQ(running->scope, MetricScope::kPodModel);
  EXPECT_TRUE(running->fetched);
  EXPECT_FALSE(registry.Find("num_preemptions_total")->fetched);
  EXPECT_EQ(registry.Find("max_lora")->type, EngineMetricType::kLabelQuery);
  EXPECT_EQ(registry.Find("nonexistent"), nullptr);
  // Names are unique.
  for (const EngineMetricDef& def : registry.defs()) EXPECT_EQ(registry.Find(def.name), &def);
}

TEST(ExtractTest, TheVllmSample) {
  Result r("vllm", {ReadTestdata("vllm_metrics_sample.txt")});
  EXPECT_EQ(r.out().type_mismatches, 0u);
  // Model-scope values keyed by the whole model name, '/' included.
  EXPECT_EQ(r.ModelSimple(kLlama, "num_requests_running"), 3);
  EXPECT_EQ(r.ModelSimple(kLlama, "num_requests_waiting"), 1);
  EXPECT_EQ(r.ModelSimple(kLlama, "engine_sleep_state"), 1);  // the awake series
  EXPECT_EQ(r.ModelSimple(kLlama, "kv_cache_usage_perc"), 0.0421875);
  // Current vLLM has no gpu_cache_usage_perc: the renamed series stands in.
  EXPECT_EQ(r.ModelSimple(kLlama, "gpu_cache_usage_perc"), 0.0421875);
  EXPECT_EQ(r.ModelSimple(kLlama, "prompt_tokens_total"), 51987);
  EXPECT_EQ(r.ModelSimple(kLlama, "generation_tokens_total"), 10860);
  EXPECT_EQ(r.ModelSimple(kLlama, "prefix_cache_hits_total"), 18432);
  auto ttft = r.Model(kLlama, "time_to_first_token_seconds");
  ASSERT_TRUE(ttft.has_value());
  ASSERT_NE(ttft->histogram(), nullptr);
  EXPECT_EQ(ttft->histogram()->count, 40);
  EXPECT_DOUBLE_EQ(ttft->histogram()->sum, 18.021521);
  EXPECT_EQ(ttft->histogram()->buckets.size(), 23u);
  EXPECT_EQ(ttft->histogram()->buckets.rbegin()->second, 40);
  EXPECT_GT(ttft->histogram()->Percentile(50), 0);
  EXPECT_EQ(ttft->scraped_at, std::chrono::steady_clock::time_point(std::chrono::seconds(7)));
  // time_per_output_token_seconds: the deprecated name is gone, its successor is read.
  EXPECT_TRUE(r.Model(kLlama, "time_per_output_token_seconds").has_value());
  // Pod scope: every series of the family merged.
  auto http = r.Pod("http_requests_total");
  ASSERT_TRUE(http.has_value());
  EXPECT_EQ(http->Simple(), 40 + 1200 + 40);
  EXPECT_TRUE(r.Pod("http_request_duration_highr_seconds").has_value());
  // LoRA label queries.
  auto max_lora = r.Pod("max_lora");
  ASSERT_TRUE(max_lora.has_value());
  EXPECT_EQ(max_lora->Simple(), 4);
  auto running_lora = r.Pod("running_lora_adapters");
  ASSERT_TRUE(running_lora.has_value());
  EXPECT_EQ(running_lora->Simple(), 1);
  EXPECT_EQ(std::get<store::SimpleMetric>(running_lora->value).labels.at("value"), "sql-lora");
  EXPECT_EQ(r.Pod("waiting_lora_adapters")->Simple(), 0);
  // Registered but not fetched, and not in this body.
  EXPECT_FALSE(r.Model(kLlama, "num_preemptions_total").has_value());
  EXPECT_FALSE(r.Model(kLlama, "cpu_cache_usage_perc").has_value());
}

TEST(ExtractTest, OldAndNewVllmNames) {
  Result r("vllm", {ReadTestdata("vllm_metrics_v0_10_excerpt.txt")});
  EXPECT_EQ(r.ModelSimple(kLlama, "gpu_cache_usage_perc"), 0.0421875);
  EXPECT_EQ(r.ModelSimple(kLlama, "kv_cache_usage_perc"), 0.0421875);
  EXPECT_EQ(r.ModelSimple(kLlama, "prefix_cache_queries_total"), 51987);
  auto tpot = r.Model(kLlama, "time_per_output_token_seconds");
  ASSERT_TRUE(tpot.has_value());
  EXPECT_EQ(tpot->histogram()->count, 400);

  // A body with only the old prefix-cache names still yields the metric.
  Result old("vllm", {"vllm:gpu_prefix_cache_hits_total{model_name=\"m\"} 9\n"});
  EXPECT_EQ(old.ModelSimple("m", "prefix_cache_hits_total"), 9);
}

TEST(ExtractTest, DuplicatesMergeCountersAndHistogramsSumGaugesLast) {
  const std::string body =
      "# TYPE vllm:num_requests_running gauge\n"
      "vllm:num_requests_running{engine=\"0\",model_name=\"org/m\"} 3\n"
      "vllm:num_requests_running{engine=\"1\",model_name=\"org/m\"} 5\n"
      "vllm:num_requests_running{engine=\"0\",model_name=\"other\"} 1\n"
      "# TYPE vllm:prompt_tokens_total counter\n"
      "vllm:prompt_tokens_total{engine=\"0\",model_name=\"org/m\"} 100\n"
      "vllm:prompt_tokens_total{engine=\"1\",model_name=\"org/m\"} 50\n"
      "# TYPE vllm:request_queue_time_seconds histogram\n"
      "vllm:request_queue_time_seconds_bucket{engine=\"0\",le=\"1\",model_name=\"org/m\"} 1\n"
      "vllm:request_queue_time_seconds_bucket{engine=\"0\",le=\"+Inf\",model_name=\"org/m\"} 2\n"
      "vllm:request_queue_time_seconds_sum{engine=\"0\",model_name=\"org/m\"} 3\n"
      "vllm:request_queue_time_seconds_count{engine=\"0\",model_name=\"org/m\"} 2\n"
      "vllm:request_queue_time_seconds_bucket{engine=\"1\",le=\"0.5\",model_name=\"org/m\"} 3\n"
      "vllm:request_queue_time_seconds_bucket{engine=\"1\",le=\"1\",model_name=\"org/m\"} 4\n"
      "vllm:request_queue_time_seconds_bucket{engine=\"1\",le=\"+Inf\",model_name=\"org/m\"} 4\n"
      "vllm:request_queue_time_seconds_sum{engine=\"1\",model_name=\"org/m\"} 1\n"
      "vllm:request_queue_time_seconds_count{engine=\"1\",model_name=\"org/m\"} 4\n";
  Result r("vllm", {body});
  EXPECT_EQ(r.ModelSimple("org/m", "num_requests_running"), 5);
  EXPECT_EQ(r.ModelSimple("other", "num_requests_running"), 1);
  EXPECT_EQ(r.ModelSimple("org/m", "prompt_tokens_total"), 150);
  auto queue = r.Model("org/m", "request_queue_time_seconds");
  ASSERT_TRUE(queue.has_value());
  const store::HistogramMetric& h = *queue->histogram();
  EXPECT_EQ(h.sum, 4);
  EXPECT_EQ(h.count, 6);
  EXPECT_THAT(h.buckets,
              ::testing::ElementsAre(::testing::Pair(0.5, 3), ::testing::Pair(1.0, 5),
                                     ::testing::Pair(std::numeric_limits<double>::infinity(), 6)));
  // No "org" model appears: the name is never split.
  EXPECT_FALSE(r.Model("org", "num_requests_running").has_value());

  // Two data-parallel ports are two bodies merged the same way.
  Result dp("vllm", {"vllm:prompt_tokens_total{model_name=\"org/m\"} 10\n",
                     "vllm:prompt_tokens_total{model_name=\"org/m\"} 32\n"});
  EXPECT_EQ(dp.ModelSimple("org/m", "prompt_tokens_total"), 42);
}

TEST(ExtractTest, MissingOrUndefinedModelNameTakesThePodModel) {
  const std::string body =
      "vllm:num_requests_waiting 2\n"
      "vllm:num_requests_running{model_name=\"undefined\"} 4\n"
      "vllm:kv_cache_usage_perc{model_name=\"\"} 0.5\n";
  Result with_model("vllm", {body}, "pod-model");
  EXPECT_EQ(with_model.ModelSimple("pod-model", "num_requests_waiting"), 2);
  EXPECT_EQ(with_model.ModelSimple("pod-model", "num_requests_running"), 4);
  EXPECT_EQ(with_model.ModelSimple("pod-model", "kv_cache_usage_perc"), 0.5);
  Result without("vllm", {body}, "");
  EXPECT_TRUE(without.out().model.empty());
}

TEST(ExtractTest, WrongTypesAndNaNAreSkipped) {
  Result r("vllm", {"# TYPE vllm:time_to_first_token_seconds gauge\n"
                    "vllm:time_to_first_token_seconds{model_name=\"m\"} 1\n"
                    "vllm:num_requests_running{model_name=\"m\"} NaN\n"
                    "vllm:num_requests_waiting{model_name=\"m\"} 1\n"});
  EXPECT_EQ(r.out().type_mismatches, 1u);
  EXPECT_FALSE(r.Model("m", "time_to_first_token_seconds").has_value());
  EXPECT_FALSE(r.Model("m", "num_requests_running").has_value());
  EXPECT_EQ(r.ModelSimple("m", "num_requests_waiting"), 1);
}

TEST(ExtractTest, LoraInfoTakesTheNewestSeries) {
  Result r("vllm", {"# TYPE vllm:lora_requests_info gauge\n"
                    "vllm:lora_requests_info{max_lora=\"2\",running_lora_adapters=\"old\","
                    "waiting_lora_adapters=\"\"} 100\n"
                    "vllm:lora_requests_info{max_lora=\"2\",running_lora_adapters=\"a,b\","
                    "waiting_lora_adapters=\"c\"} 200\n"
                    "vllm:lora_requests_info{max_lora=\"2\",running_lora_adapters=\"older\","
                    "waiting_lora_adapters=\"\"} 50\n"});
  EXPECT_EQ(r.Pod("running_lora_adapters")->Simple(), 2);
  EXPECT_EQ(std::get<store::SimpleMetric>(r.Pod("running_lora_adapters")->value).labels.at("value"),
            "a,b");
  EXPECT_EQ(r.Pod("waiting_lora_adapters")->Simple(), 1);
  EXPECT_EQ(r.Pod("max_lora")->Simple(), 2);
}

// An SGLang body (names as SGLang's metrics collector exports them).
TEST(ExtractTest, Sglang) {
  const std::string body =
      "# HELP sglang:num_running_reqs The number of running requests.\n"
      "# TYPE sglang:num_running_reqs gauge\n"
      "sglang:num_running_reqs{model_name=\"Qwen/Qwen2-7B\",tp_rank=\"0\"} 6.0\n"
      "# TYPE sglang:num_queue_reqs gauge\n"
      "sglang:num_queue_reqs{model_name=\"Qwen/Qwen2-7B\",tp_rank=\"0\"} 2.0\n"
      "# TYPE sglang:token_usage gauge\n"
      "sglang:token_usage{model_name=\"Qwen/Qwen2-7B\",tp_rank=\"0\"} 0.25\n"
      "# TYPE sglang:gen_throughput gauge\n"
      "sglang:gen_throughput{model_name=\"Qwen/Qwen2-7B\",tp_rank=\"0\"} 812.5\n"
      "# TYPE sglang:time_to_first_token_seconds histogram\n"
      "sglang:time_to_first_token_seconds_bucket{le=\"0.1\",model_name=\"Qwen/Qwen2-7B\"} 3\n"
      "sglang:time_to_first_token_seconds_bucket{le=\"+Inf\",model_name=\"Qwen/Qwen2-7B\"} 4\n"
      "sglang:time_to_first_token_seconds_sum{model_name=\"Qwen/Qwen2-7B\"} 0.9\n"
      "sglang:time_to_first_token_seconds_count{model_name=\"Qwen/Qwen2-7B\"} 4\n"
      "# A vLLM name on an SGLang pod is not read.\n"
      "vllm:num_requests_waiting{model_name=\"Qwen/Qwen2-7B\"} 99\n";
  Result r("sglang", {body});
  EXPECT_EQ(r.ModelSimple("Qwen/Qwen2-7B", "num_requests_running"), 6);
  EXPECT_EQ(r.ModelSimple("Qwen/Qwen2-7B", "num_requests_waiting"), 2);
  EXPECT_EQ(r.ModelSimple("Qwen/Qwen2-7B", "kv_cache_usage_perc"), 0.25);
  EXPECT_EQ(r.ModelSimple("Qwen/Qwen2-7B", "gpu_cache_usage_perc"), 0.25);
  EXPECT_EQ(r.ModelSimple("Qwen/Qwen2-7B", "avg_generation_throughput_toks_per_s"), 812.5);
  EXPECT_EQ(r.Model("Qwen/Qwen2-7B", "time_to_first_token_seconds")->histogram()->count, 4);

  // The same body read as vLLM finds only the vLLM series.
  Result as_vllm("vllm", {body});
  EXPECT_EQ(as_vllm.out().model.size(), 1u);
  EXPECT_EQ(as_vllm.ModelSimple("Qwen/Qwen2-7B", "num_requests_waiting"), 99);
}

TEST(ExtractTest, TrtllmAndXllm) {
  Result trt("trtllm", {"trtllm_kv_cache_utilization{model_name=\"t\"} 0.7\n"
                        "trtllm_request_success_total{model_name=\"t\"} 5\n"});
  EXPECT_EQ(trt.ModelSimple("t", "kv_cache_usage_perc"), 0.7);
  EXPECT_FALSE(trt.Model("t", "request_success_total").has_value());  // not fetched
  Result x("xllm", {"kv_cache_utilization 0.3\nengine_utilization 0.9\n"}, "x-model");
  EXPECT_EQ(x.ModelSimple("x-model", "kv_cache_usage_perc"), 0.3);
  EXPECT_EQ(x.ModelSimple("x-model", "gpu_cache_usage_perc"), 0.3);
  EXPECT_EQ(x.ModelSimple("x-model", "engine_utilization"), 0.9);
}

TEST(ExtractTest, VllmPodsReadEngineUtilizationUnprefixed) {
  // engine-sim (and any vLLM pod with such an exporter) writes xLLM's unprefixed name.
  Result r("vllm", {"# TYPE engine_utilization gauge\n"
                    "engine_utilization{engine=\"0\",model_name=\"m\"} 0.75\n"});
  EXPECT_EQ(r.ModelSimple("m", "engine_utilization"), 0.75);
}

}  // namespace
}  // namespace aibrix::metrics
