// loadgen: replays a workload (synthetic shared-prefix conversations or a JSONL trace)
// against an OpenAI-compatible endpoint with open-loop Poisson arrivals and reports TTFT,
// end-to-end latency, throughput, errors, the routed pods and the engines' prefix-cache hit
// rate. Thin main: flags, pre-flight checks, run, print. See docs/loadgen.md.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "CLI/CLI.hpp"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "runner.h"

namespace {

using namespace aibrix::loadgen;  // NOLINT: main only

std::atomic<int> g_signals{0};
Runner* g_runner = nullptr;

void OnSignal(int) {
  const int n = g_signals.fetch_add(1) + 1;
  if (g_runner == nullptr || n >= 3) _exit(130);
  if (n == 1) {
    g_runner->RequestStop();
  } else {
    g_runner->CancelInFlight();
  }
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "loadgen: %s\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);

  std::string target;
  std::string model;
  std::string api = "chat";
  std::string routing_strategy;
  std::vector<std::string> headers;
  std::vector<std::string> engine_metrics;
  std::string trace_path;
  double rate = 0;
  double duration = 0;
  uint64_t num_requests = 0;
  int concurrency_limit = 256;
  double timeout = 60;
  double trace_speedup = 1;
  std::string trace_format = "jsonl";
  std::string trace_prompt = "tokens";
  TraceOptions to;
  double progress_interval = 1;
  bool json_output = false;
  std::string records_path;
  SyntheticOptions so;

  CLI::App app{"loadgen: open-loop load against an OpenAI endpoint (docs/loadgen.md)"};
  app.add_option("--target", target, "base URL, e.g. http://127.0.0.1:8090")->required();
  app.add_option("--model", model,
                 "model name for requests (default: the first of the target's /v1/models)");
  app.add_option("--api", api, "synthetic requests: chat or completions")->capture_default_str();
  app.add_option("--routing-strategy", routing_strategy,
                 "sent as the routing-strategy header (aibrix-cache's algorithm)");
  app.add_option("--header", headers, "extra request header 'Name: value' (repeatable)");
  app.add_option("--engine-metrics", engine_metrics,
                 "an engine's /metrics URL for the prefix-cache hit rate (repeatable)");
  app.add_option("--trace", trace_path, "trace to replay instead of the synthetic workload");
  app.add_option("--trace-format", trace_format, "trace format: jsonl or mooncake")
      ->capture_default_str();
  app.add_option("--trace-block-tokens", to.block_tokens, "mooncake: tokens per hash id")
      ->capture_default_str();
  app.add_option("--trace-prompt", trace_prompt,
                 "mooncake: prompts as token ids (tokens) or as text (text)")
      ->capture_default_str();
  app.add_option("--trace-max-output-tokens", to.max_output_tokens,
                 "mooncake: cap on output_length (0 = none)")
      ->capture_default_str();
  app.add_option("--trace-speedup", trace_speedup, "divide trace timestamps by this")
      ->capture_default_str();
  app.add_option("--rate", rate,
                 "Poisson arrivals, requests/s (required for synthetic; for a trace it "
                 "replaces the timestamps)");
  app.add_option("--duration", duration, "stop sending after this many seconds");
  app.add_option("--num-requests", num_requests, "stop after this many requests");
  app.add_option("--concurrency-limit", concurrency_limit, "safety cap on requests in flight")
      ->capture_default_str();
  app.add_option("--timeout", timeout, "per-request timeout, seconds")->capture_default_str();
  app.add_option("--seed", so.seed, "seed of the synthetic text (arrivals use seed+1)")
      ->capture_default_str();
  app.add_option("--system-prompts", so.num_system_prompts, "shared system prompts")
      ->capture_default_str();
  app.add_option("--system-prompt-len", so.system_prompt_len, "characters per system prompt")
      ->capture_default_str();
  app.add_option("--users", so.num_users, "users (user u uses system prompt u mod N)")
      ->capture_default_str();
  app.add_option("--turns", so.turns, "turns per conversation")->capture_default_str();
  app.add_option("--user-message-len", so.user_message_len, "characters per user message")
      ->capture_default_str();
  app.add_option("--reply-len", so.reply_len,
                 "characters of the synthetic assistant reply kept in the history")
      ->capture_default_str();
  app.add_option("--max-tokens", so.max_tokens,
                 "output tokens per request (trace lines may override)")
      ->capture_default_str();
  app.add_option("--progress-interval", progress_interval,
                 "seconds between progress lines on stderr (0 = none)")
      ->capture_default_str();
  app.add_flag("--json", json_output, "print the report as one JSON object");
  app.add_option("--records", records_path,
                 "write one JSON line per request (arrival order) to this file after the run");
  CLI11_PARSE(app, argc, argv);

  absl::StatusOr<HttpUrl> target_url = ParseHttpUrl(target);
  if (!target_url.ok())
    return Fail(fmt::format("--target: {}", std::string(target_url.status().message())));
  if (concurrency_limit < 1) return Fail("--concurrency-limit must be >= 1");
  if (timeout <= 0) return Fail("--timeout must be > 0");
  if (rate < 0) return Fail("--rate must be > 0");
  if (trace_speedup <= 0) return Fail("--trace-speedup must be > 0");
  if (duration < 0) return Fail("--duration must be >= 0");

  RunOptions ro;
  ro.target = *target_url;
  ro.routing_strategy = routing_strategy;
  ro.duration_s = duration;
  ro.num_requests = num_requests;
  ro.concurrency_limit = concurrency_limit;
  ro.progress_interval_s = progress_interval;
  ro.client.timeout_s = timeout;
  for (const std::string& h : headers) {
    const size_t colon = h.find(':');
    if (colon == std::string::npos || colon == 0) {
      return Fail(fmt::format("--header '{}': expected 'Name: value'", h));
    }
    std::string value = h.substr(colon + 1);
    value.erase(0, value.find_first_not_of(' '));
    ro.client.headers.emplace_back(h.substr(0, colon), value);
  }
  for (const std::string& u : engine_metrics) {
    absl::StatusOr<HttpUrl> url = ParseHttpUrl(u);
    if (!url.ok())
      return Fail(fmt::format("--engine-metrics: {}", std::string(url.status().message())));
    ro.engine_metrics.push_back(*url);
  }

  std::unique_ptr<RequestSource> source;
  if (!trace_path.empty()) {
    absl::StatusOr<TraceFormat> format = ParseTraceFormat(trace_format);
    if (!format.ok())
      return Fail(fmt::format("--trace-format: {}", std::string(format.status().message())));
    if (trace_prompt != "tokens" && trace_prompt != "text") {
      return Fail(fmt::format("--trace-prompt: '{}' (expected tokens or text)", trace_prompt));
    }
    if (to.block_tokens < 1) return Fail("--trace-block-tokens must be >= 1");
    if (to.max_output_tokens < 0) return Fail("--trace-max-output-tokens must be >= 0");
    to.format = *format;
    to.text_prompts = trace_prompt == "text";
    to.default_max_tokens = so.max_tokens;
    absl::StatusOr<Trace> trace = LoadTrace(trace_path, to);
    if (!trace.ok()) return Fail(std::string(trace.status().message()));
    if (trace->bad_lines > 0) {
      std::fprintf(stderr, "loadgen: trace %s: skipped %llu bad lines, e.g.\n", trace_path.c_str(),
                   static_cast<unsigned long long>(trace->bad_lines));
      for (const std::string& s : trace->bad_line_samples) {
        std::fprintf(stderr, "loadgen:   %s\n", s.c_str());
      }
    }
    if (rate == 0 && !trace->all_timestamped) {
      return Fail(
          fmt::format("trace {}: not every line has timestamp_ms; pass --rate", trace_path));
    }
    source = MakeTraceSource(std::move(*trace), trace_path, trace_format, rate, trace_speedup,
                             so.seed + 1);
  } else {
    absl::StatusOr<Api> parsed_api = ParseApi(api);
    if (!parsed_api.ok())
      return Fail(fmt::format("--api: {}", std::string(parsed_api.status().message())));
    so.api = *parsed_api;
    if (absl::Status st = so.Validate(); !st.ok()) return Fail(std::string(st.message()));
    if (rate <= 0) return Fail("the synthetic workload needs --rate (requests/s)");
    if (duration == 0 && num_requests == 0) {
      return Fail("the synthetic workload is endless: pass --duration or --num-requests");
    }
    source = MakeSyntheticSource(so, rate, so.seed + 1);
  }

  // Pre-flight: the target answers at all, and names a model if none was given.
  absl::StatusOr<std::string> models =
      HttpGet(HttpUrl{ro.target.host, ro.target.port, "/v1/models"}, std::min(timeout, 10.0));
  if (!models.ok() && absl::IsUnavailable(models.status())) {
    return Fail(fmt::format("target {} is unreachable: {}", ro.target.Origin(),
                            std::string(models.status().message())));
  }
  if (model.empty()) {
    nlohmann::json j =
        models.ok() ? nlohmann::json::parse(*models, nullptr, false) : nlohmann::json();
    if (j.is_object() && j.contains("data") && j["data"].is_array() && !j["data"].empty() &&
        j["data"][0].is_object() && j["data"][0].contains("id") && j["data"][0]["id"].is_string()) {
      model = j["data"][0]["id"].get<std::string>();
    } else {
      return Fail(
          fmt::format("no --model given and {}/v1/models names none ({})", ro.target.Origin(),
                      models.ok() ? "no data[0].id" : std::string(models.status().message())));
    }
  }
  ro.model = model;

  // Opened first: a path that cannot be written fails at once, not after a long run.
  std::ofstream records;
  if (!records_path.empty()) {
    records.open(records_path, std::ios::trunc);
    if (!records) return Fail("--records: cannot write " + records_path);
  }
  Runner runner(std::move(ro));
  g_runner = &runner;
  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  absl::StatusOr<nlohmann::json> report = runner.Run(*source);
  if (!report.ok()) return Fail(std::string(report.status().message()));
  if (records.is_open()) {
    records << runner.RecordsJsonLines();
    if (!records.flush()) return Fail("--records: cannot write " + records_path);
  }
  if (json_output) {
    std::printf("%s\n", report->dump().c_str());
  } else {
    std::printf("%s", ReportToText(*report).c_str());
  }
  std::fflush(stdout);
  g_runner = nullptr;
  return (*report)["requests"]["ok"].get<uint64_t>() > 0 ? 0 : 1;
}
