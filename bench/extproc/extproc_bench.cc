// extproc-bench: the ext_proc server of the service in this process under a fake Envoy on
// loopback, 64 pods of one model, prompts of 8k token ids. Each request is a full exchange as
// Envoy drives it: request headers → body (routed) → response headers → a streamed SSE
// response body in three chunks (usage in the last) → the processor's OK, each step waiting
// for the processor's reply. The upstream is instant, so the whole stream's time is what the
// processor adds.
//
// The client (--client): "h2" (default) is tests/util/h2_envoy.h, many streams per HTTP/2
// connection on one thread per connection as Envoy's codec drives them; "grpc" is the gRPC C++
// client of the tests (fake_envoy.h), a blocking thread per stream, which costs the machine
// more CPU per exchange than the processor does.
//
// Figures:
//   extproc_decisions_per_s        exchanges completed per second: --connections connections
//                                  with --depth exchanges in flight on each
//   extproc_added_latency_p50_us   one exchange at a time: the stream's time, median
//   extproc_added_latency_p99_us   ... 99th percentile
//   extproc_streams_concurrent     streams held open at once (headers answered), then routed
//                                  and completed, with no error (the gRPC client)
// The client and the server share the machine's cores (2 on the project's machines).
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include "CLI/CLI.hpp"
#include "aibrix/common/logging.h"
#include "aibrix/server/service.h"
#include "bench/common/figures.h"
#include "fmt/format.h"
#include "tests/util/fake_envoy.h"
#include "tests/util/h2_envoy.h"
#include "tests/util/temp_dir.h"

namespace {

using aibrix::testing::FakeEnvoy;
using Clock = std::chrono::steady_clock;
using Request = envoy::service::ext_proc::v3::ProcessingRequest;
using Response = envoy::service::ext_proc::v3::ProcessingResponse;

struct Options {
  int pods = 64;
  int prompt_tokens = 8192;
  int prompts = 64;
  std::string client = "h2";
  int connections = 2;
  int depth = 32;
  int threads = 8;
  int server_threads = 0;
  int server_spin_us = aibrix::server::ServiceConfig{}.extproc_spin_us;
  double seconds = 5;
  int latency_requests = 2000;
  int streams = 1024;
  std::string algorithm = "least-request";
};

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "extproc-bench: %s\n", message.c_str());
  std::exit(1);
}

// The messages of one exchange, built once.
struct Script {
  Request headers;
  Request body;
  Request response_headers;
  std::vector<Request> response_body;
  aibrix::testing::H2Exchange framed;  // the same, for the h2 client
};

std::vector<Script> MakeScripts(const Options& options) {
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> token(0, 50000);
  // Prompts share a system prefix of a quarter of their length, as chat traffic does.
  std::vector<int> prefix(options.prompt_tokens / 4);
  for (int& t : prefix) t = token(rng);
  const std::string sse =
      "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"text\":\"hello\"}]}\n\n"
      "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":8192,"
      "\"completion_tokens\":128,\"total_tokens\":8320}}\n\ndata: [DONE]\n\n";
  std::vector<Script> scripts;
  for (int p = 0; p < options.prompts; ++p) {
    std::string body = "{\"model\":\"llama\",\"stream\":true,\"prompt\":[";
    for (int i = 0; i < options.prompt_tokens; ++i) {
      if (i > 0) body += ',';
      body += std::to_string(i < static_cast<int>(prefix.size()) ? prefix[i] : token(rng));
    }
    body += "]}";
    Script script;
    const auto request = aibrix::testing::PostRequest("/v1/completions", body,
                                                      {{"routing-strategy", options.algorithm}});
    script.headers = aibrix::testing::RequestHeadersMessage(request.headers, false);
    script.body = aibrix::testing::BodyMessage(true, body, true);
    script.response_headers = aibrix::testing::ResponseHeadersMessage(
        200, {{"content-type", "text/event-stream"}}, false);
    const size_t a = sse.size() / 3;
    const size_t b = 2 * sse.size() / 3;
    script.response_body = {aibrix::testing::BodyMessage(false, sse.substr(0, a), false),
                            aibrix::testing::BodyMessage(false, sse.substr(a, b - a), false),
                            aibrix::testing::BodyMessage(false, sse.substr(b), true)};
    script.framed = aibrix::testing::H2Exchange::Frame(
        script.headers, script.body, script.response_headers, script.response_body);
    scripts.push_back(std::move(script));
  }
  return scripts;
}

// One full exchange; false on any deviation from the expected answers.
bool RunExchange(FakeEnvoy& envoy, const Script& script) {
  auto stream = envoy.Open();
  Response answer;
  if (!stream->Write(script.headers) || !stream->Read(&answer) || !answer.has_request_headers()) {
    return false;
  }
  if (!stream->Write(script.body) || !stream->Read(&answer) || !answer.has_request_body()) {
    return false;
  }
  const auto& mutation = answer.request_body().response().header_mutation();
  bool routed = false;
  for (const auto& option : mutation.set_headers()) {
    routed |= option.header().key() == "target-pod" && !option.header().raw_value().empty();
  }
  if (!routed) return false;
  if (!stream->Write(script.response_headers) || !stream->Read(&answer) ||
      !answer.has_response_headers()) {
    return false;
  }
  for (const Request& chunk : script.response_body) {  // streamed: no wait between chunks
    if (!stream->Write(chunk)) return false;
  }
  for (size_t i = 0; i < script.response_body.size(); ++i) {
    if (!stream->Read(&answer) || !answer.has_response_body()) return false;
  }
  stream->WritesDone();
  return stream->Finish().ok();
}

// User + system CPU time of the whole process (client and server share it).
double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t i = std::min(values.size() - 1, static_cast<size_t>(p * (values.size() - 1) + 0.5));
  return values[i];
}

// What the latency and throughput phases measured.
struct Phase {
  std::vector<double> latency_micros;
  int64_t latency_errors = 0;
  int64_t done = 0;
  int64_t errors = 0;
  double seconds = 0;
  double cpu_seconds = 0;
  std::string error;  // the first error seen
};

Clock::time_point Deadline(const Options& options) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(options.seconds));
}

Phase RunH2(const Options& options, const std::vector<Script>& scripts, int port) {
  using aibrix::testing::H2Envoy;
  std::vector<aibrix::testing::H2Exchange> exchanges;
  for (const Script& script : scripts) exchanges.push_back(script.framed);
  Phase phase;
  {  // latency: one exchange at a time, after a warm-up
    auto envoy = H2Envoy::Connect(port);
    if (!envoy.ok()) Die(envoy.status().ToString());
    (*envoy)->Run(exchanges, 1, 50, {});
    auto run = (*envoy)->Run(exchanges, 1, options.latency_requests, {});
    phase.latency_micros = std::move(run.micros);
    phase.latency_errors = run.failed;
    phase.error = run.first_error;
  }
  std::vector<std::unique_ptr<H2Envoy>> envoys;
  for (int c = 0; c < options.connections; ++c) {
    auto envoy = H2Envoy::Connect(port);
    if (!envoy.ok()) Die(envoy.status().ToString());
    envoys.push_back(std::move(*envoy));
  }
  std::vector<aibrix::testing::H2RunResult> runs(envoys.size());
  const auto deadline = Deadline(options);
  const auto start = Clock::now();
  const double cpu_start = CpuSeconds();
  std::vector<std::thread> threads;
  for (size_t c = 0; c < envoys.size(); ++c) {
    threads.emplace_back(
        [&, c] { runs[c] = envoys[c]->Run(exchanges, options.depth, 0, deadline); });
  }
  for (auto& thread : threads) thread.join();
  phase.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  phase.cpu_seconds = CpuSeconds() - cpu_start;
  for (const auto& run : runs) {
    phase.done += run.completed;
    phase.errors += run.failed;
    if (phase.error.empty()) phase.error = run.first_error;
  }
  return phase;
}

Phase RunGrpc(const Options& options, const std::vector<Script>& scripts,
              const std::string& target) {
  Phase phase;
  {  // latency: one exchange at a time, after a warm-up
    FakeEnvoy envoy(target);
    for (int i = 0; i < 50; ++i) RunExchange(envoy, scripts[i % scripts.size()]);
    for (int i = 0; i < options.latency_requests; ++i) {
      const auto start = Clock::now();
      if (!RunExchange(envoy, scripts[i % scripts.size()])) ++phase.latency_errors;
      phase.latency_micros.push_back(
          std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    }
  }
  // Throughput: client threads over two connections, as long as --seconds.
  FakeEnvoy envoy_a(target);
  FakeEnvoy envoy_b(target);
  std::atomic<int64_t> done{0};
  std::atomic<int64_t> errors{0};
  const auto deadline = Deadline(options);
  const auto start = Clock::now();
  const double cpu_start = CpuSeconds();
  std::vector<std::thread> threads;
  for (int t = 0; t < options.threads; ++t) {
    threads.emplace_back([&, t] {
      FakeEnvoy& envoy = t % 2 == 0 ? envoy_a : envoy_b;
      for (size_t i = t; Clock::now() < deadline; i += options.threads) {
        if (RunExchange(envoy, scripts[i % scripts.size()])) {
          done.fetch_add(1, std::memory_order_relaxed);
        } else {
          errors.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  phase.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  phase.cpu_seconds = CpuSeconds() - cpu_start;
  phase.done = done.load();
  phase.errors = errors.load();
  return phase;
}

}  // namespace

int main(int argc, char** argv) {
  aibrix::server::ApplyProcessSettings(argv);  // as aibrix-cache does
  Options options;
  CLI::App app{"extproc-bench: the ext_proc server under an in-process fake Envoy"};
  app.add_option("--pods", options.pods, "Pods of the model");
  app.add_option("--prompt-tokens", options.prompt_tokens, "Token ids per prompt");
  app.add_option("--prompts", options.prompts, "Distinct prompts");
  app.add_option("--client", options.client, "h2 (Envoy-like, default) or grpc (gRPC C++)")
      ->check(CLI::IsMember({"h2", "grpc"}));
  app.add_option("--connections", options.connections, "h2: connections (a thread each)");
  app.add_option("--depth", options.depth, "h2: exchanges in flight per connection");
  app.add_option("--threads", options.threads, "grpc: client threads (a stream each)");
  app.add_option("--server-threads", options.server_threads,
                 "The processor's threads (--extproc-threads; 0: one per core)");
  app.add_option("--server-spin-us", options.server_spin_us,
                 "How long the processor's threads poll before sleeping (--extproc-spin-us)");
  app.add_option("--seconds", options.seconds, "Length of the throughput phase");
  app.add_option("--latency-requests", options.latency_requests, "Sequential exchanges timed");
  app.add_option("--streams", options.streams, "Streams held open at once");
  app.add_option("--algorithm", options.algorithm, "routing-strategy of every request");
  CLI11_PARSE(app, argc, argv);
  aibrix::common::SetLogLevel("warn");

  const aibrix::testing::TempDir dir("extproc-bench");
  std::string yaml = "models:\n  - name: llama\n    endpoints:\n";
  for (int i = 0; i < options.pods; ++i) {
    // Addresses only: the fake Envoy's upstream answers by itself.
    yaml += fmt::format("      - \"10.0.{}.{}:8000\"\n", i / 250, 1 + i % 250);
  }
  aibrix::server::ServiceConfig config;
  config.static_config = dir.Write("config.yaml", yaml);
  config.http_addr = "127.0.0.1:0";
  config.extproc_addr = "127.0.0.1:0";
  config.extproc_threads = options.server_threads;
  config.extproc_spin_us = options.server_spin_us;
  config.shutdown_delay_ms = 0;
  config.log_level = "warn";
  aibrix::server::Service service(config);
  if (auto st = service.Start(); !st.ok()) Die(st.ToString());
  const std::string target = fmt::format("127.0.0.1:{}", service.extproc_port());
  const std::vector<Script> scripts = MakeScripts(options);
  std::printf(
      "extproc-bench: %d pods, %d prompts of %d token ids (%zu-byte bodies), algorithm %s, "
      "%u cores\n",
      options.pods, options.prompts, options.prompt_tokens,
      scripts[0].body.request_body().body().size(), options.algorithm.c_str(),
      std::thread::hardware_concurrency());

  const Phase result = options.client == "h2" ? RunH2(options, scripts, service.extproc_port())
                                              : RunGrpc(options, scripts, target);
  std::printf("latency phase: %zu exchanges, %lld errors\n", result.latency_micros.size(),
              static_cast<long long>(result.latency_errors));
  if (result.latency_errors > 0) Die("errors in the latency phase: " + result.error);
  aibrix::bench::PrintFigure("extproc_added_latency_p50_us",
                             Percentile(result.latency_micros, 0.50), "us");
  aibrix::bench::PrintFigure("extproc_added_latency_p99_us",
                             Percentile(result.latency_micros, 0.99), "us");
  std::printf(
      "throughput phase: %lld exchanges in %.2f s (%s client), %lld errors; process CPU %.2f s "
      "(%.0f us per exchange, client and server together)\n",
      static_cast<long long>(result.done), result.seconds, options.client.c_str(),
      static_cast<long long>(result.errors), result.cpu_seconds,
      result.done > 0 ? 1e6 * result.cpu_seconds / static_cast<double>(result.done) : 0.0);
  if (result.errors > 0) Die("errors in the throughput phase: " + result.error);
  aibrix::bench::PrintFigure("extproc_decisions_per_s",
                             static_cast<double>(result.done) / result.seconds, "req/s", 0);

  // Concurrency: every stream opened and answered before any is finished.
  {
    FakeEnvoy envoy(target);
    std::vector<std::unique_ptr<FakeEnvoy::Stream>> streams;
    Response answer;
    int errors = 0;
    for (int i = 0; i < options.streams; ++i) {
      streams.push_back(envoy.Open(std::chrono::seconds(300)));
      const Script& script = scripts[i % scripts.size()];
      if (!streams.back()->Write(script.headers) || !streams.back()->Read(&answer) ||
          !answer.has_request_headers()) {
        ++errors;
      }
    }
    std::printf("concurrency phase: %d streams open, %d errors\n", options.streams, errors);
    for (size_t i = 0; i < streams.size(); ++i) {
      const Script& script = scripts[i % scripts.size()];
      if (!streams[i]->Write(script.body) || !streams[i]->Read(&answer) ||
          !answer.has_request_body()) {
        ++errors;
      }
    }
    const size_t routed = service.store().InFlightRequests();
    for (auto& stream : streams) {
      stream->WritesDone();
      if (!stream->Finish().ok()) ++errors;
    }
    std::printf("concurrency phase: %zu routed at once, %d errors\n", routed, errors);
    aibrix::bench::PrintFigure("extproc_streams_concurrent",
                               errors == 0 ? static_cast<double>(routed) : 0, "streams", 0);
  }
  service.Stop();
  return 0;
}
