// The real aibrix-cache binary with `--discovery kubernetes --kubeconfig FILE` against the
// fake API server: /readyz waits for the first sync, /cache/pods and /cache/models follow
// the watch, /metrics carries the discovery counters.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fmt/format.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/util/fake_kube_api.h"
#include "tests/util/poll.h"
#include "tests/util/subprocess.h"
#include "tests/util/temp_dir.h"

namespace aibrix {
namespace {

using testing::BinaryPath;
using testing::Eventually;
using testing::FakeKubeApi;
using ::testing::HasSubstr;
using testing::kModelAdaptersPath;
using testing::kPodsPath;
using testing::Subprocess;

std::vector<std::string> PodKeys(httplib::Client& client) {
  auto response = client.Get("/cache/pods");
  if (!response || response->status != 200) {
    ADD_FAILURE() << "/cache/pods: " << (response ? response->body : "no response");
    return {};
  }
  std::vector<std::string> keys;
  const nlohmann::json body = nlohmann::json::parse(response->body);
  for (const auto& pod : body["pods"]) keys.push_back(pod["key"]);
  return keys;
}

int ReadyStatus(httplib::Client& client) {
  auto response = client.Get("/readyz");
  return response ? response->status : 0;
}

TEST(KubernetesDiscoveryTest, BinaryListsWatchesAndReportsReadinessAfterSync) {
  FakeKubeApi api;
  api.Upsert(kPodsPath, testing::RealisticPod(1, "llama"));
  api.Upsert(kPodsPath, testing::SimplePod("b", "llama", "10.0.0.2"));
  api.Upsert(kModelAdaptersPath, testing::ModelAdapter("sql-lora", {"b"}));
  api.FailNext(500, 1000);  // nothing can be listed yet
  testing::TempDir dir("k8s-binary");
  const std::string kubeconfig = dir.Write("kubeconfig", fmt::format(R"(apiVersion: v1
kind: Config
current-context: test
contexts: [{{name: test, context: {{cluster: fake, user: me}}}}]
clusters: [{{name: fake, cluster: {{server: "{}"}}}}]
users: [{{name: me, user: {{tokenFile: token}}}}]
)",
                                                                     api.url()));
  dir.Write("token", "file-token\n");
  auto process =
      Subprocess::Start({BinaryPath("aibrix-cache"), "--http-addr", "127.0.0.1:0", "--discovery",
                         "kubernetes", "--kubeconfig", kubeconfig, "--extproc-addr", ""});
  ASSERT_TRUE(process.ok()) << process.status();
  auto port = (*process)->WaitForLine(R"(listening on http://127\.0\.0\.1:(\d+))",
                                      std::chrono::seconds(20));
  ASSERT_TRUE(port.ok()) << port.status();
  httplib::Client client("127.0.0.1", std::stoi(*port));

  // Not ready while the API server refuses to list.
  ASSERT_TRUE(Eventually([&] { return api.Requests().size() >= 2; }));
  EXPECT_EQ(ReadyStatus(client), 503);
  EXPECT_EQ(client.Get("/healthz")->status, 200);
  api.FailNext(500, 0);
  ASSERT_TRUE(Eventually([&] { return ReadyStatus(client) == 200; }, std::chrono::seconds(60)));
  EXPECT_EQ(api.LastAuthorization(), "Bearer file-token");

  const std::string realistic =
      "default/" + testing::RealisticPod(1, "llama")["metadata"]["name"].get<std::string>();
  EXPECT_EQ(PodKeys(client), (std::vector<std::string>{"default/b", realistic}));
  auto pod = nlohmann::json::parse(client.Get("/cache/pods/default/b")->body);
  EXPECT_EQ(pod["models"], nlohmann::json({"llama", "sql-lora"}));
  auto realistic_pod =
      nlohmann::json::parse(client.Get(("/cache/pods/" + realistic).c_str())->body);
  EXPECT_EQ(realistic_pod["deployment"], "llama");
  EXPECT_EQ(realistic_pod["ready"], true);

  // The watch: a pod added, one deleted.
  ASSERT_TRUE(Eventually([&] { return api.OpenWatches(kPodsPath) == 1; }));
  api.Upsert(kPodsPath, testing::SimplePod("c", "qwen", "10.0.0.3"));
  api.Remove(kPodsPath, "default", "b");
  ASSERT_TRUE(Eventually([&] {
    return PodKeys(client) == std::vector<std::string>{"default/c", realistic};
  }));
  auto models = client.Get("/cache/models");
  ASSERT_TRUE(models);
  EXPECT_THAT(models->body, HasSubstr("\"qwen\""));
  EXPECT_THAT(models->body, ::testing::Not(HasSubstr("sql-lora")));

  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_THAT(metrics->body, HasSubstr(R"(aibrix_discovery_lists_total{resource="pods"} 1)"));
  EXPECT_THAT(metrics->body,
              HasSubstr(R"(aibrix_discovery_errors_total{reason="http_status",resource="pods"})"));
  EXPECT_THAT(metrics->body, HasSubstr(R"(aibrix_discovery_synced{resource="modeladapters"} 1)"));

  auto stopped = (*process)->Stop(SIGTERM, std::chrono::seconds(60));
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(*stopped, 0);
}

TEST(KubernetesDiscoveryTest, BadKubeconfigStopsStartUpWithTheReason) {
  testing::TempDir dir("k8s-binary-bad");
  const std::string kubeconfig = dir.Write("kubeconfig", "current-context: missing\n");
  auto process =
      Subprocess::Start({BinaryPath("aibrix-cache"), "--http-addr", "127.0.0.1:0", "--discovery",
                         "kubernetes", "--kubeconfig", kubeconfig, "--extproc-addr", ""});
  ASSERT_TRUE(process.ok()) << process.status();
  auto code = (*process)->Wait(std::chrono::seconds(20));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 1);
  EXPECT_THAT((*process)->Output(), HasSubstr("no entry named 'missing'"));
}

}  // namespace
}  // namespace aibrix
