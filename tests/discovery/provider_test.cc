// The Kubernetes provider end to end in process: a kubeconfig pointing at the fake API
// server, the informers, StoreSync and the Store (spec §2.3-2.4), and the KV event manager
// following the Store.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "aibrix/common/clock.h"
#include "aibrix/discovery/kubernetes_provider.h"
#include "aibrix/kvevents/manager.h"
#include "aibrix/kvpublish/publisher.h"
#include "aibrix/store/store.h"
#include "fmt/format.h"
#include "tests/kvevents/recording_sink.h"
#include "tests/util/fake_kube_api.h"
#include "tests/util/poll.h"
#include "tests/util/temp_dir.h"

namespace aibrix::discovery {
namespace {

using aibrix::testing::Eventually;
using aibrix::testing::FakeKubeApi;
using aibrix::testing::kModelAdaptersPath;
using aibrix::testing::kPodsPath;
using aibrix::testing::ModelAdapter;
using aibrix::testing::SimplePod;
using aibrix::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

template <class Pods>  // std::vector<store::PodRef> or store::PodList
std::vector<std::string> Keys(const Pods& pods) {
  std::vector<std::string> keys;
  for (const store::PodRef& pod : pods) keys.push_back(pod->key);
  return keys;
}

std::string KubeconfigFor(const FakeKubeApi& api) {
  return fmt::format(R"(apiVersion: v1
kind: Config
current-context: test
contexts: [{{name: test, context: {{cluster: fake, user: me}}}}]
clusters: [{{name: fake, cluster: {{server: "{}"}}}}]
users: [{{name: me, user: {{token: t0k3n}}}}]
)",
                     api.url());
}

class ProviderTest : public ::testing::Test {
 protected:
  ~ProviderTest() override {
    if (provider_) provider_->Stop();
  }

  KubernetesOptions Options() {
    KubernetesOptions options;
    options.kubeconfig = dir_.Write("kubeconfig", KubeconfigFor(api_));
    options.informer.backoff_initial = 10ms;
    options.informer.backoff_max = 100ms;
    return options;
  }
  void Start(KubernetesOptions options) {
    auto provider = KubernetesProvider::Create(std::move(options), registry_);
    ASSERT_TRUE(provider.ok()) << provider.status();
    provider_ = std::move(*provider);
    ASSERT_TRUE(provider_->Start(store_).ok());
    ASSERT_TRUE(Eventually([&] { return provider_->synced(); }));
  }
  std::vector<std::string> ModelPods(const std::string& model, bool ready_only = false) {
    store::ModelPodsRef pods = store_.ReadyPods(model);
    if (!pods) return {};
    return Keys(ready_only ? pods->ready : pods->pods);
  }

  TempDir dir_{"k8s-provider"};
  FakeKubeApi api_;
  prometheus::Registry registry_;
  store::Store store_;
  std::unique_ptr<KubernetesProvider> provider_;
};

TEST_F(ProviderTest, PodsAndAdaptersReachTheStoreAndFollowTheWatch) {
  api_.Upsert(kPodsPath, aibrix::testing::RealisticPod(1, "llama"));
  api_.Upsert(kPodsPath, SimplePod("b", "llama", "10.0.0.2", /*ready=*/false));
  nlohmann::json worker = SimplePod("worker", "llama", "10.0.0.3");
  worker["metadata"]["labels"]["ray.io/node-type"] = "worker";
  api_.Upsert(kPodsPath, worker);
  api_.Upsert(kPodsPath, SimplePod("no-model", "", "10.0.0.4"));
  // The adapter names a pod that does not exist yet.
  api_.Upsert(kModelAdaptersPath, ModelAdapter("sql-lora", {"b", "later"}));
  Start(Options());
  const std::string realistic =
      "default/" + aibrix::testing::RealisticPod(1, "llama")["metadata"]["name"].get<std::string>();
  EXPECT_THAT(Keys(store_.ListPods()), ElementsAre("default/b", realistic));
  EXPECT_EQ((*store_.GetPod(realistic))->object.deployment, "llama");
  EXPECT_EQ((*store_.GetPod(realistic))->ip(), "10.100.0.1");
  EXPECT_THAT(ModelPods("llama", /*ready_only=*/true), ElementsAre(realistic));
  EXPECT_THAT(ModelPods("sql-lora"), ElementsAre("default/b"));

  // Watch events: the adapter's missing pod arrives, b turns ready, the realistic pod goes.
  api_.Upsert(kPodsPath, SimplePod("later", "llama", "10.0.0.5"));
  api_.Upsert(kPodsPath, SimplePod("b", "llama", "10.0.0.2", /*ready=*/true));
  api_.Remove(kPodsPath, "default", (*store_.GetPod(realistic))->name());
  // (The three events may come in separate chunks: wait for the last one.)
  ASSERT_TRUE(Eventually([&] {
    return Keys(store_.ListPods()) == std::vector<std::string>{"default/b", "default/later"};
  }));
  EXPECT_THAT(ModelPods("sql-lora", true), ElementsAre("default/b", "default/later"));
  // The adapter's instances change; then it is deleted.
  api_.Upsert(kModelAdaptersPath, ModelAdapter("sql-lora", {"later"}));
  ASSERT_TRUE(Eventually([&] { return ModelPods("sql-lora").size() == 1; }));
  api_.Remove(kModelAdaptersPath, "default", "sql-lora");
  ASSERT_TRUE(Eventually([&] { return !store_.HasModel("sql-lora"); }));
  EXPECT_THAT(*store_.ListModelsByPod("default", "later"), ElementsAre("llama"));
}

TEST_F(ProviderTest, DeploymentLabelsAreConfigurable) {
  nlohmann::json pod = SimplePod("p", "llama", "10.0.0.1");
  pod["metadata"]["labels"]["team/deployment"] = "mine";
  pod["metadata"]["labels"]["app.kubernetes.io/name"] = "default-label";
  api_.Upsert(kPodsPath, pod);
  KubernetesOptions options = Options();
  options.informer.decode.deployment_label = "team/deployment";
  Start(std::move(options));
  EXPECT_EQ((*store_.GetPod("default/p"))->object.deployment, "mine");
}

TEST_F(ProviderTest, RelistAfterLostEventsReconcilesTheStore) {
  api_.Upsert(kPodsPath, SimplePod("a", "llama", "10.0.0.1"));
  api_.Upsert(kPodsPath, SimplePod("b", "llama", "10.0.0.2"));
  Start(Options());
  ASSERT_TRUE(Eventually([&] { return api_.OpenWatches(kPodsPath) == 1; }));
  api_.RemoveSilently(kPodsPath, "default", "a");  // its DELETED event is lost
  api_.Compact();
  api_.DropWatches();
  ASSERT_TRUE(
      Eventually([&] { return ModelPods("llama") == std::vector<std::string>{"default/b"}; }));
  EXPECT_TRUE(provider_->synced());
}

TEST_F(ProviderTest, NotSyncedUntilBothResourcesAreListed) {
  api_.FailNext(500, 1000);  // nothing can be listed
  auto provider = KubernetesProvider::Create(Options(), registry_);
  ASSERT_TRUE(provider.ok());
  provider_ = std::move(*provider);
  ASSERT_TRUE(provider_->Start(store_).ok());
  ASSERT_TRUE(Eventually([&] { return api_.Requests().size() >= 4; }));
  EXPECT_FALSE(provider_->synced());
  api_.FailNext(500, 0);
  ASSERT_TRUE(Eventually([&] { return provider_->synced(); }));
}

TEST_F(ProviderTest, StopsWhileTheServerNeverAnswers) {
  api_.Hang(true);
  auto provider = KubernetesProvider::Create(Options(), registry_);
  ASSERT_TRUE(provider.ok());
  ASSERT_TRUE((*provider)->Start(store_).ok());
  ASSERT_TRUE(Eventually([&] { return api_.Requests().size() == 2; }));
  (*provider)->Stop();  // returns although both requests are still open
  EXPECT_FALSE((*provider)->synced());
}

TEST_F(ProviderTest, BadConfigurationStopsStartUp) {
  KubernetesOptions options;
  options.kubeconfig = dir_.Write("bad", "current-context: nowhere\n");
  auto provider = KubernetesProvider::Create(options, registry_);
  ASSERT_FALSE(provider.ok());
  EXPECT_THAT(std::string(provider.status().message()), HasSubstr("no entry named 'nowhere'"));
  options.kubeconfig = dir_.Write("tls", R"(current-context: c
contexts: [{name: c, context: {cluster: k}}]
clusters: [{name: k, cluster: {server: "https://127.0.0.1:1", certificate-authority: /nonexistent/ca.pem}}]
)");
  provider = KubernetesProvider::Create(options, registry_);
  ASSERT_FALSE(provider.ok());
  EXPECT_THAT(std::string(provider.status().message()), HasSubstr("/nonexistent/ca.pem"));
}

// A watch event that adds an eligible pod makes the KV event manager (a Store listener)
// subscribe to its engine; the pod's deletion unsubscribes and clears its entries.
TEST_F(ProviderTest, WatchEventAddingAnEligiblePodSubscribesToItsKvEvents) {
  kvpublish::PublisherOptions publisher_options;
  publisher_options.endpoint = "tcp://127.0.0.1:*";
  publisher_options.replay_endpoint = "tcp://127.0.0.1:*";
  publisher_options.bind_mode = kvpublish::BindMode::kBind;
  kvpublish::Publisher publisher(publisher_options);
  ASSERT_TRUE(publisher.Start().ok());
  kvevents::testing::RecordingSink sink;
  common::FakeClock clock;
  kvevents::EventManagerOptions manager_options;
  manager_options.enabled = true;
  manager_options.subscriber.reconnect_initial = 20ms;
  manager_options.subscriber.reconnect_max = 100ms;
  manager_options.subscriber.clock = &clock;
  kvevents::EventManager manager(&store_, &sink, nullptr, manager_options);
  ASSERT_TRUE(manager.Start().ok());

  Start(Options());
  ASSERT_TRUE(Eventually([&] { return api_.OpenWatches(kPodsPath) == 1; }));
  nlohmann::json pod = SimplePod("engine", "llama", "127.0.0.1");
  pod["metadata"]["labels"]["model.aibrix.ai/kv-events-enabled"] = "true";
  pod["metadata"]["labels"]["model.aibrix.ai/kv-events-port"] = std::to_string(publisher.port());
  pod["metadata"]["labels"]["model.aibrix.ai/kv-events-replay-port"] =
      std::to_string(publisher.replay_port());
  api_.Upsert(kPodsPath, pod);
  ASSERT_TRUE(Eventually(
      [&] { return manager.SubscribedPods() == std::vector<std::string>{"default/engine"}; }));
  kv::BlockStored stored;
  stored.block_hashes = {77};
  stored.token_ids = {1, 2, 3, 4};
  stored.block_size = 4;
  kv::EventBatch batch;
  batch.events.push_back(stored);
  ASSERT_TRUE(Eventually([&] {
    EXPECT_TRUE(publisher.Publish(batch).ok());
    return sink.WaitContains(77, 100ms);
  }));
  EXPECT_EQ(sink.blocks("default/engine").count(77), 1u);

  api_.Remove(kPodsPath, "default", "engine");
  // The manager drops the subscription, then clears the pod's entries (after it is no longer
  // listed): wait for both.
  ASSERT_TRUE(Eventually([&] { return manager.SubscribedPods().empty(); }));
  EXPECT_TRUE(Eventually([&] { return sink.blocks("default/engine").empty(); }));
  manager.Stop();
}

}  // namespace
}  // namespace aibrix::discovery
