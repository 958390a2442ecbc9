// loadgen end to end: the Runner against an in-process fake OpenAI server (routed-pod
// header, HTTP errors, broken streams, the concurrency cap, TTFT at the first generated
// text), and the loadgen binary against a real engine-sim (synthetic conversations, trace
// replay, the prefix-cache hit rate from /metrics, bad input). The engine-sim tests skip
// when build/bin/engine-sim has not been built.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <thread>

#include "fmt/format.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/util/refused_port.h"
#include "tests/util/subprocess.h"
#include "tests/util/temp_dir.h"
#include "tools/loadgen/runner.h"

namespace aibrix::loadgen {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using testing::BinaryPath;
using testing::Subprocess;

enum class FakeMode { kNormal, kErrorEvent, kNoDone };

// A fake OpenAI chat endpoint: role chunk at once, the 3 tokens after `first_token_delay`,
// usage, [DONE]. Every 5th request (by arrival) gets a 503. /metrics counts 100 queries and
// 25 hits per successful request.
class FakeServer {
 public:
  FakeServer(FakeMode mode, milliseconds first_token_delay)
      : mode_(mode), delay_(first_token_delay) {
    // Each keep-alive connection holds a server thread: more threads than loadgen opens.
    server_.new_task_queue = [] { return new httplib::ThreadPool(64); };
    server_.Post("/v1/chat/completions", [this](const httplib::Request&, httplib::Response& res) {
      const int n = count_.fetch_add(1);
      res.set_header("x-aibrix-target-pod", fmt::format("pod-{}", n % 2));
      if (n % 5 == 4) {
        res.status = 503;
        res.set_content(R"({"error": {"message": "no ready pod", "code": 503}})",
                        "application/json");
        return;
      }
      const int now = ++in_flight_;
      int seen = max_in_flight_.load();
      while (now > seen && !max_in_flight_.compare_exchange_weak(seen, now)) {
      }
      res.set_chunked_content_provider(
          "text/event-stream", [this](size_t, httplib::DataSink& sink) {
            auto send = [&](const std::string& data) {
              const std::string ev = "data: " + data + "\n\n";
              sink.write(ev.data(), ev.size());
            };
            send(R"({"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})");
            std::this_thread::sleep_for(delay_);
            for (const char* tok : {"a", "b", "c"}) {
              send(json({{"choices", {{{"index", 0}, {"delta", {{"content", tok}}}}}}}).dump());
            }
            if (mode_ == FakeMode::kErrorEvent) {
              send(R"({"error": {"message": "engine restarted", "code": 503}})");
            } else {
              send(R"({"choices":[],"usage":{"prompt_tokens":100,"completion_tokens":3,)"
                   R"("prompt_tokens_details":{"cached_tokens":25}}})");
              if (mode_ == FakeMode::kNormal) {
                send("[DONE]");
                queries_ += 100;
                hits_ += 25;
              }
            }
            --in_flight_;
            sink.done();
            return true;
          });
    });
    server_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(fmt::format("vllm:prefix_cache_queries_total{{engine=\"0\"}} {}.0\n"
                                  "vllm:prefix_cache_hits_total{{engine=\"0\"}} {}.0\n",
                                  queries_.load(), hits_.load()),
                      "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // Bound and listening: connections wait in the backlog until the thread accepts them.
  }
  ~FakeServer() {
    server_.stop();
    thread_.join();
  }

  int port() const { return port_; }
  int requests() const { return count_.load(); }
  int max_in_flight() const { return max_in_flight_.load(); }

 private:
  const FakeMode mode_;
  const milliseconds delay_;
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<int> count_{0};
  std::atomic<int> in_flight_{0};
  std::atomic<int> max_in_flight_{0};
  std::atomic<int> queries_{0};
  std::atomic<int> hits_{0};
};

SyntheticOptions TinyWorkload() {
  SyntheticOptions o;
  o.num_system_prompts = 2;
  o.system_prompt_len = 64;
  o.num_users = 4;
  o.turns = 2;
  o.user_message_len = 8;
  o.reply_len = 4;
  o.max_tokens = 3;
  return o;
}

RunOptions FakeRunOptions(const FakeServer& fake, uint64_t n) {
  RunOptions ro;
  ro.target = HttpUrl{"127.0.0.1", fake.port(), "/"};
  ro.model = "m";
  ro.num_requests = n;
  ro.progress_interval_s = 0;
  ro.client.timeout_s = 10;
  ro.engine_metrics.push_back(HttpUrl{"127.0.0.1", fake.port(), "/metrics"});
  return ro;
}

TEST(LoadgenFakeServerTest, ReportAndRecordsCountPodsErrorsTokensAndHitRate) {
  FakeServer fake(FakeMode::kNormal, milliseconds(30));
  Runner runner(FakeRunOptions(fake, 20));
  auto source = MakeSyntheticSource(TinyWorkload(), 200, 2);
  absl::StatusOr<json> r = runner.Run(*source);
  ASSERT_TRUE(r.ok()) << r.status();
  SCOPED_TRACE(r->dump(2));
  EXPECT_EQ(fake.requests(), 20);
  EXPECT_GT((*r)["duration_s"].get<double>(), 0);
  EXPECT_EQ((*r)["requests"]["sent"], 20);
  EXPECT_EQ((*r)["requests"]["ok"], 16);
  EXPECT_EQ((*r)["requests"]["failed"], 4);
  EXPECT_EQ((*r)["errors"], json({{"http_503", 4}}));
  EXPECT_NE((*r)["error_samples"][0].get<std::string>().find("no ready pod"), std::string::npos);
  EXPECT_EQ((*r)["pods"], json({{"pod-0", 10}, {"pod-1", 10}}));
  EXPECT_EQ((*r)["tokens"]["output"], 16 * 3);
  EXPECT_DOUBLE_EQ((*r)["usage_hit_rate"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ((*r)["engine_prefix_cache"]["hit_rate"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ((*r)["engine_prefix_cache"]["queries"].get<double>(), 1600);
  // TTFT is the first generated text, after the delay, not the role chunk sent at once.
  EXPECT_GE((*r)["ttft_ms"]["p50"].get<double>(), 30);
  EXPECT_EQ((*r)["ttft_ms"]["count"], 16);
  EXPECT_LE((*r)["ttft_ms"]["max"].get<double>(), (*r)["e2e_ms"]["max"].get<double>());
  EXPECT_GT((*r)["throughput"]["req_per_s"].get<double>(), 0);
  EXPECT_EQ((*r)["workload"]["kind"], "synthetic");
  // Text rendering has the headline numbers.
  const std::string text = ReportToText(*r);
  EXPECT_NE(text.find("http_503 4"), std::string::npos) << text;
  EXPECT_NE(text.find("pod-0 10"), std::string::npos) << text;
  EXPECT_NE(text.find("25.0%"), std::string::npos) << text;
  // --records: one line per request, in arrival order, agreeing with the report.
  const std::string records = runner.RecordsJsonLines();
  std::vector<json> lines;
  for (size_t at = 0; at < records.size();) {
    const size_t end = records.find('\n', at);
    ASSERT_NE(end, std::string::npos) << "every line ends with a newline";
    lines.push_back(json::parse(records.substr(at, end - at)));
    at = end + 1;
  }
  ASSERT_EQ(lines.size(), 20u);
  int ok = 0, failed = 0;
  std::map<std::string, int> pods;
  for (size_t i = 0; i < lines.size(); ++i) {
    const json& l = lines[i];
    SCOPED_TRACE(l.dump());
    if (i > 0) {
      EXPECT_GE(l["arrival_s"].get<double>(), lines[i - 1]["arrival_s"].get<double>());
    }
    EXPECT_GE(l["sent_s"].get<double>(), 0);
    ++pods[l["pod"].get<std::string>()];
    if (l["ok"].get<bool>()) {
      ++ok;
      EXPECT_GE(l["ttft_ms"].get<double>(), 30);
      EXPECT_LE(l["ttft_ms"].get<double>(), l["e2e_ms"].get<double>());
      EXPECT_EQ(l["prompt_tokens"], 100);
      EXPECT_EQ(l["cached_tokens"], 25);
      EXPECT_EQ(l["output_tokens"], 3);
      EXPECT_FALSE(l.contains("error"));
    } else {
      ++failed;
      EXPECT_EQ(l["error"], "http_503");
      EXPECT_TRUE(l["ttft_ms"].is_null());
    }
  }
  EXPECT_EQ(ok, (*r)["requests"]["ok"].get<int>());
  EXPECT_EQ(failed, 4);
  EXPECT_EQ(json(pods), (*r)["pods"]);
}

TEST(LoadgenFakeServerTest, BrokenStreamsAreErrorsByKind) {
  {
    FakeServer fake(FakeMode::kErrorEvent, milliseconds(0));
    Runner runner(FakeRunOptions(fake, 5));
    auto source = MakeSyntheticSource(TinyWorkload(), 500, 2);
    absl::StatusOr<json> r = runner.Run(*source);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ((*r)["errors"], json({{"stream_error", 4}, {"http_503", 1}})) << r->dump();
    // No request completed: the hit rate over the run is unknown, not 0.
    EXPECT_TRUE((*r)["engine_prefix_cache"]["hit_rate"].is_null());
  }
  {
    FakeServer fake(FakeMode::kNoDone, milliseconds(0));
    Runner runner(FakeRunOptions(fake, 4));
    auto source = MakeSyntheticSource(TinyWorkload(), 500, 2);
    absl::StatusOr<json> r = runner.Run(*source);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ((*r)["errors"], json({{"incomplete", 4}})) << r->dump();
  }
}

TEST(LoadgenFakeServerTest, ConcurrencyLimitCapsRequestsInFlight) {
  FakeServer fake(FakeMode::kNormal, milliseconds(100));
  RunOptions ro = FakeRunOptions(fake, 8);
  ro.concurrency_limit = 2;
  Runner runner(std::move(ro));
  auto source = MakeSyntheticSource(TinyWorkload(), 1000, 2);  // all due within ~10 ms
  absl::StatusOr<json> r = runner.Run(*source);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)["requests"]["sent"], 8);
  EXPECT_LE(fake.max_in_flight(), 2);
  EXPECT_GT((*r)["requests"]["dispatch_delayed"].get<int>(), 0);
  EXPECT_GE((*r)["requests"]["max_dispatch_lag_ms"].get<double>(), 90);
}

TEST(LoadgenFakeServerTest, UnreadableEngineMetricsFailBeforeTheRun) {
  FakeServer fake(FakeMode::kNormal, milliseconds(0));
  RunOptions ro = FakeRunOptions(fake, 1);
  ro.engine_metrics = {HttpUrl{"127.0.0.1", fake.port(), "/nothing"}};
  Runner runner(std::move(ro));
  auto source = MakeSyntheticSource(TinyWorkload(), 100, 2);
  absl::StatusOr<json> r = runner.Run(*source);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("/nothing"), std::string::npos);
  EXPECT_EQ(fake.requests(), 0);
}

// Runs `argv` to its end: the exit code (128+signal if killed) and everything it printed
// (stdout and stderr). Killed and an error after `timeout`.
absl::StatusOr<std::pair<int, std::string>> RunToEnd(const std::vector<std::string>& argv,
                                                     milliseconds timeout) {
  absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Start(argv);
  if (!process.ok()) return process.status();
  absl::StatusOr<int> code = (*process)->Wait(timeout);
  if (!code.ok()) {
    return absl::DeadlineExceededError(fmt::format("{} still running after {} ms; output:\n{}",
                                                   argv[0], timeout.count(), (*process)->Output()));
  }
  return std::pair<int, std::string>{*code, (*process)->Output()};
}

// ----- the binaries ------------------------------------------------------------------------

class LoadgenEngineSimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access(BinaryPath("engine-sim").c_str(), X_OK) != 0) {
      GTEST_SKIP() << "engine-sim is not built (" << BinaryPath("engine-sim") << ")";
    }
    ASSERT_EQ(access(BinaryPath("loadgen").c_str(), X_OK), 0) << BinaryPath("loadgen");
    auto sim =
        Subprocess::Start({BinaryPath("engine-sim"), "--port", "0", "--model", "sim",
                           "--time-scale", "10", "--num-gpu-blocks", "512", "--log-level", "warn"});
    ASSERT_TRUE(sim.ok()) << sim.status();
    sim_ = std::move(*sim);
    auto port = sim_->WaitForListeningPort(milliseconds(10000));
    ASSERT_TRUE(port.ok()) << port.status();
    port_ = *port;
  }

  void TearDown() override {
    if (sim_) {
      EXPECT_TRUE(sim_->Stop(SIGTERM, milliseconds(5000)).ok());
    }
  }

  std::string Url() const { return fmt::format("http://127.0.0.1:{}", port_); }

  // Runs loadgen to the end (at most 60 s); returns its exit code and all its output.
  std::pair<int, std::string> RunLoadgen(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {BinaryPath("loadgen")};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<std::pair<int, std::string>> r = RunToEnd(argv, milliseconds(60000));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::pair<int, std::string>{-1, ""};
  }

  static json LastJsonLine(const std::string& output) {
    size_t end = output.rfind('}');
    if (end == std::string::npos) return json();
    size_t start = output.rfind("\n{", end);
    start = start == std::string::npos ? 0 : start + 1;
    return json::parse(output.substr(start, end - start + 1), nullptr, false);
  }

  std::string TempFile(const std::string& name, const std::string& content) {
    return temp_dir_.Write(name, content);
  }

  testing::TempDir temp_dir_{"loadgen"};
  std::unique_ptr<Subprocess> sim_;
  int port_ = 0;
};

TEST_F(LoadgenEngineSimTest, SyntheticConversationsHitThePrefixCache) {
  auto [code, out] = RunLoadgen({"--target",
                                 Url(),
                                 "--json",
                                 "--rate",
                                 "100",
                                 "--num-requests",
                                 "40",
                                 "--system-prompts",
                                 "2",
                                 "--system-prompt-len",
                                 "512",
                                 "--users",
                                 "4",
                                 "--turns",
                                 "3",
                                 "--user-message-len",
                                 "40",
                                 "--max-tokens",
                                 "5",
                                 "--engine-metrics",
                                 Url() + "/metrics",
                                 "--progress-interval",
                                 "0.2"});
  ASSERT_EQ(code, 0) << out;
  json r = LastJsonLine(out);
  ASSERT_TRUE(r.is_object()) << out;
  SCOPED_TRACE(r.dump(2));
  EXPECT_EQ(r["model"], "sim");  // found through /v1/models
  EXPECT_EQ(r["requests"]["ok"], 40);
  EXPECT_EQ(r["requests"]["failed"], 0);
  EXPECT_EQ(r["tokens"]["output"], 40 * 5);
  EXPECT_EQ(r["tokens"]["requests_with_usage"], 40);
  // The engine's counters and the responses' usage agree exactly on what was cached...
  const double engine_rate = r["engine_prefix_cache"]["hit_rate"].get<double>();
  EXPECT_DOUBLE_EQ(engine_rate, r["usage_hit_rate"].get<double>());
  EXPECT_DOUBLE_EQ(r["engine_prefix_cache"]["queries"].get<double>(),
                   r["tokens"]["prompt"].get<double>());
  // ...and shared system prompts plus growing conversations make most prompt tokens hits
  // (only 2 cold system prompts and each turn's newest ~40-token message are missed).
  EXPECT_GT(engine_rate, 0.7);
  EXPECT_GT(r["ttft_ms"]["p50"].get<double>(), 0);
  EXPECT_LE(r["ttft_ms"]["p50"].get<double>(), r["e2e_ms"]["p50"].get<double>());
  // engine-sim exports vLLM's queue and prefill time histograms: their means over the run.
  ASSERT_TRUE(r["engine_timing"]["queue_ms_mean"].is_number());
  ASSERT_TRUE(r["engine_timing"]["prefill_ms_mean"].is_number());
  EXPECT_GE(r["engine_timing"]["queue_ms_mean"].get<double>(), 0);
  EXPECT_GT(r["engine_timing"]["prefill_ms_mean"].get<double>(), 0);
  EXPECT_TRUE(r["pods"].empty());  // engine-sim sends no x-aibrix-target-pod
  EXPECT_NE(out.find("loadgen: "), std::string::npos) << "no progress line";
}

TEST_F(LoadgenEngineSimTest, TraceReplayAtTimestampsBothApis) {
  const std::string trace = TempFile(
      "trace.jsonl",
      "{\"timestamp_ms\": 0, \"prompt\": \"hello there, engine\", \"max_tokens\": 2}\n"
      "\n"
      "{\"timestamp_ms\": 150, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n"
      "{\"timestamp_ms\": 300, \"prompt\": \"hello there, engine, again\", \"model\": \"sim\"}\n");
  auto [code, out] = RunLoadgen({"--target", Url(), "--model", "sim", "--trace", trace, "--json",
                                 "--max-tokens", "4", "--progress-interval", "0"});
  ASSERT_EQ(code, 0) << out;
  json r = LastJsonLine(out);
  ASSERT_TRUE(r.is_object()) << out;
  EXPECT_EQ(r["requests"]["ok"], 3) << r.dump();
  EXPECT_EQ(r["tokens"]["output"], 2 + 4 + 4);
  EXPECT_EQ(r["workload"]["timing"], "timestamps");
  EXPECT_GE(r["dispatch_s"].get<double>(), 0.3);  // the last line was sent at 300 ms
}

// A Mooncake trace replayed as token ids: the engine (16-token blocks) caches exactly what
// the shared hash ids (64-token blocks here) say, so the hits are known to the token; a bad
// line is skipped and counted.
TEST_F(LoadgenEngineSimTest, MooncakeTraceSharesExactlyTheSharedHashIds) {
  const std::string trace = TempFile(
      "mooncake.jsonl",
      R"({"timestamp": 0, "input_length": 200, "output_length": 3, "hash_ids": [1, 2, 3, 4]})"
      "\n"
      R"({"timestamp": 300, "input_length": 250, "output_length": 9, "hash_ids": [1, 2, 3, 5]})"
      "\n"
      R"({"timestamp": 600, "input_length": 130, "output_length": 3, "hash_ids": [9, 2, 3]})"
      "\n"
      R"({"timestamp": 700, "input_length": 5})"
      "\n"
      R"({"timestamp": 900, "input_length": 256, "output_length": 3, "hash_ids": [1, 2, 3, 5]})"
      "\n");
  auto [code, out] =
      RunLoadgen({"--target", Url(), "--model", "sim", "--trace", trace, "--trace-format",
                  "mooncake", "--trace-block-tokens", "64", "--trace-max-output-tokens", "3",
                  "--json", "--progress-interval", "0", "--engine-metrics", Url() + "/metrics"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("skipped 1 bad lines"), std::string::npos) << out;
  json r = LastJsonLine(out);
  ASSERT_TRUE(r.is_object()) << out;
  SCOPED_TRACE(r.dump(2));
  EXPECT_EQ(r["requests"]["ok"], 4);
  EXPECT_EQ(r["workload"]["bad_lines"], 1);
  EXPECT_EQ(r["workload"]["format"], "mooncake");
  EXPECT_EQ(r["tokens"]["output"], 4 * 3);  // capped
  EXPECT_EQ(r["tokens"]["prompt"], 200 + 250 + 130 + 256);
  // Line 2 hits line 1's 3 shared blocks (192 tokens); line 3 starts with another block and
  // hits nothing; line 5 hits line 2's full 16-token blocks: 15 (240 tokens; the 16th holds
  // line 2's generated tokens where line 5 continues block 5).
  EXPECT_EQ(r["tokens"]["cached"], 192 + 240);
  EXPECT_EQ(r["engine_prefix_cache"]["hits"], 192 + 240);
}

TEST_F(LoadgenEngineSimTest, BadInputIsAClearError) {
  {  // unreachable target
    const testing::RefusedPort dead;
    auto [code, out] = RunLoadgen({"--target", fmt::format("http://127.0.0.1:{}", dead.port()),
                                   "--model", "sim", "--rate", "10", "--num-requests", "1"});
    EXPECT_EQ(code, 2) << out;
    EXPECT_NE(out.find("unreachable"), std::string::npos) << out;
  }
  {  // a bad trace line names the file and the line
    const std::string trace =
        TempFile("bad.jsonl", "{\"prompt\": \"ok\"}\n{\"prompt\": \"ok\", \"max_tokens\": -3}\n");
    auto [code, out] = RunLoadgen({"--target", Url(), "--trace", trace, "--rate", "10"});
    EXPECT_EQ(code, 2) << out;
    EXPECT_NE(out.find("line 2"), std::string::npos) << out;
    EXPECT_NE(out.find("max_tokens"), std::string::npos) << out;
  }
  {  // --records where no file can be written: refused before any request is sent
    auto [code, out] = RunLoadgen({"--target", Url(), "--rate", "10", "--num-requests", "1",
                                   "--records", "/nonexistent-dir/records.jsonl"});
    EXPECT_EQ(code, 2) << out;
    EXPECT_NE(out.find("--records: cannot write"), std::string::npos) << out;
    EXPECT_EQ(out.find("requests"), std::string::npos) << "no run: " << out;
  }
  {  // untimed trace without --rate
    const std::string trace = TempFile("untimed.jsonl", "{\"prompt\": \"ok\"}\n");
    auto [code, out] = RunLoadgen({"--target", Url(), "--trace", trace});
    EXPECT_EQ(code, 2) << out;
    EXPECT_NE(out.find("--rate"), std::string::npos) << out;
  }
  {  // engine metrics without the counters
    auto [code, out] = RunLoadgen({"--target", Url(), "--rate", "10", "--num-requests", "1",
                                   "--engine-metrics", Url() + "/health"});
    EXPECT_EQ(code, 2) << out;
    EXPECT_NE(out.find("prefix_cache"), std::string::npos) << out;
  }
  {  // an unknown model: every request fails with the engine's 404, exit 1
    auto [code, out] = RunLoadgen({"--target", Url(), "--model", "nope", "--rate", "50",
                                   "--num-requests", "3", "--json", "--progress-interval", "0"});
    EXPECT_EQ(code, 1) << out;
    json r = LastJsonLine(out);
    ASSERT_TRUE(r.is_object()) << out;
    EXPECT_EQ(r["errors"], json({{"http_404", 3}}));
  }
}

}  // namespace
}  // namespace aibrix::loadgen
