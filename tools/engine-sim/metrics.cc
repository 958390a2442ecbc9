#include "metrics.h"

#include <algorithm>
#include <cmath>

#include "fmt/format.h"

namespace aibrix::enginesim {
namespace {

std::vector<double> Buckets125(int max_value) {
  std::vector<double> out;
  for (double mantissa = 1;; mantissa *= 10) {
    for (double m : {1.0, 2.0, 5.0}) {
      const double v = m * mantissa;
      if (v > max_value) return out;
      out.push_back(v);
    }
  }
}

const std::vector<double> kTtftBuckets = {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
                                          0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
                                          20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
const std::vector<double> kItlBuckets = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
                                         0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
const std::vector<double> kLatencyBuckets = {0.3,  0.5,   0.8,   1.0,   1.5,   2.0,    2.5,
                                             5.0,  10.0,  15.0,  20.0,  30.0,  40.0,   50.0,
                                             60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
const std::vector<double> kIterationBuckets = {1,   8,    16,   32,   64,   128,  256,
                                               512, 1024, 2048, 4096, 8192, 16384};

void Header(std::string* out, std::string_view name, std::string_view help, std::string_view type) {
  fmt::format_to(std::back_inserter(*out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void Sample(std::string* out, std::string_view name, std::string_view engine,
            std::string_view model, double v) {
  fmt::format_to(std::back_inserter(*out), "{}{{engine=\"{}\",model_name=\"{}\"}} {}\n", name,
                 engine, model, FormatPromValue(v));
}

void Counter(std::string* out, std::string_view name, std::string_view help,
             std::string_view engine, std::string_view model, double v) {
  Header(out, name, help, "counter");
  Sample(out, name, engine, model, v);
}

void Gauge(std::string* out, std::string_view name, std::string_view help, std::string_view engine,
           std::string_view model, double v) {
  Header(out, name, help, "gauge");
  Sample(out, name, engine, model, v);
}

}  // namespace

std::string FormatPromValue(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{:.1f}", v);
  return fmt::format("{}", v);
}

std::string_view FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
  }
  return "abort";
}

void BusyWindow::Add(Time start, Time end) {
  if (end <= start) return;
  while (!intervals_.empty() && intervals_.front().second < start - window_) {
    intervals_.pop_front();
  }
  if (!intervals_.empty() && start <= intervals_.back().second) {
    intervals_.back().second = std::max(intervals_.back().second, end);
  } else {
    intervals_.emplace_back(start, end);
  }
}

double BusyWindow::Utilization(Time now) const {
  const Time from = now - window_;
  std::chrono::steady_clock::duration busy{0};
  for (const auto& [start, end] : intervals_) {
    const Time a = std::max(start, from);
    const Time b = std::min(end, now);
    if (b > a) busy += b - a;
  }
  return std::chrono::duration<double>(busy) / std::chrono::duration<double>(window_);
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  ++count_;
  sum_ += v;
}

void Histogram::Reset() {
  std::fill(counts_.begin(), counts_.end(), 0);
  count_ = 0;
  sum_ = 0;
}

void Histogram::Render(std::string* out, std::string_view name, std::string_view help,
                       std::string_view engine, std::string_view model) const {
  Header(out, name, help, "histogram");
  auto it = std::back_inserter(*out);
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    const std::string le = i < bounds_.size() ? FormatPromValue(bounds_[i]) : "+Inf";
    fmt::format_to(it, "{}_bucket{{engine=\"{}\",le=\"{}\",model_name=\"{}\"}} {}\n", name, engine,
                   le, model, FormatPromValue(static_cast<double>(cumulative)));
  }
  fmt::format_to(it, "{}_count{{engine=\"{}\",model_name=\"{}\"}} {}\n", name, engine, model,
                 FormatPromValue(static_cast<double>(count_)));
  fmt::format_to(it, "{}_sum{{engine=\"{}\",model_name=\"{}\"}} {}\n", name, engine, model,
                 FormatPromValue(sum_));
}

EngineMetrics::EngineMetrics(int max_model_len)
    : time_to_first_token(kTtftBuckets),
      inter_token_latency(kItlBuckets),
      request_time_per_output_token(kItlBuckets),
      e2e_request_latency(kLatencyBuckets),
      request_queue_time(kLatencyBuckets),
      request_inference_time(kLatencyBuckets),
      request_prefill_time(kLatencyBuckets),
      request_decode_time(kLatencyBuckets),
      request_prompt_tokens(Buckets125(max_model_len)),
      request_generation_tokens(Buckets125(max_model_len)),
      request_params_max_tokens(Buckets125(max_model_len)),
      request_max_num_generation_tokens(Buckets125(max_model_len)),
      request_params_n({1, 2, 5, 10, 20}),
      iteration_tokens(kIterationBuckets) {}

void EngineMetrics::Reset() {
  prompt_tokens = generation_tokens = prefix_cache_queries = prefix_cache_hits = 0;
  preemptions = 0;
  request_success = {};
  for (Histogram* h : {&time_to_first_token, &inter_token_latency, &request_time_per_output_token,
                       &e2e_request_latency, &request_queue_time, &request_inference_time,
                       &request_prefill_time, &request_decode_time, &request_prompt_tokens,
                       &request_generation_tokens, &request_params_max_tokens,
                       &request_max_num_generation_tokens, &request_params_n, &iteration_tokens}) {
    h->Reset();
  }
}

void EngineMetrics::Render(std::string* out, const EngineGauges& g, std::string_view engine,
                           std::string_view model) const {
  const auto e = engine;
  const auto m = model;
  Gauge(out, "vllm:num_requests_running", "Number of requests in model execution batches.", e, m,
        g.num_running);
  Gauge(out, "vllm:num_requests_waiting", "Number of requests waiting to be processed.", e, m,
        g.num_waiting);
  Header(out, "vllm:engine_sleep_state",
         "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is "
         "awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
         "gauge");
  for (auto [state, v] :
       {std::pair<const char*, int>{"awake", 1}, {"weights_offloaded", 0}, {"discard_all", 0}}) {
    fmt::format_to(std::back_inserter(*out),
                   "vllm:engine_sleep_state{{engine=\"{}\",model_name=\"{}\",sleep_state=\"{}\"}} "
                   "{}\n",
                   e, m, state, FormatPromValue(v));
  }
  Gauge(out, "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", e, m,
        g.kv_cache_usage);
  Gauge(out, "vllm:gpu_cache_usage_perc",
        "GPU KV-cache usage. 1 means 100 percent usage.DEPRECATED: Use vllm:kv_cache_usage_perc "
        "instead.",
        e, m, g.kv_cache_usage);
  Gauge(out, "vllm:cpu_cache_usage_perc",
        "CPU KV-cache usage. 1 means 100 percent usage. (engine-sim has no CPU tier: 0.)", e, m, 0);
  Gauge(out, "engine_utilization",
        "Fraction of the last second the engine spent executing steps (xLLM's name).", e, m,
        g.utilization);
  Counter(out, "vllm:prefix_cache_queries_total",
          "Prefix cache queries, in terms of number of queried tokens.", e, m,
          static_cast<double>(prefix_cache_queries));
  Counter(out, "vllm:prefix_cache_hits_total",
          "Prefix cache hits, in terms of number of cached tokens.", e, m,
          static_cast<double>(prefix_cache_hits));
  Counter(out, "vllm:gpu_prefix_cache_queries_total",
          "GPU prefix cache queries, in terms of number of queried tokens. DEPRECATED: Use "
          "vllm:prefix_cache_queries instead.",
          e, m, static_cast<double>(prefix_cache_queries));
  Counter(out, "vllm:gpu_prefix_cache_hits_total",
          "GPU prefix cache hits, in terms of number of cached tokens. DEPRECATED: Use "
          "vllm:prefix_cache_hits instead.",
          e, m, static_cast<double>(prefix_cache_hits));
  Counter(out, "vllm:num_preemptions_total", "Cumulative number of preemption from the engine.", e,
          m, static_cast<double>(preemptions));
  Counter(out, "vllm:prompt_tokens_total", "Number of prefill tokens processed.", e, m,
          static_cast<double>(prompt_tokens));
  Counter(out, "vllm:generation_tokens_total", "Number of generation tokens processed.", e, m,
          static_cast<double>(generation_tokens));
  Header(out, "vllm:request_success_total", "Count of successfully processed requests.", "counter");
  for (FinishReason r : {FinishReason::kStop, FinishReason::kLength, FinishReason::kAbort}) {
    fmt::format_to(std::back_inserter(*out),
                   "vllm:request_success_total{{engine=\"{}\",finished_reason=\"{}\",model_name="
                   "\"{}\"}} {}\n",
                   e, FinishReasonName(r), m,
                   FormatPromValue(static_cast<double>(request_success[static_cast<int>(r)])));
  }
  uint64_t finished = 0;
  for (uint64_t n : request_success) finished += n;
  Counter(out, "vllm:num_requests_success_total",
          "Finished requests, every finish reason (the name AIBrix's metric registry reads).", e, m,
          static_cast<double>(finished));
  request_prompt_tokens.Render(out, "vllm:request_prompt_tokens",
                               "Number of prefill tokens processed.", e, m);
  request_generation_tokens.Render(out, "vllm:request_generation_tokens",
                                   "Number of generation tokens processed.", e, m);
  iteration_tokens.Render(out, "vllm:iteration_tokens_total",
                          "Histogram of number of tokens per engine_step.", e, m);
  request_max_num_generation_tokens.Render(
      out, "vllm:request_max_num_generation_tokens",
      "Histogram of maximum number of requested generation tokens.", e, m);
  request_params_n.Render(out, "vllm:request_params_n", "Histogram of the n request parameter.", e,
                          m);
  request_params_max_tokens.Render(out, "vllm:request_params_max_tokens",
                                   "Histogram of the max_tokens request parameter.", e, m);
  time_to_first_token.Render(out, "vllm:time_to_first_token_seconds",
                             "Histogram of time to first token in seconds.", e, m);
  inter_token_latency.Render(out, "vllm:inter_token_latency_seconds",
                             "Histogram of inter-token latency in seconds.", e, m);
  inter_token_latency.Render(out, "vllm:time_per_output_token_seconds",
                             "Histogram of time per output token in seconds.DEPRECATED: Use "
                             "vllm:inter_token_latency_seconds instead.",
                             e, m);
  request_time_per_output_token.Render(out, "vllm:request_time_per_output_token_seconds",
                                       "Histogram of time_per_output_token_seconds per request.", e,
                                       m);
  e2e_request_latency.Render(out, "vllm:e2e_request_latency_seconds",
                             "Histogram of e2e request latency in seconds.", e, m);
  request_queue_time.Render(out, "vllm:request_queue_time_seconds",
                            "Histogram of time spent in WAITING phase for request.", e, m);
  request_inference_time.Render(out, "vllm:request_inference_time_seconds",
                                "Histogram of time spent in RUNNING phase for request.", e, m);
  request_prefill_time.Render(out, "vllm:request_prefill_time_seconds",
                              "Histogram of time spent in PREFILL phase for request.", e, m);
  request_decode_time.Render(out, "vllm:request_decode_time_seconds",
                             "Histogram of time spent in DECODE phase for request.", e, m);
  Header(out, "vllm:cache_config_info", "Information of the LLMEngine CacheConfig", "gauge");
  fmt::format_to(std::back_inserter(*out),
                 "vllm:cache_config_info{{block_size=\"{}\",cache_dtype=\"auto\","
                 "enable_prefix_caching=\"True\",engine=\"{}\",num_gpu_blocks=\"{}\","
                 "prefix_caching_hash_algo=\"xxhash64-sim\"}} 1.0\n",
                 g.block_size, e, g.num_gpu_blocks);
}

}  // namespace aibrix::enginesim
