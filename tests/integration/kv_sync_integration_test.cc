// The service subscribing to a real ZMQ publisher with vLLM's framing: events flow through
// the EventManager into the exact index and show in POST /cache/match and /cache/pods.
#include <signal.h>

#include <thread>

#include "aibrix/kvpublish/publisher.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/util/poll.h"
#include "tests/util/subprocess.h"
#include "tests/util/temp_dir.h"

namespace aibrix {
namespace {

using testing::BinaryPath;
using testing::Subprocess;

std::vector<uint32_t> Tokens(int blocks, uint32_t base) {
  std::vector<uint32_t> tokens;
  for (int i = 0; i < blocks * 16; ++i) tokens.push_back(base + static_cast<uint32_t>(i));
  return tokens;
}

using aibrix::testing::Eventually;

TEST(KvSyncIntegrationTest, EventsReachTheIndexAndMatch) {
  kvpublish::PublisherOptions options;
  options.endpoint = "tcp://127.0.0.1:0";
  options.replay_endpoint = "tcp://127.0.0.1:0";
  kvpublish::Publisher publisher(options);
  ASSERT_TRUE(publisher.Start().ok());

  const testing::TempDir dir("kv-sync");
  const std::string config = dir.Write(
      "config.yaml",
      fmt::format("models:\n  - name: llama\n    endpoints:\n      - address: \"127.0.0.1:18009\"\n"
                  "        kv_events: true\n        kv_events_port: {}\n        replay_port: {}\n",
                  publisher.port(), publisher.replay_port()));
  auto process = Subprocess::Start({BinaryPath("aibrix-cache"), "--http-addr", "127.0.0.1:0",
                                    "--static-config", config, "--kv-event-sync"});
  ASSERT_TRUE(process.ok());
  auto port = (*process)->WaitForListeningPort(std::chrono::seconds(20));
  ASSERT_TRUE(port.ok()) << port.status();
  httplib::Client client("127.0.0.1", *port);
  const std::string pod = "standalone/llama-127-0-0-1-0";
  ASSERT_TRUE(Eventually(
      [&] {
        auto res = client.Get("/cache/pods/" + pod);
        return res && res->status == 200 &&
               nlohmann::json::parse(res->body)["kv_events_subscribed"] == true;
      },
      std::chrono::seconds(10)))
      << (*process)->Output();

  kv::BlockStored stored;
  stored.block_hashes = {101, 102, 103};
  stored.token_ids = Tokens(3, 1000);
  stored.block_size = 16;
  stored.medium = "GPU";
  ASSERT_TRUE(publisher.Publish(kv::EventBatch{1.0, {stored}, 0}).ok());

  const nlohmann::json query = {{"model", "llama"}, {"token_ids", Tokens(4, 1000)}};
  auto matched = [&](int blocks) {
    auto res = client.Post("/cache/match", query.dump(), "application/json");
    if (!res || res->status != 200) return false;
    auto body = nlohmann::json::parse(res->body);
    if (body["total_blocks"] != 4 || body["block_size"] != 16) return false;
    for (const auto& entry : body["pods"]) {
      if (entry["pod"] == pod && entry["source"] == "events" && entry["tier"] == "GPU") {
        return entry["matched_blocks"] == blocks;
      }
    }
    return blocks == 0;
  };
  // The subscriber may connect after the first publish; replay from sequence 0 covers it.
  EXPECT_TRUE(Eventually([&] { return matched(3); }, std::chrono::seconds(10)))
      << (*process)->Output();

  kv::BlockRemoved removed;
  removed.block_hashes = {102};
  ASSERT_TRUE(publisher.Publish(kv::EventBatch{2.0, {removed}, 0}).ok());
  EXPECT_TRUE(Eventually([&] { return matched(1); }, std::chrono::seconds(10)));

  ASSERT_TRUE(publisher.Publish(kv::EventBatch{3.0, {kv::AllBlocksCleared{}}, 0}).ok());
  EXPECT_TRUE(Eventually([&] { return matched(0); }, std::chrono::seconds(10)));

  // Bad requests.
  EXPECT_EQ(client.Post("/cache/match", R"({"token_ids": [1]})", "application/json")->status, 400);
  EXPECT_EQ(
      client.Post("/cache/match", R"({"model": "llama", "token_ids": [-1]})", "application/json")
          ->status,
      400);
  EXPECT_EQ(client.Post("/cache/match", R"({"model": "llama"})", "application/json")->status, 400);
  EXPECT_EQ(client.Post("/cache/match", R"({"model": "nope", "prompt": "hi"})", "application/json")
                ->status,
            404);
  auto by_prompt =
      client.Post("/cache/match", R"({"model": "llama", "prompt": "0123456789abcdef0123"})",
                  "application/json");
  ASSERT_TRUE(by_prompt);
  EXPECT_EQ(nlohmann::json::parse(by_prompt->body)["total_blocks"], 1);

  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_THAT(metrics->body, ::testing::HasSubstr("aibrix_kvcache_zmq_connections_total"));
  auto exit_code = (*process)->Stop(SIGTERM, std::chrono::seconds(10));
  ASSERT_TRUE(exit_code.ok());
  EXPECT_EQ(*exit_code, 0);
}

}  // namespace
}  // namespace aibrix
