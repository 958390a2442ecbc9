// ServiceConfig::FromEnvironment: every AIBrix variable of spec §8 and of the seed document,
// by family. Each test sets variables in this process (setenv) and restores them after.
#include "aibrix/server/config.h"

#include <cstdlib>
#include <map>
#include <optional>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aibrix::server {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Every variable the config reads or checks; cleared before each test, restored after.
constexpr const char* kVariables[] = {
    "AIBRIX_ROUTER_KV_AWARE_LOAD_WEIGHT",
    "AIBRIX_ROUTER_KV_AWARE_QUEUE_WEIGHT",
    "AIBRIX_POD_METRIC_REFRESH_INTERVAL_MS",
    "AIBRIX_PROMETHEUS_QUERY_INTERVAL_MS",
    "AIBRIX_PROMETHEUS_QUERY_TIMEOUT_MS",
    "PROMETHEUS_ENDPOINT",
    "AIBRIX_POD_DEPLOYMENT_LABEL",
    "AIBRIX_POD_RAYCLUSTERFLEET_LABEL",
    "AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED",
    "AIBRIX_KV_EVENT_SYNC_ENABLED",
    "AIBRIX_PREFIX_CACHE_USE_REMOTE_TOKENIZER",
    "AIBRIX_USE_REMOTE_TOKENIZER",
    "AIBRIX_PREFIX_CACHE_TOKENIZER_TYPE",
    "AIBRIX_PREFIX_CACHE_REMOTE_TOKENIZER_ENDPOINT",
    "AIBRIX_REMOTE_TOKENIZER_ENDPOINT",
    "AIBRIX_PREFIX_CACHE_KV_EVENT_PUBLISH_ADDR",
    "AIBRIX_PREFIX_CACHE_KV_EVENT_SUBSCRIBE_ADDRS",
    "AIBRIX_SYNC_MAX_CONTEXTS",
    "AIBRIX_SYNC_MAX_PREFIXES_PER_CONTEXT",
    "AIBRIX_SYNC_EVICTION_INTERVAL_SECONDS",
    "AIBRIX_SYNC_EVICTION_DURATION_MINUTES",
    "AIBRIX_PREFIX_CACHE_BLOCK_SIZE",
    "AIBRIX_PREFIX_CACHE_BLOCK_NUMBER",
    "AIBRIX_PREFIX_CACHE_EVICTION_INTERVAL_SECONDS",
    "AIBRIX_PREFIX_CACHE_EVICTION_DURATION_MINS",
    "AIBRIX_PREFIX_CACHE_HASH_SEED",
    "AIBRIX_STATESYNC_ENABLED",
    "AIBRIX_STATESYNC_SYNC_PERIOD",
    "AIBRIX_PREFIX_CACHE_POD_RUNNING_REQUEST_IMBALANCE_ABS_COUNT",
    "AIBRIX_PREFIX_CACHE_STANDARD_DEVIATION_FACTOR",
    "AIBRIX_VLLM_TOKENIZER_ENDPOINT_TEMPLATE",
    "AIBRIX_TOKENIZER_HEALTH_CHECK_PERIOD",
    "AIBRIX_TOKENIZER_TTL",
    "AIBRIX_TOKENIZER_REQUEST_TIMEOUT",
    "AIBRIX_MAX_TOKENIZERS_PER_POOL",
    "AIBRIX_ZMQ_POLL_TIMEOUT",
    "AIBRIX_ZMQ_REPLAY_TIMEOUT",
    "AIBRIX_ZMQ_RECONNECT_INTERVAL",
};

class ConfigEnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : kVariables) {
      if (const char* value = std::getenv(name)) saved_[name] = value;
      unsetenv(name);
    }
  }
  void TearDown() override {
    for (const char* name : kVariables) {
      auto it = saved_.find(name);
      if (it == saved_.end()) {
        unsetenv(name);
      } else {
        setenv(name, it->second.c_str(), 1);
      }
    }
  }
  static void Set(const char* name, const char* value) { setenv(name, value, 1); }
  static ServiceConfig Parse() {
    auto config = ServiceConfig::FromEnvironment();
    EXPECT_TRUE(config.ok()) << config.status();
    return config.ok() ? *config : ServiceConfig{};
  }
  static std::string Error() {
    auto config = ServiceConfig::FromEnvironment();
    EXPECT_FALSE(config.ok());
    return config.ok() ? "" : std::string(config.status().message());
  }

 private:
  std::map<std::string, std::string> saved_;
};

TEST_F(ConfigEnvTest, NothingSetGivesTheReferenceDefaults) {
  const ServiceConfig c = Parse();
  EXPECT_EQ(c.metric_refresh_ms, 50);
  EXPECT_FALSE(c.kv_event_sync);
  EXPECT_EQ(c.tokenizer, "");
  EXPECT_EQ(c.EffectiveTokenizer(), "local");
  EXPECT_EQ(c.tokenizer_endpoint, "");
  EXPECT_EQ(c.tokenizer_timeout_ms, 5000);
  EXPECT_EQ(c.tokenizer_ttl_s, 300);
  EXPECT_EQ(c.max_tokenizers, 100);
  EXPECT_EQ(c.block_size, 16);
  EXPECT_EQ(c.approx_blocks_per_pod, 200000);
  EXPECT_EQ(c.approx_ttl_minutes, 20);
  EXPECT_EQ(c.sweep_interval_s, 1);
  EXPECT_EQ(c.imbalance_abs_count, 8);
  EXPECT_EQ(c.std_dev_factor, 1.0);
  EXPECT_EQ(c.kv_replay_timeout_ms, 5000);
  EXPECT_EQ(c.kv_reconnect_ms, 1000);
  EXPECT_EQ(c.pod_deployment_label, "app.kubernetes.io/name");
  EXPECT_EQ(c.pod_fleet_label, "orchestration.aibrix.ai/raycluster-fleet-name");
  EXPECT_THAT(c.env_notes, IsEmpty());
}

TEST_F(ConfigEnvTest, KvSyncUnderBothSpellingsAndTheRemoteTokenizerFollows) {
  Set("AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED", "true");
  ServiceConfig c = Parse();
  EXPECT_TRUE(c.kv_event_sync);
  EXPECT_EQ(c.EffectiveTokenizer(), "remote");  // KV sync needs the engines' token ids
  unsetenv("AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED");

  Set("AIBRIX_KV_EVENT_SYNC_ENABLED", "1");  // the seed's spelling
  c = Parse();
  EXPECT_TRUE(c.kv_event_sync);
  EXPECT_EQ(c.EffectiveTokenizer(), "remote");
  c.tokenizer = "local";  // --tokenizer local, given explicitly, wins
  EXPECT_EQ(c.EffectiveTokenizer(), "local");

  Set("AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED", "True");  // both, agreeing
  EXPECT_TRUE(Parse().kv_event_sync);
  Set("AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED", "false");  // both, disagreeing
  EXPECT_THAT(Error(), AllOf(HasSubstr("AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED=false"),
                             HasSubstr("AIBRIX_KV_EVENT_SYNC_ENABLED=1")));
  unsetenv("AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED");
  Set("AIBRIX_KV_EVENT_SYNC_ENABLED", "yes");
  EXPECT_THAT(Error(), HasSubstr("AIBRIX_KV_EVENT_SYNC_ENABLED=yes: not a boolean"));
}

TEST_F(ConfigEnvTest, TokenizerFamily) {
  Set("AIBRIX_USE_REMOTE_TOKENIZER", "true");  // the seed's spelling
  EXPECT_EQ(Parse().tokenizer, "remote");
  unsetenv("AIBRIX_USE_REMOTE_TOKENIZER");
  Set("AIBRIX_PREFIX_CACHE_USE_REMOTE_TOKENIZER", "t");
  EXPECT_EQ(Parse().tokenizer, "remote");
  Set("AIBRIX_PREFIX_CACHE_USE_REMOTE_TOKENIZER", "false");  // false is the default: auto
  EXPECT_EQ(Parse().tokenizer, "");
  unsetenv("AIBRIX_PREFIX_CACHE_USE_REMOTE_TOKENIZER");

  Set("AIBRIX_PREFIX_CACHE_TOKENIZER_TYPE", "remote");
  EXPECT_EQ(Parse().tokenizer, "remote");
  // AIBrix's gateway deployment sets "character" (its local tokenizer): the default here,
  // so KV sync still gets the remote one.
  Set("AIBRIX_PREFIX_CACHE_TOKENIZER_TYPE", "character");
  Set("AIBRIX_KV_EVENT_SYNC_ENABLED", "true");
  EXPECT_EQ(Parse().EffectiveTokenizer(), "remote");
  Set("AIBRIX_PREFIX_CACHE_TOKENIZER_TYPE", "tiktoken");
  EXPECT_THAT(Error(), HasSubstr("AIBRIX_PREFIX_CACHE_TOKENIZER_TYPE=tiktoken: unsupported"));
  unsetenv("AIBRIX_PREFIX_CACHE_TOKENIZER_TYPE");

  Set("AIBRIX_REMOTE_TOKENIZER_ENDPOINT", "http://vllm-service:8000");  // AIBrix docs' spelling
  EXPECT_EQ(Parse().tokenizer_endpoint, "http://vllm-service:8000");
  Set("AIBRIX_PREFIX_CACHE_REMOTE_TOKENIZER_ENDPOINT", "http://other:8000");
  EXPECT_THAT(Error(), HasSubstr("disagree"));
  unsetenv("AIBRIX_REMOTE_TOKENIZER_ENDPOINT");
  EXPECT_EQ(Parse().tokenizer_endpoint, "http://other:8000");

  Set("AIBRIX_VLLM_TOKENIZER_ENDPOINT_TEMPLATE", "http://%s:8080");
  EXPECT_EQ(Parse().tokenizer_endpoint_template, "http://%s:8080");

  Set("AIBRIX_TOKENIZER_REQUEST_TIMEOUT", "1500ms");
  Set("AIBRIX_TOKENIZER_TTL", "10m");
  Set("AIBRIX_MAX_TOKENIZERS_PER_POOL", "7");
  ServiceConfig c = Parse();
  EXPECT_EQ(c.tokenizer_timeout_ms, 1500);
  EXPECT_EQ(c.tokenizer_ttl_s, 600);
  EXPECT_EQ(c.max_tokenizers, 7);
  // A bare number counts seconds (AIBrix multiplied these by a second).
  Set("AIBRIX_TOKENIZER_REQUEST_TIMEOUT", "2");
  EXPECT_EQ(Parse().tokenizer_timeout_ms, 2000);

  Set("AIBRIX_TOKENIZER_HEALTH_CHECK_PERIOD", "30s");
  EXPECT_THAT(Parse().env_notes,
              ElementsAre(AllOf(HasSubstr("AIBRIX_TOKENIZER_HEALTH_CHECK_PERIOD=30s"),
                                HasSubstr("no effect"))));

  Set("AIBRIX_TOKENIZER_REQUEST_TIMEOUT", "-1s");
  Set("AIBRIX_TOKENIZER_TTL", "forever");
  Set("AIBRIX_MAX_TOKENIZERS_PER_POOL", "0");
  Set("AIBRIX_TOKENIZER_HEALTH_CHECK_PERIOD", "30 s");
  const std::string error = Error();  // every bad variable, in one message
  EXPECT_THAT(error, HasSubstr("AIBRIX_TOKENIZER_REQUEST_TIMEOUT=-1s: not a positive duration"));
  EXPECT_THAT(error, HasSubstr("AIBRIX_TOKENIZER_TTL=forever: not a positive duration"));
  EXPECT_THAT(error, HasSubstr("AIBRIX_MAX_TOKENIZERS_PER_POOL=0: not an integer in 1..100000"));
  EXPECT_THAT(error, HasSubstr("AIBRIX_TOKENIZER_HEALTH_CHECK_PERIOD=30 s"));
}

TEST_F(ConfigEnvTest, PrefixCacheFamily) {
  Set("AIBRIX_PREFIX_CACHE_BLOCK_SIZE", "128");
  Set("AIBRIX_PREFIX_CACHE_BLOCK_NUMBER", "5000");
  Set("AIBRIX_PREFIX_CACHE_EVICTION_DURATION_MINS", "5");
  Set("AIBRIX_PREFIX_CACHE_EVICTION_INTERVAL_SECONDS", "3");
  Set("AIBRIX_PREFIX_CACHE_POD_RUNNING_REQUEST_IMBALANCE_ABS_COUNT", "16");
  Set("AIBRIX_PREFIX_CACHE_STANDARD_DEVIATION_FACTOR", "2.5");
  ServiceConfig c = Parse();
  EXPECT_EQ(c.block_size, 128);
  EXPECT_EQ(c.approx_blocks_per_pod, 5000);
  EXPECT_EQ(c.approx_ttl_minutes, 5);
  EXPECT_EQ(c.sweep_interval_s, 3);
  EXPECT_EQ(c.imbalance_abs_count, 16);
  EXPECT_EQ(c.std_dev_factor, 2.5);
  EXPECT_EQ(c.kv_aware_load_weight, 256.0);  // default
  Set("AIBRIX_ROUTER_KV_AWARE_LOAD_WEIGHT", "2048");
  EXPECT_EQ(Parse().kv_aware_load_weight, 2048.0);
  Set("AIBRIX_ROUTER_KV_AWARE_LOAD_WEIGHT", "0");
  EXPECT_EQ(Parse().kv_aware_load_weight, 0.0);
  unsetenv("AIBRIX_ROUTER_KV_AWARE_LOAD_WEIGHT");
  EXPECT_EQ(c.kv_aware_queue_weight, 0.25);  // default
  Set("AIBRIX_ROUTER_KV_AWARE_QUEUE_WEIGHT", "1");
  EXPECT_EQ(Parse().kv_aware_queue_weight, 1.0);
  Set("AIBRIX_ROUTER_KV_AWARE_QUEUE_WEIGHT", "0");
  EXPECT_EQ(Parse().kv_aware_queue_weight, 0.0);
  unsetenv("AIBRIX_ROUTER_KV_AWARE_QUEUE_WEIGHT");

  Set("AIBRIX_PREFIX_CACHE_BLOCK_SIZE", "8192");
  Set("AIBRIX_PREFIX_CACHE_BLOCK_NUMBER", "-1");
  Set("AIBRIX_PREFIX_CACHE_EVICTION_DURATION_MINS", "20m");
  Set("AIBRIX_PREFIX_CACHE_STANDARD_DEVIATION_FACTOR", "nan");
  const std::string error = Error();
  EXPECT_THAT(error, HasSubstr("AIBRIX_PREFIX_CACHE_BLOCK_SIZE=8192: not an integer in 1..4096"));
  EXPECT_THAT(error, HasSubstr("AIBRIX_PREFIX_CACHE_BLOCK_NUMBER=-1"));
  EXPECT_THAT(error, HasSubstr("AIBRIX_PREFIX_CACHE_EVICTION_DURATION_MINS=20m"));
  EXPECT_THAT(
      error, HasSubstr("AIBRIX_PREFIX_CACHE_STANDARD_DEVIATION_FACTOR=nan: not a positive number"));
}

TEST_F(ConfigEnvTest, SyncIndexerAndStateSyncFamily) {
  Set("AIBRIX_SYNC_MAX_CONTEXTS", "1000");
  Set("AIBRIX_SYNC_MAX_PREFIXES_PER_CONTEXT", "10000");
  Set("AIBRIX_SYNC_EVICTION_INTERVAL_SECONDS", "60");
  Set("AIBRIX_SYNC_EVICTION_DURATION_MINUTES", "20");
  Set("AIBRIX_PREFIX_CACHE_HASH_SEED", "42");
  Set("AIBRIX_PREFIX_CACHE_KV_EVENT_PUBLISH_ADDR", "tcp://*:5557");
  Set("AIBRIX_STATESYNC_ENABLED", "false");
  Set("AIBRIX_STATESYNC_SYNC_PERIOD", "10s");
  const ServiceConfig c = Parse();
  // Accepted (AIBrix installs set them), each noted as changing nothing here.
  EXPECT_EQ(c.env_notes.size(), 7u);
  for (const std::string& note : c.env_notes) EXPECT_THAT(note, HasSubstr("no effect"));

  Set("AIBRIX_SYNC_MAX_CONTEXTS", "many");
  Set("AIBRIX_PREFIX_CACHE_HASH_SEED", "-5");
  Set("AIBRIX_STATESYNC_ENABLED", "true");
  const std::string error = Error();
  EXPECT_THAT(error, HasSubstr("AIBRIX_SYNC_MAX_CONTEXTS=many: not an integer"));
  EXPECT_THAT(error, HasSubstr("AIBRIX_PREFIX_CACHE_HASH_SEED=-5: not an unsigned integer"));
  EXPECT_THAT(error, HasSubstr("AIBRIX_STATESYNC_ENABLED=true: Redis state sync"));
}

TEST_F(ConfigEnvTest, KvEventSocketsFamily) {
  Set("AIBRIX_ZMQ_REPLAY_TIMEOUT", "2s");
  Set("AIBRIX_ZMQ_RECONNECT_INTERVAL", "250ms");
  Set("AIBRIX_ZMQ_POLL_TIMEOUT", "100ms");
  ServiceConfig c = Parse();
  EXPECT_EQ(c.kv_replay_timeout_ms, 2000);
  EXPECT_EQ(c.kv_reconnect_ms, 250);
  EXPECT_THAT(c.env_notes, ElementsAre(HasSubstr("AIBRIX_ZMQ_POLL_TIMEOUT=100ms: no effect")));
  Set("AIBRIX_ZMQ_REPLAY_TIMEOUT", "0");
  EXPECT_THAT(Error(), HasSubstr("AIBRIX_ZMQ_REPLAY_TIMEOUT=0: not a positive duration"));
}

TEST_F(ConfigEnvTest, MetricsAndLabelsFamily) {
  Set("AIBRIX_POD_METRIC_REFRESH_INTERVAL_MS", "250");
  Set("AIBRIX_POD_DEPLOYMENT_LABEL", "app");
  Set("AIBRIX_POD_RAYCLUSTERFLEET_LABEL", "fleet");
  Set("AIBRIX_PROMETHEUS_QUERY_INTERVAL_MS", "200");
  ServiceConfig c = Parse();
  EXPECT_EQ(c.metric_refresh_ms, 250);
  EXPECT_EQ(c.pod_deployment_label, "app");
  EXPECT_EQ(c.pod_fleet_label, "fleet");
  EXPECT_THAT(c.env_notes, ElementsAre(HasSubstr("without PROMETHEUS_ENDPOINT")));

  Set("AIBRIX_POD_METRIC_REFRESH_INTERVAL_MS", "50ms");
  Set("PROMETHEUS_ENDPOINT", "http://prometheus:9090");
  const std::string error = Error();
  EXPECT_THAT(error, HasSubstr("AIBRIX_POD_METRIC_REFRESH_INTERVAL_MS=50ms: not an integer"));
  EXPECT_THAT(error, HasSubstr("PROMETHEUS_ENDPOINT=http://prometheus:9090: the PromQL"));
}

}  // namespace
}  // namespace aibrix::server
