// ext_proc end to end with real engines: two engine-sim processes, the whole service in
// process, and the fake Envoy in front. The fake Envoy sends each request to the pod the
// body reply named (ORIGINAL_DST on target-pod) over HTTP, reads the engine's answer as it
// arrives (its chunks are the reads Envoy would make) and streams it back through the
// processor, which reads the usage and settles the request.
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/util/fake_envoy.h"
#include "tests/util/grpc_settings.h"
#include "tests/util/in_process_service.h"
#include "tests/util/subprocess.h"

namespace aibrix {
namespace {

using testing::EnvoyOutcome;
using testing::FakeEnvoy;
using ::testing::HasSubstr;
using testing::HeaderList;
using testing::Subprocess;

class ExtProcEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 2; ++i) {
      auto process =
          Subprocess::Start({testing::BinaryPath("engine-sim"), "--port", "0", "--model", "llama",
                             "--time-scale", "1000", "--kv-events-endpoint", "tcp://127.0.0.1:*",
                             "--kv-events-replay-endpoint", "tcp://127.0.0.1:*"});
      ASSERT_TRUE(process.ok()) << process.status();
      auto line = (*process)->WaitForLine("(engine-sim listening on .*)", std::chrono::seconds(20));
      ASSERT_TRUE(line.ok()) << line.status();
      ports_.push_back(std::stoi(testing::LineFields(*line).at("port")));
      engines_.push_back(std::move(*process));
    }
    ASSERT_NO_FATAL_FAILURE(service_.Start(
        "llama", ports_, [](server::ServiceConfig& c) { c.extproc_addr = "127.0.0.1:0"; }));
    envoy_ =
        std::make_unique<FakeEnvoy>(fmt::format("127.0.0.1:{}", service_.service().extproc_port()));
  }

  // Envoy's upstream: the ORIGINAL_DST pod, or (routed by model) the model's first endpoint.
  testing::Upstream Forward() {
    return [this](const testing::Route& route, const HeaderList& headers, const std::string& body) {
      targets_.push_back(route.target_pod);
      const std::string target =
          route.target_pod.empty() ? fmt::format("127.0.0.1:{}", ports_[0]) : route.target_pod;
      const size_t colon = target.rfind(':');
      httplib::Client client(target.substr(0, colon), std::stoi(target.substr(colon + 1)));
      client.set_read_timeout(30, 0);
      testing::UpstreamResponse response;
      httplib::Request request;
      request.method = "POST";
      request.path = testing::Find(headers, ":path");
      request.body = body;
      request.set_header("Content-Type", "application/json");
      request.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
        response.chunks.emplace_back(data, size);
        return true;
      };
      httplib::Response res;
      httplib::Error error = httplib::Error::Success;
      EXPECT_TRUE(client.send(request, res, error)) << httplib::to_string(error);
      response.status = res.status;
      for (const auto& [name, value] : res.headers) {
        std::string key = name;
        std::transform(key.begin(), key.end(), key.begin(), ::tolower);
        if (key != "transfer-encoding" && key != "connection")
          response.headers.emplace_back(key, value);
      }
      return response;
    };
  }

  // Output tokens the tracker recorded (a bucket key "<in>:<out>" per finished request).
  int64_t FinishedWithUsage() {
    int64_t count = 0;
    const nlohmann::json trace = service_.service().tracker().TraceJson("llama");
    for (const auto& [key, value] : trace.items()) {
      if (key.find(':') != std::string::npos) count += value.get<int64_t>();
    }
    return count;
  }

  std::vector<std::unique_ptr<Subprocess>> engines_;
  std::vector<int> ports_;
  testing::InProcessService service_;
  std::unique_ptr<FakeEnvoy> envoy_;
  std::vector<std::string> targets_;
};

TEST_F(ExtProcEndToEndTest, StreamingChatThroughTheProcessorSettlesWithTheEngineUsage) {
  const std::string body =
      R"({"model":"llama","stream":true,"stream_options":{"include_usage":true},"max_tokens":12,)"
      R"("messages":[{"role":"user","content":"tell me about prefix caches"}]})";
  for (int i = 0; i < 6; ++i) {
    const auto out = envoy_->Exchange(
        testing::PostRequest("/v1/chat/completions", body, {{"routing-strategy", "least-request"}}),
        Forward());
    ASSERT_EQ(out.kind, EnvoyOutcome::Kind::kProxied) << out.details;
    EXPECT_EQ(out.status, 200);
    EXPECT_THAT(out.body, HasSubstr("\"usage\""));
    EXPECT_THAT(out.body, HasSubstr("data: [DONE]"));
    EXPECT_TRUE(out.processor_status.ok());
  }
  for (const std::string& target : targets_) {
    EXPECT_THAT(target, ::testing::AnyOf(fmt::format("127.0.0.1:{}", ports_[0]),
                                         fmt::format("127.0.0.1:{}", ports_[1])));
  }
  EXPECT_EQ(FinishedWithUsage(), 6);
  service_.ExpectSettled(6, std::chrono::seconds(20));
}

TEST_F(ExtProcEndToEndTest, JsonCompletionAndModelRoute) {
  const std::string body = R"({"model":"llama","prompt":"hello there","max_tokens":5})";
  auto out = envoy_->Exchange(
      testing::PostRequest("/v1/completions", body, {{"routing-strategy", "random"}}), Forward());
  ASSERT_EQ(out.kind, EnvoyOutcome::Kind::kProxied) << out.details;
  EXPECT_EQ(nlohmann::json::parse(out.body)["object"], "text_completion");
  // No strategy: the model route (the fake Envoy's model cluster is the first engine).
  out = envoy_->Exchange(testing::PostRequest("/v1/completions", body), Forward());
  ASSERT_EQ(out.kind, EnvoyOutcome::Kind::kProxied) << out.details;
  EXPECT_EQ(out.route.model, "llama");
  EXPECT_EQ(FinishedWithUsage(), 2);
  service_.ExpectSettled(2, std::chrono::seconds(20));
}

}  // namespace
}  // namespace aibrix
