#include "aibrix/metrics/registry.h"

namespace aibrix::metrics {
namespace {

using T = EngineMetricType;
using S = MetricScope;

constexpr bool kF = true;    // fetched
constexpr bool kNF = false;  // known, not fetched

RawNames Vllm(std::string_view a, std::string_view b = {}) { return {"vllm", {a, b}}; }
RawNames Sglang(std::string_view a) { return {"sglang", {a, {}}}; }
RawNames Trtllm(std::string_view a) { return {"trtllm", {a, {}}}; }
RawNames Xllm(std::string_view a) { return {"xllm", {a, {}}}; }

EngineMetricDef Def(std::string_view name, T type, S scope, bool fetched, std::vector<RawNames> raw,
                    std::string_view help) {
  EngineMetricDef def;
  def.name = name;
  def.type = type;
  def.scope = scope;
  def.fetched = fetched;
  def.raw = std::move(raw);
  def.help = help;
  return def;
}

EngineMetricDef LoraLabel(std::string_view name, std::string_view help) {
  EngineMetricDef def =
      Def(name, T::kLabelQuery, S::kPod, kF, {Vllm("vllm:lora_requests_info")}, help);
  def.label_key = name;
  return def;
}

std::vector<EngineMetricDef> DefaultDefs() {
  std::vector<EngineMetricDef> defs = {
      Def("num_requests_running", T::kGauge, S::kPodModel, kF,
          {Vllm("vllm:num_requests_running"), Sglang("sglang:num_running_reqs")},
          "Requests in the engine's running batch"),
      Def("num_requests_waiting", T::kGauge, S::kPodModel, kF,
          {Vllm("vllm:num_requests_waiting"), Sglang("sglang:num_queue_reqs")},
          "Requests queued in the engine"),
      Def("num_requests_swapped", T::kGauge, S::kPodModel, kF,
          {Vllm("vllm:num_requests_swapped"), Sglang("sglang:num_retracted_reqs")},
          "Requests swapped out (vLLM V0) or retracted (SGLang)"),
      Def("engine_sleep_state", T::kGauge, S::kPodModel, kF, {Vllm("vllm:engine_sleep_state")},
          "1 when the engine is awake, 0 when it sleeps"),
      Def("http_requests_total", T::kCounter, S::kPod, kF,
          {Vllm("http_requests_total", "vllm:http_requests_total")},
          "HTTP requests the engine's API server answered"),
      Def("num_preemptions_total", T::kCounter, S::kPodModel, kNF,
          {Vllm("vllm:num_preemptions_total")}, "Preemptions in the engine"),
      Def("request_success_total", T::kCounter, S::kPodModel, kNF,
          {Vllm("vllm:request_success_total", "vllm:num_requests_success_total"),
           Sglang("sglang:num_requests_total"), Trtllm("trtllm_request_success_total")},
          "Requests the engine finished"),
      Def("num_prefill_prealloc_queue_reqs", T::kGauge, S::kPodModel, kF,
          {Sglang("sglang:num_prefill_prealloc_queue_reqs")},
          "Requests in SGLang's prefill pre-allocation queue"),
      Def("num_decode_prealloc_queue_reqs", T::kGauge, S::kPodModel, kF,
          {Sglang("sglang:num_decode_prealloc_queue_reqs")},
          "Requests in SGLang's decode pre-allocation queue"),
      Def("e2e_request_latency_seconds", T::kHistogram, S::kPodModel, kF,
          {Vllm("vllm:e2e_request_latency_seconds"), Sglang("sglang:e2e_request_latency_seconds"),
           Trtllm("trtllm_e2e_request_latency_seconds")},
          "End-to-end request latency in the engine"),
      Def("request_queue_time_seconds", T::kHistogram, S::kPodModel, kF,
          {Vllm("vllm:request_queue_time_seconds"), Trtllm("trtllm_request_queue_time_seconds")},
          "Time requests spent queued"),
      Def("request_inference_time_seconds", T::kHistogram, S::kPodModel, kF,
          {Vllm("vllm:request_inference_time_seconds")}, "Time requests spent running"),
      Def("per_stage_req_latency_seconds", T::kHistogram, S::kPodModel, kF,
          {Sglang("sglang:per_stage_req_latency_seconds")}, "SGLang per-stage request latency"),
      Def("http_request_duration_seconds", T::kHistogram, S::kPod, kF,
          {Vllm("http_request_duration_seconds")}, "API server request duration"),
      Def("http_request_duration_highr_seconds", T::kHistogram, S::kPod, kF,
          {Vllm("http_request_duration_highr_seconds")},
          "API server request duration (fine buckets)"),
      Def("prompt_tokens_total", T::kCounter, S::kPodModel, kF, {Vllm("vllm:prompt_tokens_total")},
          "Prefill tokens processed"),
      Def("generation_tokens_total", T::kCounter, S::kPodModel, kF,
          {Vllm("vllm:generation_tokens_total")}, "Tokens generated"),
      Def("request_prompt_tokens", T::kHistogram, S::kPodModel, kF,
          {Vllm("vllm:request_prompt_tokens")}, "Prompt tokens per request"),
      Def("request_generation_tokens", T::kHistogram, S::kPodModel, kF,
          {Vllm("vllm:request_generation_tokens")}, "Generated tokens per request"),
      Def("request_max_num_generation_tokens", T::kHistogram, S::kPodModel, kNF,
          {Vllm("vllm:request_max_num_generation_tokens")}, "Requested max generation tokens"),
      Def("iteration_tokens_total", T::kHistogram, S::kPodModel, kF,
          {Vllm("vllm:iteration_tokens_total")}, "Tokens per engine step"),
      Def("time_to_first_token_seconds", T::kHistogram, S::kPodModel, kF,
          {Vllm("vllm:time_to_first_token_seconds"), Sglang("sglang:time_to_first_token_seconds"),
           Trtllm("trtllm_time_to_first_token_seconds")},
          "Time to first token"),
      Def("time_per_output_token_seconds", T::kHistogram, S::kPodModel, kF,
          {Vllm("vllm:time_per_output_token_seconds", "vllm:inter_token_latency_seconds"),
           Sglang("sglang:inter_token_latency_seconds"),
           Trtllm("trtllm_time_per_output_token_seconds")},
          "Time per output token"),
      Def("inter_token_latency_seconds", T::kHistogram, S::kPodModel, kNF,
          {Vllm("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
           Sglang("sglang:inter_token_latency_seconds"),
           Trtllm("trtllm_time_per_output_token_seconds")},
          "Inter-token latency"),
      Def("request_decode_time_seconds", T::kHistogram, S::kPodModel, kF,
          {Vllm("vllm:request_decode_time_seconds")}, "Time requests spent decoding"),
      Def("request_prefill_time_seconds", T::kHistogram, S::kPodModel, kF,
          {Vllm("vllm:request_prefill_time_seconds")}, "Time requests spent in prefill"),
      Def("request_time_per_output_token_seconds", T::kHistogram, S::kPodModel, kNF,
          {Vllm("vllm:request_time_per_output_token_seconds")},
          "Per-request mean time per output token"),
      Def("gpu_cache_usage_perc", T::kGauge, S::kPodModel, kF,
          {Vllm("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc"),
           Sglang("sglang:token_usage"), Xllm("kv_cache_utilization")},
          "GPU KV-cache usage, 1 = full"),
      Def("cpu_cache_usage_perc", T::kGauge, S::kPodModel, kF, {Vllm("vllm:cpu_cache_usage_perc")},
          "CPU KV-cache usage, 1 = full (vLLM V0)"),
      Def("kv_cache_usage_perc", T::kGauge, S::kPodModel, kF,
          {Vllm("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
           Sglang("sglang:token_usage"), Trtllm("trtllm_kv_cache_utilization"),
           Xllm("kv_cache_utilization")},
          "KV-cache usage, 1 = full"),
      // vLLM has no such gauge; engine-sim exports xLLM's unprefixed name next to vLLM's so
      // least-utilization can run against it (a vLLM pod without it falls back).
      Def("engine_utilization", T::kGauge, S::kPodModel, kF,
          {Vllm("engine_utilization"), Xllm("engine_utilization")},
          "Engine utilization: busy fraction, 1 = always busy (xLLM; engine-sim)"),
      Def("kv_cache_hit_rate", T::kGauge, S::kPodModel, kNF, {Trtllm("trtllm_kv_cache_hit_rate")},
          "KV-cache hit rate (TensorRT-LLM)"),
      Def("prefix_cache_queries_total", T::kCounter, S::kPodModel, kF,
          {Vllm("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total")},
          "Prefix-cache queries, in tokens"),
      Def("prefix_cache_hits_total", T::kCounter, S::kPodModel, kF,
          {Vllm("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total")},
          "Prefix-cache hits, in tokens"),
      Def("external_prefix_cache_queries_total", T::kCounter, S::kPodModel, kF,
          {Vllm("vllm:external_prefix_cache_queries_total")},
          "KV-connector prefix-cache queries, in tokens"),
      Def("external_prefix_cache_hits_total", T::kCounter, S::kPodModel, kF,
          {Vllm("vllm:external_prefix_cache_hits_total")},
          "KV-connector prefix-cache hits, in tokens"),
      Def("nixl_xfer_time_seconds", T::kHistogram, S::kPodModel, kF,
          {Vllm("vllm:nixl_xfer_time_seconds")}, "NIXL transfer time"),
      Def("nixl_post_time_seconds", T::kHistogram, S::kPodModel, kF,
          {Vllm("vllm:nixl_post_time_seconds")}, "NIXL post time"),
      Def("nixl_bytes_transferred", T::kHistogram, S::kPodModel, kF,
          {Vllm("vllm:nixl_bytes_transferred")}, "NIXL bytes per transfer"),
      Def("nixl_num_descriptors", T::kHistogram, S::kPodModel, kF,
          {Vllm("vllm:nixl_num_descriptors")}, "NIXL descriptors per transfer"),
      Def("nixl_num_failed_transfers_total", T::kCounter, S::kPodModel, kF,
          {Vllm("vllm:nixl_num_failed_transfers_total", "vllm:nixl_num_failed_transfers")},
          "NIXL failed transfers"),
      Def("nixl_num_failed_notifications_total", T::kCounter, S::kPodModel, kF,
          {Vllm("vllm:nixl_num_failed_notifications_total", "vllm:nixl_num_failed_notifications")},
          "NIXL failed notifications"),
      Def("avg_prompt_throughput_toks_per_s", T::kGauge, S::kPodModel, kF,
          {Vllm("vllm:avg_prompt_throughput_toks_per_s")},
          "Prompt throughput, tokens/s (the engine's, else derived from prompt_tokens_total)"),
      Def("avg_generation_throughput_toks_per_s", T::kGauge, S::kPodModel, kF,
          {Vllm("vllm:avg_generation_throughput_toks_per_s"), Sglang("sglang:gen_throughput")},
          "Generation throughput, tokens/s (the engine's, else derived from "
          "generation_tokens_total)"),
      LoraLabel("max_lora", "LoRA adapters the engine can hold"),
      LoraLabel("running_lora_adapters", "LoRA adapters of running requests"),
      LoraLabel("waiting_lora_adapters", "LoRA adapters of waiting requests"),
  };
  for (EngineMetricDef& def : defs) {
    if (def.name == "engine_sleep_state") {
      def.only_label = "sleep_state";
      def.only_value = "awake";
    }
  }
  return defs;
}

}  // namespace

const EngineMetricRegistry& EngineMetricRegistry::Default() {
  static const EngineMetricRegistry registry(DefaultDefs());
  return registry;
}

EngineMetricRegistry::EngineMetricRegistry(std::vector<EngineMetricDef> defs)
    : defs_(std::move(defs)) {
  for (const EngineMetricDef& def : defs_) index_.emplace(def.name, &def);
}

const EngineMetricDef* EngineMetricRegistry::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

std::vector<Binding> EngineMetricRegistry::BindingsFor(std::string_view engine) const {
  std::vector<Binding> out;
  for (const EngineMetricDef& def : defs_) {
    if (!def.fetched) continue;
    for (const RawNames& raw : def.raw) {
      if (raw.engine == engine) out.push_back(Binding{&def, raw.names});
    }
  }
  return out;
}

absl::flat_hash_set<std::string_view> BoundNames(const std::vector<Binding>& bindings) {
  absl::flat_hash_set<std::string_view> names;
  for (const Binding& binding : bindings) {
    for (std::string_view name : binding.names) {
      if (!name.empty()) names.insert(name);
    }
  }
  return names;
}

bool EngineMetricRegistry::Knows(std::string_view engine) const {
  return engine == "vllm" || engine == "sglang" || engine == "trtllm" || engine == "xllm";
}

std::string_view EngineMetricRegistry::MetricsPath(std::string_view engine) {
  return engine == "trtllm" ? "/prometheus/metrics" : "/metrics";
}

}  // namespace aibrix::metrics
