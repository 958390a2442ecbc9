#include "aibrix/discovery/static_config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aibrix::discovery {
namespace {

using ::testing::HasSubstr;

std::string ErrorOf(std::string_view yaml) {
  auto config = ParseStaticConfig(yaml, "test.yaml");
  EXPECT_FALSE(config.ok()) << yaml;
  return std::string(config.status().message());
}

TEST(StaticConfigTest, NonDisaggregatedEndpointsBecomeReadyPods) {
  auto config = ParseStaticConfig(R"(
models:
  - name: Meta/Llama_3
    engine: vllm
    endpoints: ["10.0.0.1:8000", "10.0.0.2:8001"]
)",
                                  "t");
  ASSERT_TRUE(config.ok()) << config.status();
  auto pods = StaticPods(*config);
  ASSERT_EQ(pods.size(), 2u);
  EXPECT_EQ(pods[0].ns, "standalone");
  EXPECT_EQ(pods[0].name, "meta-llama-3-10-0-0-1-0");
  EXPECT_EQ(pods[1].name, "meta-llama-3-10-0-0-2-1");
  EXPECT_EQ(pods[1].ip, "10.0.0.2");
  EXPECT_EQ(pods[1].labels.at(store::kModelNameLabel), "Meta/Llama_3");
  EXPECT_EQ(pods[1].labels.at(store::kPortLabel), "8001");
  EXPECT_EQ(pods[1].labels.at(store::kEngineLabel), "vllm");
  EXPECT_EQ(pods[1].phase, "Running");
  EXPECT_TRUE(store::IsPodReady(pods[1]));
  EXPECT_EQ(pods[1].containers.at(0).name, "vllm");
  EXPECT_EQ(pods[1].containers.at(0).ports.at(0).port, 8001);
}

TEST(StaticConfigTest, IndexCountsEndpointsAcrossModelsAndDefaultPort) {
  auto config = ParseStaticConfig(R"(
models:
  - name: a
    endpoints: ["h1"]
  - name: b
    endpoints: ["h2:9000"]
)",
                                  "t");
  ASSERT_TRUE(config.ok()) << config.status();
  auto pods = StaticPods(*config);
  EXPECT_EQ(pods[0].name, "a-h1-0");
  EXPECT_EQ(pods[0].labels.at(store::kPortLabel), "8000");
  EXPECT_EQ(pods[1].name, "b-h2-1");
  EXPECT_EQ(pods[0].labels.count(store::kEngineLabel), 0u);
}

TEST(StaticConfigTest, MapEndpointsCarryLocalOptions) {
  auto config = ParseStaticConfig(R"(
models:
  - name: m
    endpoints:
      - address: "127.0.0.1:8001"
        metric_port: 9001
        kv_events: true
        kv_events_port: 5601
        replay_port: 5602
        lora_id: 7
        deployment: m-a100
      - "[::1]:8002"
)",
                                  "t");
  ASSERT_TRUE(config.ok()) << config.status();
  auto pods = StaticPods(*config);
  ASSERT_EQ(pods.size(), 2u);
  EXPECT_EQ(pods[0].labels.at(store::kKvEventsEnabledLabel), "true");
  EXPECT_EQ(pods[0].labels.at(store::kKvEventsPortLabel), "5601");
  EXPECT_EQ(pods[0].labels.at(store::kKvReplayPortLabel), "5602");
  EXPECT_EQ(pods[0].labels.at(store::kLoraIdLabel), "7");
  EXPECT_EQ(pods[0].deployment, "m-a100");
  EXPECT_EQ(pods[1].deployment, "");
  EXPECT_EQ(store::PodMetricPort(pods[0]), 9001);
  EXPECT_EQ(pods[1].ip, "::1");
  EXPECT_EQ(pods[1].name, "m---1-1");
  EXPECT_FALSE(store::PodKvEventsEnabled(pods[1]));
}

TEST(StaticConfigTest, RoleSetsGetRoleLabels) {
  auto config = ParseStaticConfig(R"(
models:
  - name: pd
    rolesets:
      - name: rs1
        prefill: ["10.0.0.1:8000"]
        decode: ["10.0.0.2:8000", "10.0.0.3:8000"]
      - name: rs2
        prefill: ["10.0.1.1:8000"]
)",
                                  "t");
  ASSERT_TRUE(config.ok()) << config.status();
  auto pods = StaticPods(*config);
  ASSERT_EQ(pods.size(), 4u);
  EXPECT_EQ(pods[0].labels.at(store::kRoleNameLabel), "prefill");
  EXPECT_EQ(pods[0].labels.at(store::kRoleSetNameLabel), "rs1");
  EXPECT_EQ(pods[2].labels.at(store::kRoleNameLabel), "decode");
  EXPECT_EQ(pods[3].labels.at(store::kRoleSetNameLabel), "rs2");
}

TEST(StaticConfigTest, BadFilesNameFieldAndLine) {
  EXPECT_THAT(ErrorOf("models: [\n  {name: x,"), HasSubstr("malformed YAML"));
  EXPECT_THAT(ErrorOf("- a\n- b\n"), HasSubstr("must be a map"));
  EXPECT_THAT(ErrorOf("modelz: []\n"), HasSubstr("field 'modelz': unknown field"));
  EXPECT_THAT(ErrorOf("models:\n  - name: m\n    endpoint: [\"h:1\"]\n"),
              HasSubstr("test.yaml:3: field 'models[0].endpoint': unknown field"));
  EXPECT_THAT(ErrorOf("models:\n  - endpoints: [\"h:1\"]\n"),
              HasSubstr("field 'models[0].name': is required"));
  EXPECT_THAT(ErrorOf("models:\n  - name: m\n    endpoints: [\"h:0\"]\n"),
              HasSubstr("test.yaml:3: field 'models[0].endpoints[0]': invalid port '0'"));
  EXPECT_THAT(ErrorOf("models:\n  - name: m\n    endpoints: [\"h:99999\"]\n"),
              HasSubstr("invalid port"));
  EXPECT_THAT(ErrorOf("models:\n  - name: m\n    endpoints: [\"h:1\", \"h:1\"]\n"),
              HasSubstr("duplicate endpoint h:1"));
  EXPECT_THAT(ErrorOf("models:\n  - name: a\n    endpoints: [\"h:1\"]\n  - name: b\n    "
                      "endpoints: [\"h:1\"]\n"),
              HasSubstr("test.yaml:5: field 'models[1].endpoints[0]': duplicate endpoint"));
  EXPECT_THAT(ErrorOf("models:\n  - name: m\n    endpoints: [\"h:1\"]\n    rolesets: []\n"),
              HasSubstr("mutually exclusive"));
  EXPECT_THAT(ErrorOf("models:\n  - name: m\n    rolesets:\n      - prefill: [\"h:1\"]\n"),
              HasSubstr("roleset name is required"));
  EXPECT_THAT(ErrorOf("models:\n  - name: m\n    endpoints:\n      - address: h:1\n        "
                      "metric_port: http\n"),
              HasSubstr("field 'models[0].endpoints[0].metric_port': must be an integer"));
  EXPECT_THAT(ErrorOf("models:\n  - name: m\n    endpoints:\n      - address: h:1\n        "
                      "kv_events: maybe\n"),
              HasSubstr("must be true or false"));
  EXPECT_THAT(ErrorOf("models:\n  - name: m\n    endpoints:\n      - {metric_port: 1}\n"),
              HasSubstr("address': is required"));
  EXPECT_THAT(ErrorOf("models:\n  - name: m\n    endpoints: [\"::1:80\"]\n"),
              HasSubstr("must be bracketed"));
  EXPECT_THAT(ErrorOf("models:\n  - name: m\n"), HasSubstr("needs 'endpoints' or 'rolesets'"));
  EXPECT_THAT(ErrorOf("models: 3\n"), HasSubstr("field 'models': must be a list"));
  // A raw 0xff byte: names reach JSON answers and metric labels, which must be UTF-8.
  EXPECT_THAT(ErrorOf("models:\n  - name: \"m\xff\"\n    endpoints: [\"h:1\"]\n"),
              HasSubstr("field 'models[0].name': must be valid UTF-8"));
  EXPECT_THAT(ErrorOf(""), HasSubstr("must be a map"));
}

TEST(StaticConfigTest, SanitizerRules) {
  EXPECT_EQ(SanitizeModelName("--Meta/Llama_3--"), "meta-llama-3");
  EXPECT_EQ(SanitizeModelName(std::string(49, 'a') + "-bbb"), std::string(49, 'a'));
  EXPECT_EQ(SanitizeModelName("///"), "");
}

TEST(StaticConfigTest, AdaptersPerEndpoint) {
  auto config = ParseStaticConfig(R"(
models:
  - name: llama
    endpoints:
      - address: "10.0.0.1:8000"
        adapters: [sql-lora, chat-lora]
      - address: "10.0.0.2:8000"
        adapters: [sql-lora]
      - "10.0.0.3:8000"
)",
                                  "t");
  ASSERT_TRUE(config.ok()) << config.status();
  auto adapters = StaticAdapters(*config);
  ASSERT_EQ(adapters.size(), 2u);
  EXPECT_EQ(adapters[0].name, "chat-lora");
  EXPECT_EQ(adapters[0].ns, "standalone");
  EXPECT_EQ(adapters[0].instances, std::vector<std::string>{"llama-10-0-0-1-0"});
  EXPECT_EQ(adapters[1].name, "sql-lora");
  EXPECT_EQ(adapters[1].instances,
            (std::vector<std::string>{"llama-10-0-0-1-0", "llama-10-0-0-2-1"}));
  EXPECT_TRUE(
      StaticAdapters(*ParseStaticConfig("models: [{name: m, endpoints: [h]}]", "t")).empty());

  EXPECT_THAT(ErrorOf("models:\n  - name: m\n    endpoints:\n      - address: h:1\n        "
                      "adapters: x\n"),
              HasSubstr("test.yaml:5: field 'models[0].endpoints[0].adapters': must be a list"));
  EXPECT_THAT(ErrorOf("models:\n  - name: m\n    endpoints:\n      - address: h:1\n        "
                      "adapters: [a, a]\n"),
              HasSubstr("field 'models[0].endpoints[0].adapters[1]': adapter 'a' listed twice"));
  EXPECT_THAT(ErrorOf("models:\n  - name: m\n    endpoints:\n      - address: h:1\n        "
                      "adapters: [\"\"]\n"),
              HasSubstr("adapters[0]': must not be empty"));
  EXPECT_THAT(ErrorOf("models:\n  - name: m\n    endpoints:\n      - address: h:1\n        "
                      "adapters: [n]\n  - name: n\n    endpoints: [h:2]\n"),
              HasSubstr("test.yaml:5: field 'models[0].endpoints[0].adapters[0]': adapter 'n' "
                        "has the name of a model"));
}

}  // namespace
}  // namespace aibrix::discovery
