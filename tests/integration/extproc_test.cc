// Envoy external processing, end to end on loopback: the whole service in process, its
// ext_proc gRPC server driven by the fake Envoy (tests/util/fake_envoy) exactly as Envoy's
// ext_proc filter drives it — the AIBrix dialect message by message, the GIE dialect, bad
// input, every way a stream ends (accounting settled each time), health, and 1,024 streams
// open at once.
#include <sys/resource.h>

#include <random>
#include <thread>

#include "aibrix/tracking/request_trace.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/util/fake_envoy.h"
#include "tests/util/grpc_settings.h"
#include "tests/util/h2_envoy.h"
#include "tests/util/in_process_service.h"
#include "tests/util/poll.h"
#include "tests/util/refused_port.h"
#include "tests/util/temp_dir.h"

namespace aibrix {
namespace {

using testing::EnvoyOutcome;
using testing::FakeEnvoy;
using testing::Find;
using ::testing::HasSubstr;
using testing::HeaderList;
using testing::PostRequest;
using testing::UpstreamResponse;

constexpr int kOutputTokens = 1024;

// A prompt of `n` token ids (so the tracker's input count is exact).
std::string TokenBody(int n, bool stream = true) {
  std::string ids;
  for (int i = 0; i < n; ++i) ids += (i ? "," : "") + std::to_string(1000 + i);
  return fmt::format(R"({{"model":"llama","prompt":[{}],"stream":{}}})", ids, stream);
}

// An OpenAI SSE completion stream whose usage reports kOutputTokens.
std::string SseStream() {
  std::string text;
  for (int i = 0; i < 3; ++i) {
    text += fmt::format(
        "data: {{\"id\":\"c\",\"object\":\"text_completion\",\"model\":\"llama\","
        "\"choices\":[{{\"index\":0,\"text\":\"tok{}\"}}]}}\n\n",
        i);
  }
  text += fmt::format(
      "data: {{\"id\":\"c\",\"choices\":[],\"usage\":{{\"prompt_tokens\":8,"
      "\"completion_tokens\":{},\"total_tokens\":{}}}}}\r\n\r\ndata: [DONE]\n\n",
      kOutputTokens, kOutputTokens + 8);
  return text;
}

// Every header value the processor wrote is in raw_value only.
void ExpectRawValuesOnly(const EnvoyOutcome& out) {
  auto check = [](const envoy::service::ext_proc::v3::HeaderMutation& m) {
    for (const auto& option : m.set_headers()) {
      EXPECT_TRUE(option.header().value().empty()) << option.header().key();
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
      EXPECT_FALSE(option.has_append()) << option.header().key();  // unset: overwrite
#pragma GCC diagnostic pop
    }
  };
  for (const auto& answer : out.answers) {
    check(answer.request_headers().response().header_mutation());
    check(answer.request_body().response().header_mutation());
    check(answer.response_headers().response().header_mutation());
    check(answer.immediate_response().headers());
  }
}

class ExtProcTest : public ::testing::Test {
 protected:
  void Start(const std::function<void(server::ServiceConfig&)>& tune = nullptr) {
    ASSERT_NO_FATAL_FAILURE(
        service_.Start("llama", {pod_a_.port(), pod_b_.port()}, [&](server::ServiceConfig& c) {
          c.extproc_addr = "127.0.0.1:0";
          if (tune) tune(c);
        }));
    ASSERT_GT(service_.service().extproc_port(), 0);
    envoy_ =
        std::make_unique<FakeEnvoy>(fmt::format("127.0.0.1:{}", service_.service().extproc_port()));
  }
  // The upstream: answers an SSE stream cut at `cuts` random places, and records the route.
  testing::Upstream Sse(int cuts, int status = 200) {
    return
        [this, cuts, status](const testing::Route& route, const HeaderList&, const std::string&) {
          routes_.push_back(route);
          UpstreamResponse response;
          response.status = status;
          response.headers = {{"content-type", "text/event-stream"}};
          response.chunks = testing::SplitAtRandom(SseStream(), cuts, rng_);
          return response;
        };
  }
  std::string PodAddress(const testing::RefusedPort& pod) {
    return fmt::format("127.0.0.1:{}", pod.port());
  }
  // The trace bucket key of a finished request with these counts.
  static std::string Bucket(int input, int output) {
    return fmt::format("{}:{}", tracking::RequestTrace::BucketIndex(input),
                       tracking::RequestTrace::BucketIndex(output));
  }
  int64_t TraceCount(const std::string& key) {
    nlohmann::json trace = service_.service().tracker().TraceJson("llama");
    return trace.is_object() && trace.contains(key) ? trace[key].get<int64_t>() : 0;
  }
  void ExpectNothingInFlight() {
    EXPECT_TRUE(testing::Eventually([&] {
      return service_.service().store().InFlightRequests() == 0 && service_.TotalRunning() == 0;
    }));
    const auto pending = service_.service().tracker().TraceJson("llama");
    if (pending.is_object()) {
      EXPECT_EQ(pending["meta_pending_reqs"], 0);
    }
  }

  testing::RefusedPort pod_a_;
  testing::RefusedPort pod_b_;
  testing::InProcessService service_;
  std::unique_ptr<FakeEnvoy> envoy_;
  std::vector<testing::Route> routes_;
  std::mt19937 rng_{20260806};
};

TEST_F(ExtProcTest, AibrixDialectRoutesToTargetPodAndSettlesWithUsage) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const auto out = envoy_->Exchange(
      PostRequest("/v1/completions", TokenBody(40), {{"routing-strategy", "least-request"}}),
      Sse(7));
  ASSERT_EQ(out.kind, EnvoyOutcome::Kind::kProxied) << out.details;
  EXPECT_TRUE(out.processor_status.ok()) << out.processor_status.error_message();
  EXPECT_TRUE(out.clear_route_cache);
  ExpectRawValuesOnly(out);
  // Headers reply: a mutation plus clear_route_cache; body reply: the decision.
  ASSERT_GE(out.answers.size(), 2u);
  EXPECT_TRUE(out.answers[0].request_headers().response().clear_route_cache());
  EXPECT_GT(out.answers[0].request_headers().response().header_mutation().set_headers_size(), 0);
  EXPECT_THAT(out.route.target_pod, ::testing::AnyOf(PodAddress(pod_a_), PodAddress(pod_b_)));
  EXPECT_EQ(Find(out.upstream_headers, "routing-strategy"), "least-request");
  EXPECT_FALSE(Find(out.upstream_headers, "x-request-id").empty());
  EXPECT_EQ(Find(out.response_headers, "target-pod-ip"), out.route.target_pod);
  EXPECT_EQ(out.body, SseStream());  // passed through untouched
  EXPECT_EQ(TraceCount(Bucket(40, kOutputTokens)), 1);
  service_.ExpectSettled(1, std::chrono::seconds(10));
}

TEST_F(ExtProcTest, UsageIsReadWhateverTheChunking) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const int kRequests = 40;
  for (int i = 0; i < kRequests; ++i) {
    // From one byte per chunk (i == 0) to a few large chunks; the last chunk or an empty
    // end-of-stream message ends the body.
    const int cuts = i == 0 ? 10000 : 1 + i * 7;
    const auto out = envoy_->Exchange(
        PostRequest("/v1/completions", TokenBody(40), {{"routing-strategy", "random"}}), Sse(cuts),
        testing::CloseMode::kGraceful, /*response_eos_empty=*/i % 2 == 1);
    ASSERT_EQ(out.kind, EnvoyOutcome::Kind::kProxied) << out.details;
    ASSERT_EQ(out.body, SseStream());
  }
  EXPECT_EQ(TraceCount(Bucket(40, kOutputTokens)), kRequests);
  service_.ExpectSettled(kRequests, std::chrono::seconds(10));
}

TEST_F(ExtProcTest, WithoutAStrategyEnvoyRoutesByModelAndClientTargetPodIsRemoved) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const auto out = envoy_->Exchange(
      PostRequest("/v1/chat/completions",
                  R"({"model":"llama","messages":[{"role":"user","content":"hi"}]})",
                  {{"target-pod", "10.1.2.3:22"}}),
      Sse(3));
  ASSERT_EQ(out.kind, EnvoyOutcome::Kind::kProxied) << out.details;
  EXPECT_EQ(out.route.model, "llama");
  EXPECT_EQ(Find(out.upstream_headers, "target-pod"), "");  // the client's was removed
  EXPECT_EQ(Find(out.upstream_headers, "routing-strategy"), "");
  service_.ExpectSettled(1, std::chrono::seconds(10));
}

TEST_F(ExtProcTest, ConfiguredDefaultStrategyRoutesEveryRequest) {
  ASSERT_NO_FATAL_FAILURE(
      Start([](server::ServiceConfig& c) { c.extproc_default_strategy = "random"; }));
  const auto out = envoy_->Exchange(PostRequest("/v1/completions", TokenBody(10)), Sse(2));
  ASSERT_EQ(out.kind, EnvoyOutcome::Kind::kProxied) << out.details;
  EXPECT_EQ(Find(out.upstream_headers, "routing-strategy"), "random");
  EXPECT_FALSE(out.route.target_pod.empty());
  service_.ExpectSettled(1, std::chrono::seconds(10));
}

TEST_F(ExtProcTest, IPv6PodAddressIsBracketed) {
  testing::TempDir dir("extproc-v6");
  ASSERT_NO_FATAL_FAILURE(Start([&](server::ServiceConfig& c) {
    c.static_config = dir.Write("v6.yaml",
                                "models:\n  - name: llama\n    endpoints:\n"
                                "      - \"[::1]:8123\"\n      - \"[::1]:8124\"\n");
  }));
  const auto out = envoy_->Exchange(
      PostRequest("/v1/completions", TokenBody(10), {{"routing-strategy", "random"}}), Sse(2));
  ASSERT_EQ(out.kind, EnvoyOutcome::Kind::kProxied) << out.details;
  EXPECT_THAT(out.route.target_pod, ::testing::AnyOf("[::1]:8123", "[::1]:8124"));
}

TEST_F(ExtProcTest, ErrorsAreImmediateResponsesWithOpenAIBodies) {
  ASSERT_NO_FATAL_FAILURE(Start());
  struct Case {
    std::string path;
    std::string body;
    HeaderList headers;
    int status;
    std::string error_header;
  };
  const std::vector<Case> cases = {
      {"/v1/completions",
       "{not json",
       {{"routing-strategy", "random"}},
       400,
       "x-error-request-body-processing"},
      {"/v1/completions",
       R"({"prompt":"x"})",
       {{"routing-strategy", "random"}},
       400,
       "x-error-request-body-processing"},
      {"/v1/completions",
       TokenBody(4),
       {{"routing-strategy", "no-such-algorithm"}},
       400,
       "x-error-routing"},
      {"/v1/completions",
       R"({"model":"other","prompt":"x"})",
       {{"routing-strategy", "random"}},
       400,
       "x-error-no-model-backends"},
      {"/v1/completions",
       R"({"model":"other","prompt":"x"})",
       {},
       400,
       "x-error-no-model-backends"},
      {"/v1/audio/speech", TokenBody(4), {}, 501, "x-error-request-body-processing"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body + " " + c.path);
    const auto out = envoy_->Exchange(PostRequest(c.path, c.body, c.headers), Sse(1));
    ASSERT_EQ(out.kind, EnvoyOutcome::Kind::kLocalReply);
    EXPECT_EQ(out.status, c.status);
    EXPECT_FALSE(Find(out.response_headers, c.error_header).empty());
    EXPECT_EQ(Find(out.response_headers, "content-type"), "application/json");
    const auto body = nlohmann::json::parse(out.body);
    EXPECT_TRUE(body["error"]["message"].is_string());
    EXPECT_TRUE(body["error"]["type"].is_string());
    ExpectRawValuesOnly(out);
    EXPECT_TRUE(out.processor_status.ok());
  }
  EXPECT_TRUE(routes_.empty());
  ExpectNothingInFlight();
}

TEST_F(ExtProcTest, QueryStringDoesNotChangeThePathMatch) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const auto out = envoy_->Exchange(
      PostRequest("/v1/completions?api-version=1", TokenBody(4), {{"routing-strategy", "random"}}),
      Sse(2));
  EXPECT_EQ(out.kind, EnvoyOutcome::Kind::kProxied) << out.details;
}

TEST_F(ExtProcTest, BearerTokenIsRequiredWhenConfigured) {
  ASSERT_NO_FATAL_FAILURE(
      Start([](server::ServiceConfig& c) { c.auth_bearer_token = "s3cret-token"; }));
  for (const std::string auth : {"", "Bearer wrong", "Bearer s3cret-toke", "s3cret-token"}) {
    const auto out =
        envoy_->Exchange(PostRequest("/v1/completions", TokenBody(4),
                                     {{"routing-strategy", "random"}, {"authorization", auth}}),
                         Sse(2));
    ASSERT_EQ(out.kind, EnvoyOutcome::Kind::kLocalReply) << auth;
    EXPECT_EQ(out.status, 401);
  }
  const auto out = envoy_->Exchange(
      PostRequest("/v1/completions", TokenBody(4),
                  {{"routing-strategy", "random"}, {"authorization", "Bearer s3cret-token"}}),
      Sse(2));
  EXPECT_EQ(out.kind, EnvoyOutcome::Kind::kProxied) << out.details;
  service_.ExpectSettled(1, std::chrono::seconds(10));
}

TEST_F(ExtProcTest, UpstreamErrorsPassThroughAndSettleWithoutUsage) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const auto out = envoy_->Exchange(
      PostRequest("/v1/completions", TokenBody(40), {{"routing-strategy", "random"}}),
      Sse(4, /*status=*/500));
  ASSERT_EQ(out.kind, EnvoyOutcome::Kind::kProxied);
  EXPECT_EQ(out.status, 500);
  EXPECT_EQ(out.body, SseStream());
  EXPECT_EQ(TraceCount(Bucket(40, kOutputTokens)), 0);
  service_.ExpectSettled(1, std::chrono::seconds(10));
}

TEST_F(ExtProcTest, GieDialectSetsDestinationHeaderAndMetadataWithinTheSubset) {
  ASSERT_NO_FATAL_FAILURE(Start([](server::ServiceConfig& c) { c.extproc_dialect = "gie"; }));
  // No subset: any pod; header and metadata agree.
  auto out = envoy_->Exchange(PostRequest("/v1/completions", TokenBody(8)), Sse(3));
  ASSERT_EQ(out.kind, EnvoyOutcome::Kind::kProxied) << out.details;
  EXPECT_THAT(out.route.endpoint, ::testing::AnyOf(PodAddress(pod_a_), PodAddress(pod_b_)));
  EXPECT_EQ(out.route.endpoint, out.route.metadata_endpoint);
  EXPECT_EQ(Find(out.upstream_headers, "target-pod"), "");
  // A subset hint naming pod b only: always pod b.
  auto with_subset = [&](const std::vector<std::string>& endpoints) {
    auto request = PostRequest("/v1/completions", TokenBody(8));
    auto& hint = (*request.metadata.mutable_metadata_context()
                       ->mutable_filter_metadata())["envoy.lb.subset_hint"];
    auto* list =
        (*hint.mutable_fields())["x-gateway-destination-endpoint-subset"].mutable_list_value();
    for (const auto& e : endpoints) list->add_values()->set_string_value(e);
    return request;
  };
  for (int i = 0; i < 10; ++i) {
    out = envoy_->Exchange(with_subset({PodAddress(pod_b_), "10.9.9.9:80"}), Sse(2));
    ASSERT_EQ(out.kind, EnvoyOutcome::Kind::kProxied) << out.details;
    EXPECT_EQ(out.route.endpoint, PodAddress(pod_b_));
  }
  // No eligible endpoint in the subset: 503.
  out = envoy_->Exchange(with_subset({"10.9.9.9:80"}), Sse(2));
  ASSERT_EQ(out.kind, EnvoyOutcome::Kind::kLocalReply);
  EXPECT_EQ(out.status, 503);
  service_.ExpectSettled(12, std::chrono::seconds(10));
}

TEST_F(ExtProcTest, HealthFollowsReadiness) {
  ASSERT_NO_FATAL_FAILURE(Start());
  for (const std::string name :
       {"", "gateway-plugin", "readiness", "envoy.service.ext_proc.v3.ExternalProcessor"}) {
    auto serving = envoy_->Check(name);
    ASSERT_TRUE(serving.ok()) << serving.status();
    EXPECT_TRUE(*serving) << name;
  }
  EXPECT_EQ(envoy_->Check("nope").status().code(), absl::StatusCode::kNotFound);
  service_.service().Drain();
  EXPECT_FALSE(*envoy_->Check(""));
  EXPECT_FALSE(*envoy_->Check("gateway-plugin"));
  EXPECT_TRUE(*envoy_->Check("liveness"));
  // Watch is answered at once, UNIMPLEMENTED (probes use Check).
  auto channel = grpc::CreateChannel(fmt::format("127.0.0.1:{}", service_.service().extproc_port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::health::v1::HealthCheckRequest request;
  auto watch = stub->Watch(&context, request);
  grpc::health::v1::HealthCheckResponse response;
  EXPECT_FALSE(watch->Read(&response));
  EXPECT_EQ(watch->Finish().error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

// Many streams at once on one HTTP/2 connection, each step pipelined behind the others (the
// load Envoy's workers put on the processor): every exchange routed, answered in order and
// closed OK; nothing left open or counted.
void ExpectManyStreamsComplete(testing::InProcessService& service) {
  namespace v3 = envoy::service::ext_proc::v3;
  const auto request =
      PostRequest("/v1/completions", TokenBody(64), {{"routing-strategy", "least-request"}});
  std::mt19937 rng(5);
  std::vector<v3::ProcessingRequest> chunks;
  const auto pieces = testing::SplitAtRandom(SseStream(), 3, rng);
  for (size_t i = 0; i < pieces.size(); ++i) {
    chunks.push_back(testing::BodyMessage(false, pieces[i], i + 1 == pieces.size()));
  }
  const std::vector<testing::H2Exchange> exchanges = {testing::H2Exchange::Frame(
      testing::RequestHeadersMessage(request.headers, false),
      testing::BodyMessage(true, request.body, true),
      testing::ResponseHeadersMessage(200, {{"content-type", "text/event-stream"}}, false),
      chunks)};
  auto envoy = testing::H2Envoy::Connect(service.service().extproc_port());
  ASSERT_TRUE(envoy.ok()) << envoy.status();
  const auto result = (*envoy)->Run(exchanges, 16, 400, {});
  EXPECT_EQ(result.completed, 400) << result.first_error;
  EXPECT_EQ(result.failed, 0) << result.first_error;
  service.ExpectSettled(400, std::chrono::seconds(10));
  // A stream is counted when its call is done, after Envoy saw the status.
  EXPECT_TRUE(testing::Eventually([&] {
    return service.Metric("aibrix_cache_extproc_streams_total{end=\"completed\"}") == 400 &&
           service.Metric("aibrix_cache_extproc_streams_open") == 0;
  })) << service.Metric("aibrix_cache_extproc_streams_total{end=\"completed\"}");
}

// User + system CPU time of this process.
std::chrono::microseconds ProcessCpu() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return std::chrono::seconds(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         std::chrono::microseconds(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

// The queues' threads poll for --extproc-spin-us after each event (the default), then sleep:
// a quiet service costs no CPU.
TEST_F(ExtProcTest, ManyStreamsOnOneConnectionAllComplete) {
  ASSERT_NO_FATAL_FAILURE(Start());
  ASSERT_GT(server::ServiceConfig{}.extproc_spin_us, 0);
  ASSERT_NO_FATAL_FAILURE(ExpectManyStreamsComplete(service_));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const auto cpu_before = ProcessCpu();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_LT(ProcessCpu() - cpu_before, std::chrono::milliseconds(100))
      << "a queue's thread kept polling while the service was quiet";
}

// With --extproc-spin-us 0 the queues' threads sleep as soon as they run out of events.
TEST_F(ExtProcTest, ManyStreamsCompleteWithoutSpinning) {
  ASSERT_NO_FATAL_FAILURE(Start([](server::ServiceConfig& c) { c.extproc_spin_us = 0; }));
  ASSERT_NO_FATAL_FAILURE(ExpectManyStreamsComplete(service_));
}

// --- Bad input and early ends: a clear status, the stream closed, nothing left counted. ---

class ExtProcStreamTest : public ExtProcTest {
 protected:
  using Request = envoy::service::ext_proc::v3::ProcessingRequest;
  using Response = envoy::service::ext_proc::v3::ProcessingResponse;

  Request Headers(bool eos = false) {
    return testing::RequestHeadersMessage(
        PostRequest("/v1/completions", "x", {{"routing-strategy", "least-request"}}).headers, eos);
  }
  // Opens a stream and takes it through the routing decision (the pod is counted).
  std::unique_ptr<FakeEnvoy::Stream> Routed() {
    auto stream = envoy_->Open();
    Response answer;
    EXPECT_TRUE(stream->Write(Headers()));
    EXPECT_TRUE(stream->Read(&answer));
    EXPECT_TRUE(stream->Write(testing::BodyMessage(true, TokenBody(16), true)));
    EXPECT_TRUE(stream->Read(&answer));
    EXPECT_TRUE(answer.has_request_body());
    return stream;
  }
};

TEST_F(ExtProcStreamTest, OutOfOrderMessagesCloseWithAClearStatus) {
  ASSERT_NO_FATAL_FAILURE(Start());
  struct Script {
    std::string name;
    std::vector<Request> messages;
    grpc::StatusCode code;
  };
  Request empty;  // no oneof case set (an unknown kind decodes the same way)
  const std::vector<Script> scripts = {
      {"body before headers",
       {testing::BodyMessage(true, TokenBody(4), true)},
       grpc::StatusCode::FAILED_PRECONDITION},
      {"headers twice", {Headers(), Headers()}, grpc::StatusCode::FAILED_PRECONDITION},
      {"unknown kind", {empty}, grpc::StatusCode::INVALID_ARGUMENT},
      {"response body first",
       {testing::BodyMessage(false, "data", false)},
       grpc::StatusCode::FAILED_PRECONDITION},
      {"response headers before the body",
       {Headers(), testing::ResponseHeadersMessage(200, {}, false)},
       grpc::StatusCode::FAILED_PRECONDITION},
  };
  for (const Script& script : scripts) {
    SCOPED_TRACE(script.name);
    auto stream = envoy_->Open();
    for (const Request& m : script.messages) stream->Write(m);
    Response answer;
    while (stream->Read(&answer)) {
      EXPECT_FALSE(answer.has_immediate_response());
    }
    const grpc::Status status = stream->Finish();
    EXPECT_EQ(status.error_code(), script.code) << status.error_message();
    EXPECT_FALSE(status.error_message().empty());
  }
  EXPECT_GE(service_.Metric(R"(aibrix_cache_extproc_protocol_errors_total{kind="out_of_order"})"),
            2);
  ExpectNothingInFlight();
}

TEST_F(ExtProcStreamTest, SecondBodyAfterRoutingClosesAndSettles) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto stream = Routed();
  EXPECT_EQ(service_.TotalRunning(), 1);
  stream->Write(testing::BodyMessage(true, TokenBody(16), true));  // a duplicate
  Response answer;
  EXPECT_FALSE(stream->Read(&answer));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  service_.ExpectSettled(1, std::chrono::seconds(10));
}

// The routed request's prompt counts as prefill queued on its pod until the first response
// body bytes (the engine began answering), not until the response headers.
TEST_F(ExtProcStreamTest, PrefillTokensCountUntilTheFirstResponseBodyBytes) {
  ASSERT_NO_FATAL_FAILURE(Start());
  int64_t (*const total)(const store::Store&) = [](const store::Store& store) {
    int64_t sum = 0;
    for (const store::PodRef& pod : store.ListPods()) sum += pod->state->pending_prefill_tokens();
    return sum;
  };
  const store::Store& store = service_.service().store();
  auto stream = Routed();
  EXPECT_EQ(total(store), 16);  // TokenBody(16): 16 prompt tokens, none cached
  Response answer;
  ASSERT_TRUE(stream->Write(testing::ResponseHeadersMessage(200, {}, false)));
  ASSERT_TRUE(stream->Read(&answer));
  EXPECT_EQ(total(store), 16);
  ASSERT_TRUE(stream->Write(testing::BodyMessage(false, "data: {\"x\":1}\n\n", false)));
  ASSERT_TRUE(stream->Read(&answer));
  EXPECT_EQ(total(store), 0);
  EXPECT_EQ(service_.TotalRunning(), 1);
  ASSERT_TRUE(stream->Write(testing::BodyMessage(false, "data: [DONE]\n\n", true)));
  ASSERT_TRUE(stream->Read(&answer));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  service_.ExpectSettled(1, std::chrono::seconds(10));
  EXPECT_EQ(total(store), 0);
}

TEST_F(ExtProcStreamTest, LargeBodiesAreRefusedClearly) {
  ASSERT_NO_FATAL_FAILURE(Start([](server::ServiceConfig& c) { c.max_body_bytes = 1 << 20; }));
  // Over the body limit but within the gRPC message limit: 413 from the processor.
  {
    auto stream = envoy_->Open();
    Response answer;
    ASSERT_TRUE(stream->Write(Headers()));
    ASSERT_TRUE(stream->Read(&answer));
    stream->Write(testing::BodyMessage(true, std::string(2 << 20, 'x'), true));
    ASSERT_TRUE(stream->Read(&answer));
    ASSERT_TRUE(answer.has_immediate_response());
    EXPECT_EQ(answer.immediate_response().status().code(), 413);
    EXPECT_TRUE(stream->Finish().ok());
  }
  // 10 MB: over the gRPC receive limit; gRPC refuses the message.
  {
    auto stream = envoy_->Open();
    Response answer;
    ASSERT_TRUE(stream->Write(Headers()));
    ASSERT_TRUE(stream->Read(&answer));
    stream->Write(testing::BodyMessage(true, std::string(10'000'000, 'x'), true));
    while (stream->Read(&answer)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  ExpectNothingInFlight();
  EXPECT_TRUE(testing::Eventually([&] { return service_.service().extproc_port() > 0; }));
}

TEST_F(ExtProcStreamTest, EveryEarlyEndSettlesTheRequest) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Response answer;
  // Half-close after routing (Envoy gave up before the upstream answered).
  {
    auto stream = Routed();
    EXPECT_EQ(service_.TotalRunning(), 1);
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
  }
  // Reset mid-response (the client went away).
  {
    auto stream = Routed();
    ASSERT_TRUE(stream->Write(testing::ResponseHeadersMessage(200, {}, false)));
    ASSERT_TRUE(stream->Read(&answer));
    ASSERT_TRUE(stream->Write(testing::BodyMessage(false, "data: {\"x\":1}\n\n", false)));
    ASSERT_TRUE(stream->Read(&answer));
    EXPECT_EQ(service_.TotalRunning(), 1);
    stream->Cancel();
    stream->Finish();
  }
  // Half-close then reset at once (older Envoy), after the routing reply.
  {
    auto stream = Routed();
    stream->WritesDone();
    stream->Cancel();
    stream->Finish();
  }
  // Slow messages and a duplicated end-of-stream chunk after the processor finished.
  {
    auto stream = Routed();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_TRUE(stream->Write(testing::ResponseHeadersMessage(200, {}, false)));
    ASSERT_TRUE(stream->Read(&answer));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    stream->Write(testing::BodyMessage(false, "{\"usage\":{\"completion_tokens\":5}}", true));
    ASSERT_TRUE(stream->Read(&answer));
    EXPECT_TRUE(answer.has_response_body());
    stream->Write(testing::BodyMessage(false, "", true));
    EXPECT_FALSE(stream->Read(&answer));
    EXPECT_TRUE(stream->Finish().ok());
  }
  service_.ExpectSettled(4, std::chrono::seconds(10));
  EXPECT_EQ(service_.service().extproc_port() > 0, true);
  EXPECT_TRUE(testing::Eventually(
      [&] { return service_.Metric("aibrix_cache_extproc_streams_open") == 0; }));
}

TEST_F(ExtProcStreamTest, IdleStreamIsClosedByTheTimeout) {
  ASSERT_NO_FATAL_FAILURE(Start([](server::ServiceConfig& c) { c.extproc_idle_timeout_ms = 100; }));
  auto stream = Routed();  // then nothing: a stream that never ends
  Response answer;
  EXPECT_FALSE(stream->Read(&answer));  // the housekeeping sweep closes it
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  service_.ExpectSettled(1, std::chrono::seconds(10));
}

TEST_F(ExtProcStreamTest, ShutdownCutsOpenStreamsAndSettlesThem) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto stream = Routed();
  EXPECT_EQ(service_.TotalRunning(), 1);
  auto& store = service_.service().store();
  service_.service().Stop();
  Response answer;
  EXPECT_FALSE(stream->Read(&answer));
  EXPECT_FALSE(stream->Finish().ok());
  EXPECT_EQ(store.InFlightRequests(), 0u);
}

TEST_F(ExtProcStreamTest, HoldsMoreThan1024StreamsOpen) {
  ASSERT_NO_FATAL_FAILURE(Start());
  constexpr int kStreams = 1100;
  std::vector<std::unique_ptr<FakeEnvoy::Stream>> streams;
  Response answer;
  for (int i = 0; i < kStreams; ++i) {
    streams.push_back(envoy_->Open(std::chrono::seconds(120)));
    ASSERT_TRUE(streams.back()->Write(Headers())) << i;
    ASSERT_TRUE(streams.back()->Read(&answer)) << i;
    ASSERT_TRUE(answer.has_request_headers()) << i;
  }
  EXPECT_EQ(service_.Metric("aibrix_cache_extproc_streams_open"), kStreams);
  for (auto& stream : streams) {
    ASSERT_TRUE(stream->Write(testing::BodyMessage(true, TokenBody(4), true)));
    ASSERT_TRUE(stream->Read(&answer));
    ASSERT_TRUE(answer.has_request_body());
  }
  EXPECT_EQ(service_.TotalRunning(), kStreams);
  for (auto& stream : streams) {
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
  }
  service_.ExpectSettled(kStreams, std::chrono::seconds(30));
}

}  // namespace
}  // namespace aibrix
