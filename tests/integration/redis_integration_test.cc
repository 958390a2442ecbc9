// The service with a real redis-server (tests/util RedisServer, on a unix socket): two
// in-process replicas share running counts and route on each other's load; GPU profiles are
// loaded, drive the slo routers and the prediction endpoint, and leave when deleted; request
// traces are flushed; Redis killed mid-test degrades each feature (counted) while routing goes
// on, and everything reconnects after a restart. Pods sit on RefusedPorts: routing through
// /cache/route needs no engine.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "aibrix/metrics/exposition.h"
#include "aibrix/redis/connection.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/util/in_process_service.h"
#include "tests/util/poll.h"
#include "tests/util/redis_server.h"
#include "tests/util/refused_port.h"
#include "tests/util/temp_dir.h"

namespace aibrix {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr char kModel[] = "llama";

// A profile where every request costs 1 / (tput × e2e) of a pod.
std::string Profile(const std::string& gpu, double tput, double e2e, double slo_e2e) {
  return fmt::format(R"({{"gpu": "{3}", "created": 1, "indexes": [[1, 1024], [1, 4096]],
    "tputs": [[{0}, {0}], [{0}, {0}]], "e2e": [[{1}, {1}], [{1}, {1}]],
    "tpot": [[0.01, 0.01], [0.01, 0.01]], "slos": {{"e2e": {2}}}}})",
                     tput, e2e, slo_e2e, gpu);
}

// The sum of every series of `family` with all of `labels` (0 when none).
double SumSeries(testing::InProcessService& service, std::string_view family,
                 std::initializer_list<metrics::Label> labels) {
  const std::string text = service.service().RenderMetrics();  // the parse points into it
  auto body = metrics::ParseExposition(text);
  return body.ok() ? metrics::SumSeries(*body, family, labels).value_or(0) : -1;
}

class RedisIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = testing::RedisServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    redis_ = std::move(*server);
    redis::ConnectionOptions options;
    options.address = *redis::ParseAddress(redis_->address());
    direct_ = std::make_unique<redis::Connection>(options);
  }

  // A static config: `llama` on two pods of deployments a100 and l4, `plain` on one pod
  // without a deployment.
  std::string Config() {
    return dir_.Write("config.yaml",
                      fmt::format(R"(models:
  - name: llama
    endpoints:
      - address: "127.0.0.1:{}"
        deployment: a100
      - address: "127.0.0.1:{}"
        deployment: l4
  - name: plain
    endpoints: ["127.0.0.1:{}"]
)",
                                  ports_[0].port(), ports_[1].port(), ports_[2].port()));
  }

  void StartReplica(testing::InProcessService& replica, const std::string& id,
                    const std::function<void(server::ServiceConfig&)>& tune = nullptr) {
    const std::string config = Config();
    replica.Start(kModel, {0, 0, 0}, [&](server::ServiceConfig& c) {
      c.static_config = config;
      c.redis_addr = redis_->address();
      c.gateway_id = id;
      c.replica_sync_ms = 50;
      c.gpu_profile_refresh_ms = 100;
      c.redis_timeout_ms = 500;
      if (tune) tune(c);
    });
  }

  static std::unique_ptr<httplib::Client> Client(testing::InProcessService& replica) {
    auto client = std::make_unique<httplib::Client>("127.0.0.1", replica.service().http_port());
    client->set_read_timeout(10, 0);
    return client;
  }

  static store::PodRef PodOf(testing::InProcessService& replica, const std::string& deployment) {
    for (const store::PodRef& pod : replica.service().store().ListPods()) {
      if (pod->object.deployment == deployment) return pod;
    }
    return nullptr;
  }

  void Set(const std::string& key, const std::string& value) {
    auto reply = direct_->Command({"SET", key, value});
    ASSERT_TRUE(reply.ok() && !reply->is_error());
  }

  testing::TempDir dir_{"redis-it"};
  testing::RefusedPort ports_[3];
  std::unique_ptr<testing::RedisServer> redis_;
  std::unique_ptr<redis::Connection> direct_;
};

TEST_F(RedisIntegrationTest, ReplicasRouteOnEachOthersLoadAndDegradeWhileRedisIsDown) {
  testing::InProcessService a, b;
  ASSERT_NO_FATAL_FAILURE(StartReplica(a, "gw-a"));
  ASSERT_NO_FATAL_FAILURE(StartReplica(b, "gw-b"));
  const store::PodRef a100_on_a = PodOf(a, "a100");
  const store::PodRef a100_on_b = PodOf(b, "a100");
  ASSERT_NE(a100_on_a, nullptr);
  ASSERT_NE(a100_on_b, nullptr);

  // Replica A has 3 requests on the a100 pod (leases of the routing API).
  auto client_a = Client(a);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(a.service().store().AddRequest(fmt::format("a{}", i), a100_on_a->key, kModel).ok());
  }
  ASSERT_TRUE(testing::Eventually([&] { return a100_on_b->state->remote_running() == 3; }));
  EXPECT_EQ(a100_on_a->state->remote_running(), 0);  // its own entry is excluded
  EXPECT_EQ(a100_on_b->state->running(), 0);

  // B's least-request sees A's load: every request goes to the l4 pod; /cache/pods shows it.
  auto client_b = Client(b);
  for (int i = 0; i < 5; ++i) {
    auto res =
        client_b->Post("/cache/route", R"({"model":"llama","prompt":"hi"})", "application/json");
    ASSERT_TRUE(res && res->status == 200);
    const json body = json::parse(res->body);
    EXPECT_EQ(body["pod"], PodOf(b, "l4")->key);
  }
  auto pods = client_b->Get(("/cache/pods/" + a100_on_b->key).c_str());
  ASSERT_TRUE(pods && pods->status == 200);
  EXPECT_EQ(json::parse(pods->body)["remote_running_requests"], 3);
  EXPECT_EQ(json::parse(pods->body)["deployment"], "a100");

  // Redis dies: syncs fail (counted), routing answers, and after the staleness limit B routes
  // on its own counts again.
  redis_->Kill();
  ASSERT_TRUE(testing::Eventually([&] {
    return SumSeries(b, "aibrix_redis_errors_total", {{"feature", "replica"}}) >= 3;
  }));
  ASSERT_TRUE(testing::Eventually([&] { return a100_on_b->state->remote_running() == 0; }));
  auto res =
      client_b->Post("/cache/route", R"({"model":"llama","prompt":"hi"})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(SumSeries(b, "aibrix_redis_connected", {{"feature", "replica"}}), 0);

  // Back: both replicas reconnect by themselves and B sees A's load again.
  ASSERT_TRUE(redis_->Restart().ok());
  ASSERT_TRUE(testing::Eventually([&] { return a100_on_b->state->remote_running() == 3; },
                                  std::chrono::seconds(20)));
  EXPECT_EQ(SumSeries(b, "aibrix_redis_connects_total", {{"feature", "replica"}}), 2);
  EXPECT_EQ(SumSeries(b, "aibrix_redis_connected", {{"feature", "replica"}}), 1);
  EXPECT_EQ(SumSeries(b, "aibrix_redis_replica_gateways", {}), 1);
}

TEST_F(RedisIntegrationTest, ProfilesDriveSloRoutingAndThePredictionEndpoint) {
  Set("aibrix:profile_llama_a100", Profile("a100", 10, 0.5, 1.0));  // load 0.2, meets the SLO
  Set("aibrix:profile_llama_l4", Profile("l4", 4, 1.0, 0.8));       // load 0.25, misses it
  Set("aibrix:profile_llama_garbage", "{not json");
  testing::InProcessService a;
  ASSERT_NO_FATAL_FAILURE(StartReplica(a, "gw-a"));
  ASSERT_TRUE(testing::Eventually([&] { return a.service().profiles().size() == 2; }));
  EXPECT_GE(
      SumSeries(a, "aibrix_redis_errors_total", {{"feature", "profile"}, {"reason", "garbage"}}),
      1);
  auto client = Client(a);

  auto prediction = client->Get("/cache/models/llama/prediction?input_tokens=100");
  ASSERT_TRUE(prediction);
  ASSERT_EQ(prediction->status, 200) << prediction->body;
  json p = json::parse(prediction->body);
  EXPECT_EQ(p["model"], "llama");
  EXPECT_EQ(p["input_tokens"], 100);
  EXPECT_EQ(p["predicted_output_tokens"], 1);  // no history yet: the cold start
  EXPECT_EQ(p["prediction_samples"], 0);
  EXPECT_EQ(p["deployment"], "a100");  // the lower expected E2E latency
  EXPECT_EQ(p["e2e_seconds"], 0.5);
  EXPECT_EQ(p["throughput_rps"], 10);
  EXPECT_EQ(p["tpot_seconds"], 0.01);
  EXPECT_TRUE(p["ttft_seconds"].is_null());        // the profile has no TTFT table
  EXPECT_EQ(p["signature"], json::array({0, 1}));  // 1 output token; 100 is nearer 4096 in log2
  ASSERT_EQ(p["profiles"].size(), 2u);

  // The predictor learns from finished requests (routing API: route, then done with tokens).
  for (int i = 0; i < 10; ++i) {
    const std::string id = fmt::format("learn-{}", i);
    ASSERT_EQ(client
                  ->Post("/cache/route",
                         fmt::format(R"({{"model":"llama","prompt":"x","request_id":"{}"}})", id),
                         "application/json")
                  ->status,
              200);
    ASSERT_EQ(client
                  ->Post("/cache/done",
                         fmt::format(
                             R"({{"request_id":"{}","input_tokens":100,"output_tokens":512}})", id),
                         "application/json")
                  ->status,
              200);
  }
  p = json::parse(client->Get("/cache/models/llama/prediction?input_tokens=100")->body);
  EXPECT_EQ(p["predicted_output_tokens"], 512);
  EXPECT_EQ(p["prediction_samples"], 10);

  // Bad input and unknown models.
  EXPECT_EQ(client->Get("/cache/models/llama/prediction")->status, 400);
  EXPECT_EQ(client->Get("/cache/models/llama/prediction?input_tokens=abc")->status, 400);
  EXPECT_EQ(client->Get("/cache/models/llama/prediction?input_tokens=-1")->status, 400);
  EXPECT_EQ(client->Get("/cache/models/llama/prediction?input_tokens=99999999999")->status, 400);
  EXPECT_EQ(client->Get("/cache/models/nope/prediction?input_tokens=1")->status, 404);
  // A model without profiles: the prediction, and null expectations.
  p = json::parse(client->Get("/cache/models/plain/prediction?input_tokens=7")->body);
  EXPECT_EQ(p["predicted_output_tokens"], 1);
  EXPECT_TRUE(p["deployment"].is_null());
  EXPECT_TRUE(p["e2e_seconds"].is_null());
  EXPECT_TRUE(p["throughput_rps"].is_null());
  EXPECT_TRUE(p["profiles"].empty());

  // slo: the a100 pod (its deployment meets the SLO); the lease carries its load until done.
  auto routed = client->Post("/cache/route",
                             R"({"model":"llama","prompt":"x","request_id":"slo-1",
                                 "algorithm":"slo"})",
                             "application/json");
  ASSERT_TRUE(routed);
  ASSERT_EQ(routed->status, 200) << routed->body;
  const store::PodRef a100 = PodOf(a, "a100");
  EXPECT_EQ(json::parse(routed->body)["pod"], a100->key);
  EXPECT_NEAR(a100->state->pending_load(), 1.0 / (10 * 0.5), 1e-9);
  ASSERT_EQ(client->Post("/cache/done", R"({"request_id":"slo-1"})", "application/json")->status,
            200);
  EXPECT_EQ(a100->state->pending_load(), 0);

  // A profile deleted from Redis leaves the cache, and the endpoint says so.
  ASSERT_TRUE(direct_->Command({"DEL", "aibrix:profile_llama_a100"}).ok());
  ASSERT_TRUE(testing::Eventually([&] { return a.service().profiles().size() == 1; }));
  p = json::parse(client->Get("/cache/models/llama/prediction?input_tokens=100")->body);
  EXPECT_EQ(p["deployment"], "l4");
  EXPECT_EQ(p["profiles"].size(), 1u);
}

TEST_F(RedisIntegrationTest, RequestTracesAreFlushedToRedis) {
  testing::InProcessService a;
  ASSERT_NO_FATAL_FAILURE(StartReplica(a, "gw-a", [](server::ServiceConfig& c) {
    c.gpu_optimizer_tracing = true;
    c.trace_period_s = 1;
  }));
  auto client = Client(a);
  std::vector<std::string> keys;
  int next = 0;
  ASSERT_TRUE(testing::Eventually(
      [&] {
        const std::string id = fmt::format("t{}", next++);
        client->Post("/cache/route",
                     fmt::format(R"({{"model":"llama","prompt":"x","request_id":"{}"}})", id),
                     "application/json");
        client->Post(
            "/cache/done",
            fmt::format(R"({{"request_id":"{}","input_tokens":20,"output_tokens":1}})", id),
            "application/json");
        auto found = direct_->Scan("aibrix:llama_request_trace_*", 100, 100);
        if (found.ok()) keys = *found;
        return !keys.empty();
      },
      std::chrono::seconds(20), std::chrono::milliseconds(50)));
  auto value = direct_->Command({"GET", keys[0]});
  ASSERT_TRUE(value.ok() && value->is_string());
  const json trace = json::parse(value->str);
  EXPECT_GE(trace["43:0"], 1);  // 20 input tokens: bucket 43 (the reference wrote 42)
  EXPECT_EQ(trace["meta_v"], 4);
  EXPECT_EQ(trace["meta_interval_sec"], 1);
  auto ttl = direct_->Command({"TTL", keys[0]});
  ASSERT_TRUE(ttl.ok());
  EXPECT_GT(ttl->integer, 500);
}

}  // namespace
}  // namespace aibrix
