// The static discovery file, live: rewriting it (inotify) or sending SIGHUP changes the pods,
// and the KV event subscriptions and the prefix index follow; a bad file changes nothing and
// is counted.
#include <signal.h>

#include <cstdio>

#include "aibrix/kvpublish/publisher.h"
#include "aibrix/server/service.h"
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

using testing::Eventually;
using ::testing::HasSubstr;

// Replaces the file as editors do: a temporary file renamed over it.
void Replace(const testing::TempDir& dir, const std::string& name, const std::string& text) {
  const std::string tmp = dir.Write(name + ".new", text);
  ASSERT_EQ(std::rename(tmp.c_str(), dir.File(name).c_str()), 0);
}

std::optional<nlohmann::json> GetJson(httplib::Client& client, const std::string& path) {
  auto res = client.Get(path);
  if (!res || res->status != 200) return std::nullopt;
  return nlohmann::json::parse(res->body);
}

std::vector<std::string> PodKeys(httplib::Client& client) {
  std::vector<std::string> keys;
  if (auto pods = GetJson(client, "/cache/pods")) {
    for (const auto& pod : (*pods)["pods"]) keys.push_back(pod["key"]);
  }
  return keys;
}

// The value of a /metrics series ("name" alone for an unlabelled one); -1 when absent.
double Metric(httplib::Client& client, const std::string& series) {
  auto res = client.Get("/metrics");
  if (!res) return -1;
  return testing::FindSeries(res->body, series).value_or(-1);
}

std::vector<uint32_t> Tokens(int blocks, uint32_t base) {
  std::vector<uint32_t> tokens;
  for (int i = 0; i < blocks * 16; ++i) tokens.push_back(base + static_cast<uint32_t>(i));
  return tokens;
}

TEST(StaticReloadTest, SubscriptionsAndIndexFollowTheRewrittenFile) {
  kvpublish::PublisherOptions publisher_options;
  publisher_options.endpoint = "tcp://127.0.0.1:0";
  publisher_options.replay_endpoint = "tcp://127.0.0.1:0";
  kvpublish::Publisher publisher(publisher_options);
  ASSERT_TRUE(publisher.Start().ok());
  const testing::RefusedPort engine;  // the pod's serving port: never called here
  const std::string address = fmt::format("127.0.0.1:{}", engine.port());
  const std::string pod = "standalone/llama-127-0-0-1-0";

  const testing::TempDir dir("static-reload-kv");
  server::ServiceConfig config;
  config.http_addr = "127.0.0.1:0";
  config.extproc_addr = "";
  config.static_config = dir.Write(
      "static.yaml", fmt::format("models:\n  - name: llama\n    endpoints: [\"{}\"]\n", address));
  config.kv_event_sync = true;
  config.tokenizer = "local";
  config.io_threads = 2;
  config.shutdown_delay_ms = 0;
  server::Service service(config);
  ASSERT_TRUE(service.Start().ok());
  httplib::Client client("127.0.0.1", service.http_port());
  auto subscribed = [&] {
    auto json = GetJson(client, "/cache/pods/" + pod);
    return json && (*json)["kv_events_subscribed"] == true;
  };
  EXPECT_FALSE(subscribed());

  // The endpoint turns on KV events: the pod is updated and subscribed.
  Replace(dir, "static.yaml",
          fmt::format("models:\n  - name: llama\n    endpoints:\n      - address: \"{}\"\n"
                      "        kv_events: true\n        kv_events_port: {}\n"
                      "        replay_port: {}\n",
                      address, publisher.port(), publisher.replay_port()));
  ASSERT_TRUE(Eventually(subscribed));

  kv::BlockStored stored;
  stored.block_hashes = {11, 12};
  stored.token_ids = Tokens(2, 500);
  stored.block_size = 16;
  ASSERT_TRUE(publisher.Publish(kv::EventBatch{1.0, {stored}, 0}).ok());
  const nlohmann::json query = {{"model", "llama"}, {"token_ids", Tokens(2, 500)}};
  auto matched = [&] {
    auto res = client.Post("/cache/match", query.dump(), "application/json");
    if (!res || res->status != 200) return -1;
    const nlohmann::json body = nlohmann::json::parse(res->body);
    for (const auto& entry : body["pods"]) {
      if (entry["pod"] == pod && entry["source"] == "events")
        return entry["matched_blocks"].get<int>();
    }
    return 0;
  };
  ASSERT_TRUE(Eventually([&] { return matched() == 2; }));

  // The endpoint goes (another takes its place): pod, subscription and index entries go.
  Replace(dir, "static.yaml", "models:\n  - name: llama\n    endpoints: [\"10.0.0.7:8000\"]\n");
  ASSERT_TRUE(Eventually(
      [&] { return PodKeys(client) == std::vector<std::string>{"standalone/llama-10-0-0-7-0"}; }));
  EXPECT_EQ(matched(), 0);  // the index holds nothing of the old pod any more
  EXPECT_EQ(client.Get("/cache/pods/" + pod)->status, 404);
  // The reload is counted once applied: the pods may show a moment before the counter.
  EXPECT_TRUE(
      Eventually([&] { return Metric(client, "aibrix_discovery_config_reloads_total") == 2; }));
  EXPECT_EQ(Metric(client, "aibrix_discovery_config_reload_errors_total"), 0);
  service.Stop();
}

TEST(StaticReloadTest, SighupReloadsTheBinaryAndABadFileKeepsItsState) {
  const testing::TempDir dir("static-reload-sighup");
  const std::string config =
      dir.Write("static.yaml", "models:\n  - name: llama\n    endpoints: [\"10.0.0.1:8000\"]\n");
  // No watching: only the signal can make the new file count.
  auto process = testing::Subprocess::Start(
      {testing::BinaryPath("aibrix-cache"), "--http-addr", "127.0.0.1:0", "--static-config", config,
       "--no-static-config-watch", "--shutdown-delay-ms", "0", "--extproc-addr", ""});
  ASSERT_TRUE(process.ok()) << process.status();
  auto port = (*process)->WaitForListeningPort(std::chrono::seconds(20));
  ASSERT_TRUE(port.ok()) << port.status();
  httplib::Client client("127.0.0.1", *port);
  ASSERT_TRUE(
      Eventually([&] { return client.Get("/readyz") && client.Get("/readyz")->status == 200; }));
  EXPECT_EQ(PodKeys(client), std::vector<std::string>{"standalone/llama-10-0-0-1-0"});

  Replace(dir, "static.yaml",
          "models:\n  - name: llama\n    endpoints: [\"10.0.0.1:8000\", \"10.0.0.2:8000\"]\n");
  ASSERT_EQ(kill((*process)->pid(), SIGHUP), 0);
  ASSERT_TRUE(Eventually([&] { return PodKeys(client).size() == 2; })) << (*process)->Output();
  // The reload is counted once applied: the pods may show a moment before the counter.
  EXPECT_TRUE(
      Eventually([&] { return Metric(client, "aibrix_discovery_config_reloads_total") == 1; }));

  // A bad file: refused with its line and field, counted; the process and its pods stay.
  Replace(dir, "static.yaml",
          "models:\n  - name: llama\n    endpoints:\n      - address: \"10.0.0.1:8000\"\n"
          "        kv_events: sometimes\n");
  ASSERT_EQ(kill((*process)->pid(), SIGHUP), 0);
  ASSERT_TRUE(Eventually(
      [&] { return Metric(client, "aibrix_discovery_config_reload_errors_total") == 1; }));
  EXPECT_EQ(PodKeys(client).size(), 2u);
  EXPECT_THAT((*process)->Output(),
              HasSubstr(config + ":5: field 'models[0].endpoints[0].kv_events'"));
  auto exit_code = (*process)->Stop(SIGTERM, std::chrono::seconds(10));
  ASSERT_TRUE(exit_code.ok());
  EXPECT_EQ(*exit_code, 0);
}

}  // namespace
}  // namespace aibrix
