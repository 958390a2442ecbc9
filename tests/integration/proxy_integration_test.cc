// The whole path on loopback: aibrix-cache in front of real engine-sim processes that
// publish KV events. Routing, the OpenAI proxy (buffered and streaming), request
// accounting, retry on a dead pod and upstream timeouts.
#include <signal.h>

#include <atomic>
#include <thread>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/util/metrics_text.h"
#include "tests/util/poll.h"
#include "tests/util/refused_port.h"
#include "tests/util/subprocess.h"
#include "tests/util/temp_dir.h"

namespace aibrix {
namespace {

using testing::BinaryPath;
using ::testing::HasSubstr;
using testing::LineFields;
using testing::Subprocess;

using aibrix::testing::Eventually;

struct Engine {
  std::unique_ptr<Subprocess> process;
  int port = 0;
  int kv_port = 0;
  int replay_port = 0;
};

class ProxyTest : public ::testing::Test {
 protected:
  // Starts an engine-sim on port 0 with its KV event sockets on any free port; the ports it
  // got come from the line it prints once bound.
  Engine StartEngine(double time_scale = 1000) {
    Engine engine;
    auto process = Subprocess::Start(
        {BinaryPath("engine-sim"), "--port", "0", "--model", "llama", "--time-scale",
         fmt::format("{}", time_scale), "--kv-events-endpoint", "tcp://127.0.0.1:*",
         "--kv-events-replay-endpoint", "tcp://127.0.0.1:*", "--http-threads", "8"});
    EXPECT_TRUE(process.ok());
    engine.process = std::move(*process);
    auto line =
        engine.process->WaitForLine("(engine-sim listening on .*)", std::chrono::seconds(20));
    EXPECT_TRUE(line.ok()) << line.status();
    if (!line.ok()) return engine;
    const auto fields = LineFields(*line);
    const auto port = [&](const std::string& key) {
      EXPECT_TRUE(fields.contains(key)) << key << " missing from: " << *line;
      return fields.contains(key) ? std::stoi(fields.at(key)) : 0;
    };
    engine.port = port("port");
    engine.kv_port = port("kv_events_port");
    engine.replay_port = port("replay_port");
    return engine;
  }

  void StartService(const std::vector<std::string>& endpoints, std::vector<std::string> flags) {
    std::string yaml = "models:\n  - name: llama\n    endpoints:\n";
    for (const std::string& endpoint : endpoints) yaml += "      - " + endpoint + "\n";
    const std::string config = temp_dir_.Write("config.yaml", yaml);
    std::vector<std::string> argv = {BinaryPath("aibrix-cache"),
                                     "--http-addr",
                                     "127.0.0.1:0",
                                     "--extproc-addr",
                                     "",
                                     "--static-config",
                                     config,
                                     "--routing-seed",
                                     "7"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    auto process = Subprocess::Start(argv);
    ASSERT_TRUE(process.ok());
    service_ = std::move(*process);
    auto port = service_->WaitForListeningPort(std::chrono::seconds(20));
    ASSERT_TRUE(port.ok()) << port.status();
    client_ = std::make_unique<httplib::Client>("127.0.0.1", *port);
    client_->set_read_timeout(std::chrono::seconds(30));
    ASSERT_TRUE(service_->WaitForLine("ready:", std::chrono::seconds(20)).ok());
  }

  static std::string KvEndpoint(const Engine& e) {
    return fmt::format(
        "{{address: \"127.0.0.1:{}\", kv_events: true, kv_events_port: {}, replay_port: {}}}",
        e.port, e.kv_port, e.replay_port);
  }

  int TotalRunning() {
    auto res = client_->Get("/cache/pods");
    int running = 0;
    const nlohmann::json body = nlohmann::json::parse(res->body);
    for (const auto& pod : body["pods"]) running += pod["running_requests"].get<int>();
    return running;
  }

  testing::TempDir temp_dir_{"proxy"};
  std::unique_ptr<Subprocess> service_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(ProxyTest, PrefixCacheKvFollowsTheEngineThatCachedThePrompt) {
  Engine a = StartEngine();
  Engine b = StartEngine();
  StartService({KvEndpoint(a), KvEndpoint(b)},
               {"--kv-event-sync", "--routing-algorithm", "prefix-cache-kv"});
  ASSERT_TRUE(Eventually(
      [&] {
        auto res = client_->Get("/cache/pods");
        int subscribed = 0;
        const nlohmann::json body = nlohmann::json::parse(res->body);
        for (const auto& pod : body["pods"]) subscribed += pod["kv_events_subscribed"] == true;
        return subscribed == 2;
      },
      std::chrono::seconds(10)));

  const std::string prompt(400, 'x');
  const nlohmann::json request = {{"model", "llama"}, {"prompt", prompt}, {"max_tokens", 4}};
  auto first = client_->Post("/v1/completions", request.dump(), "application/json");
  ASSERT_TRUE(first);
  ASSERT_EQ(first->status, 200) << first->body;
  const std::string owner = first->get_header_value("x-aibrix-target-pod");
  ASSERT_FALSE(owner.empty());
  EXPECT_EQ(nlohmann::json::parse(first->body)["usage"]["completion_tokens"], 4);
  // Once the engine's BlockStored events arrive, the same prefix goes to the same pod.
  ASSERT_TRUE(Eventually(
      [&] {
        auto match = client_->Post("/cache/match",
                                   nlohmann::json{{"model", "llama"}, {"prompt", prompt}}.dump(),
                                   "application/json");
        auto pods = nlohmann::json::parse(match->body)["pods"];
        return !pods.empty() && pods[0]["pod"] == owner && pods[0]["matched_blocks"] == 25;
      },
      std::chrono::seconds(10)))
      << client_
             ->Post("/cache/match", nlohmann::json{{"model", "llama"}, {"prompt", prompt}}.dump(),
                    "application/json")
             ->body
      << " owner " << owner;
  for (int i = 0; i < 5; ++i) {
    const nlohmann::json longer = {
        {"model", "llama"}, {"prompt", prompt + std::to_string(i)}, {"max_tokens", 2}};
    auto res = client_->Post("/v1/completions", longer.dump(), "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->get_header_value("x-aibrix-target-pod"), owner);
    EXPECT_GT(nlohmann::json::parse(res->body)["usage"]["prompt_tokens_details"]["cached_tokens"],
              0);
  }
  // The request settles as its response ends, which may be just after the client read it.
  EXPECT_TRUE(Eventually([&] { return TotalRunning() == 0; }, std::chrono::seconds(5)));
}

TEST_F(ProxyTest, StreamsPassThroughAndSettleOnce) {
  Engine a = StartEngine();
  StartService({fmt::format("\"127.0.0.1:{}\"", a.port)}, {"--routing-algorithm", "least-request"});
  const nlohmann::json request = {{"model", "llama"},
                                  {"messages", {{{"role", "user"}, {"content", "hi"}}}},
                                  {"stream", true},
                                  {"max_tokens", 5}};
  std::string body;
  int chunks = 0;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.body = request.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    body.append(data, size);
    ++chunks;
    return true;
  };
  httplib::Response res;
  httplib::Error error;
  ASSERT_TRUE(client_->send(req, res, error));
  EXPECT_EQ(res.status, 200);
  EXPECT_THAT(res.get_header_value("Content-Type"), HasSubstr("text/event-stream"));
  EXPECT_FALSE(res.get_header_value("x-aibrix-target-pod").empty());
  EXPECT_THAT(body, HasSubstr("data: [DONE]"));
  EXPECT_GE(chunks, 1);
  EXPECT_TRUE(Eventually([&] { return TotalRunning() == 0; }, std::chrono::seconds(5)));

  // A client that goes away mid-stream still settles the request.
  Engine slow = StartEngine(/*time_scale=*/1);
  (void)slow;
  httplib::Request abort_req = req;
  const nlohmann::json long_request = {
      {"model", "llama"}, {"prompt", "hello"}, {"stream", true}, {"max_tokens", 200}};
  abort_req.path = "/v1/completions";
  abort_req.body = long_request.dump();
  int received = 0;
  abort_req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
    return ++received < 2;
  };
  httplib::Response aborted;
  client_->send(abort_req, aborted, error);
  EXPECT_TRUE(Eventually([&] { return TotalRunning() == 0; }, std::chrono::seconds(10)));
}

TEST_F(ProxyTest, DeadPodIsRetriedOnAnotherAndErrorsAreOpenAiShaped) {
  Engine a = StartEngine();
  const testing::RefusedPort dead;  // a pod whose engine is down: connections are refused
  StartService(
      {fmt::format("\"127.0.0.1:{}\"", dead.port()), fmt::format("\"127.0.0.1:{}\"", a.port)},
      {"--routing-algorithm", "random"});
  for (int i = 0; i < 6; ++i) {
    auto res =
        client_->Post("/v1/completions", R"({"model":"llama","prompt":"abc","max_tokens":1})",
                      "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << res->body;
    EXPECT_THAT(res->get_header_value("x-aibrix-target-pod"), HasSubstr("-1"));
  }
  // Each request settles as its response ends (the client may read it first).
  EXPECT_TRUE(Eventually([&] { return TotalRunning() == 0; }, std::chrono::seconds(5)));
  // The trace counted each client request once (not each attempt) with its usage tokens.
  const nlohmann::json models = nlohmann::json::parse(client_->Get("/cache/models")->body);
  const nlohmann::json& trace = models["models"][0]["trace"];
  EXPECT_EQ(trace["meta_total_reqs"], 6);
  int64_t bucketed = 0;
  for (const auto& [key, value] : trace.items()) {
    if (key.rfind("meta_", 0) != 0) bucketed += value.get<int64_t>();
  }
  EXPECT_EQ(bucketed, 6);
  auto metrics = client_->Get("/metrics");
  EXPECT_THAT(metrics->body, HasSubstr("aibrix_cache_proxy_upstream_errors_total"));

  auto check_error = [&](const std::string& path, const std::string& body, int status,
                         const std::string& needle, httplib::Headers headers = {}) {
    auto res = client_->Post(path, headers, body, "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, status) << body;
    auto json = nlohmann::json::parse(res->body);
    EXPECT_EQ(json["error"]["code"], status);
    EXPECT_THAT(json["error"]["message"].get<std::string>(), HasSubstr(needle));
  };
  check_error("/v1/completions", R"({"model":"nope","prompt":"x"})", 404, "nope");
  check_error("/v1/completions", R"({"model":"llama","prompt":"x"})", 400, "unknown algorithm",
              {{"routing-strategy", "bogus"}});
  check_error("/v1/completions", R"({"model":"llama"})", 400, "prompt");
  check_error("/v1/completions", "{not json", 400, "malformed JSON");
  check_error("/cache/route", R"({"model":"llama","token_ids":[1,"a"]})", 400, "token ids");
  check_error("/cache/done", R"({"request_id":"never"})", 404, "not in flight");

  auto routed =
      client_->Post("/cache/route", R"({"model":"llama","prompt":"hello","request_id":"r1"})",
                    "application/json");
  ASSERT_EQ(routed->status, 200);
  auto decision = nlohmann::json::parse(routed->body);
  EXPECT_EQ(decision["candidates"].size(), 2u);
  EXPECT_EQ(decision["algorithm"], "random");
  EXPECT_EQ(TotalRunning(), 1) << routed->body << client_->Get("/cache/pods")->body;
  EXPECT_EQ(
      client_->Post("/cache/done", R"({"request_id":"r1","output_tokens":3})", "application/json")
          ->status,
      200);
  EXPECT_EQ(TotalRunning(), 0);
}

TEST_F(ProxyTest, NoReadyPodIs503AndSlowUpstreamIs504) {
  Engine slow = StartEngine(/*time_scale=*/0.01);
  StartService({fmt::format("\"127.0.0.1:{}\"", slow.port)},
               {"--routing-algorithm", "random", "--upstream-timeout-ms", "300"});
  auto res =
      client_->Post("/v1/completions", R"({"model":"llama","prompt":"abcdefgh","max_tokens":50})",
                    "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 504) << res->body;
  EXPECT_EQ(nlohmann::json::parse(res->body)["error"]["code"], 504);
  EXPECT_TRUE(Eventually([&] { return TotalRunning() == 0; }, std::chrono::seconds(5)));
}

// --tokenizer remote: prompts are tokenized by the model's engine (a fake vLLM /tokenize
// here, answering 48 ids = 3 blocks for any prompt); when the engine stops answering,
// routing goes on with the local tokenizer.
TEST_F(ProxyTest, RemoteTokenizerUsesTheEnginesIdsAndFallsBackToLocal) {
  httplib::Server fake;
  std::atomic<int> tokenize_calls{0};
  fake.Post("/tokenize", [&](const httplib::Request& req, httplib::Response& res) {
    ++tokenize_calls;
    const nlohmann::json body = nlohmann::json::parse(req.body);
    EXPECT_EQ(body["model"], "llama");
    nlohmann::json tokens = nlohmann::json::array();
    for (int i = 0; i < 48; ++i) tokens.push_back(1000 + i);
    res.set_content(
        nlohmann::json{{"count", 48}, {"max_model_len", 4096}, {"tokens", tokens}}.dump(),
        "application/json");
  });
  const int port = fake.bind_to_any_port("127.0.0.1");
  std::thread serve([&] { fake.listen_after_bind(); });
  ASSERT_TRUE(Eventually([&] { return fake.is_running(); }, std::chrono::seconds(5)));
  StartService({fmt::format("\"127.0.0.1:{}\"", port)},
               {"--routing-algorithm", "prefix-cache", "--tokenizer", "remote"});

  const auto route = [&](const std::string& body) {
    auto res = client_->Post("/cache/route", body, "application/json");
    EXPECT_TRUE(res);
    EXPECT_EQ(res->status, 200) << res->body;
    return nlohmann::json::parse(res->body);
  };
  EXPECT_EQ(route(R"({"model":"llama","prompt":"hi"})")["total_blocks"], 3);
  EXPECT_EQ(
      route(R"({"model":"llama","messages":[{"role":"user","content":"hi"}]})")["total_blocks"], 3);
  EXPECT_EQ(tokenize_calls.load(), 2);
  // Token ids in the body are used as they are.
  EXPECT_EQ(route(R"({"model":"llama","token_ids":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]})")
                ["total_blocks"],
            1);
  EXPECT_EQ(tokenize_calls.load(), 2);
  const auto metric = [&](const std::string& series) {
    return testing::SeriesValue(client_->Get("/metrics")->body, series);
  };
  // Spec §9.4: one client for (engine, llama), two prompts through it.
  EXPECT_EQ(metric("aibrix_tokenizer_pool_active_tokenizers"), 1);
  EXPECT_EQ(metric("aibrix_tokenizer_pool_creation_successes_total"), 1);
  EXPECT_EQ(metric("aibrix_tokenizer_pool_requests_total{model=\"llama\"}"), 2);
  EXPECT_EQ(metric("aibrix_tokenizer_pool_latency_seconds_count{model=\"llama\"}"), 2);
  EXPECT_EQ(metric("aibrix_tokenizer_pool_unhealthy_tokenizers_total"), 0);

  fake.stop();
  serve.join();
  // 40 bytes + BOS under the local byte rules: 2 blocks.
  EXPECT_EQ(route(fmt::format(R"({{"model":"llama","prompt":"{}"}})",
                              std::string(40, 'a')))["total_blocks"],
            2);
  // The engine is gone: its client failed (after its retries), the local tokenizer answered.
  EXPECT_GE(metric("aibrix_tokenizer_pool_unhealthy_tokenizers_total"), 1);
  EXPECT_EQ(metric("aibrix_tokenizer_pool_requests_total{model=\"llama\"}"), 3);
}

}  // namespace
}  // namespace aibrix
