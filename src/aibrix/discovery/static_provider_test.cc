#include "aibrix/discovery/static_provider.h"

#include <cstdio>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "tests/util/poll.h"
#include "tests/util/temp_dir.h"

namespace aibrix::discovery {
namespace {

using ::testing::ElementsAre;
using testing::Eventually;
using ::testing::HasSubstr;

// Records every change the Store announces, as "+key", "~key" or "-key".
class ChangeLog : public store::PodListener {
 public:
  void OnPodChanged(const store::PodRef& before, const store::PodRef& after) override {
    common::MutexLock lock(&mu_);
    if (before == nullptr) {
      changes_.push_back("+" + after->key);
    } else if (after == nullptr) {
      changes_.push_back("-" + before->key);
    } else {
      changes_.push_back("~" + after->key);
    }
  }
  std::vector<std::string> Take() {
    common::MutexLock lock(&mu_);
    return std::exchange(changes_, {});
  }

 private:
  common::Mutex mu_;
  std::vector<std::string> changes_ ABSL_GUARDED_BY(mu_);
};

std::vector<std::string> PodKeys(const store::Store& store) {
  std::vector<std::string> keys;
  for (const store::PodRef& pod : store.ListPods()) keys.push_back(pod->key);
  return keys;
}

std::vector<std::string> PodsOf(const store::Store& store, const std::string& model) {
  std::vector<std::string> keys;
  auto pods = store.ListPodsByModel(model);
  if (!pods.ok()) return keys;
  for (const store::PodRef& pod : (*pods)->pods) keys.push_back(pod->key);
  return keys;
}

double CounterValue(prometheus::Registry& registry, const std::string& name) {
  for (const auto& family : registry.Collect()) {
    if (family.name == name && !family.metric.empty()) return family.metric[0].counter.value;
  }
  return -1;
}

// Replaces the file the way editors do (write a temporary file, rename it over).
void Replace(const testing::TempDir& dir, const std::string& text) {
  const std::string tmp = dir.Write("static.yaml.tmp", text);
  ASSERT_EQ(std::rename(tmp.c_str(), dir.File("static.yaml").c_str()), 0);
}

constexpr char kTwoEndpoints[] = R"(models:
  - name: llama
    endpoints:
      - "10.0.0.1:8000"
      - address: "10.0.0.2:8000"
        adapters: [sql-lora]
)";

TEST(StaticProviderTest, FileNotFoundAndStartAddsPodsAndAdapters) {
  auto missing = StaticProvider::FromFile("/nonexistent/static.yaml");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  const testing::TempDir dir("static-provider");
  auto provider = StaticProvider::FromFile(dir.Write("static.yaml", kTwoEndpoints));
  ASSERT_TRUE(provider.ok()) << provider.status();
  EXPECT_EQ((*provider)->type(), "static");
  store::Store store;
  EXPECT_EQ((*provider)->Reload().code(), absl::StatusCode::kFailedPrecondition);  // not started
  ASSERT_TRUE((*provider)->Start(store).ok());
  auto pods = store.ReadyPods("llama");
  ASSERT_NE(pods, nullptr);
  EXPECT_EQ(pods->ready.size(), 2u);
  EXPECT_THAT(PodsOf(store, "sql-lora"), ElementsAre("standalone/llama-10-0-0-2-1"));
}

TEST(StaticProviderTest, ReloadAppliesTheDifferenceAsPodEvents) {
  const testing::TempDir dir("static-reload");
  prometheus::Registry registry;
  StaticProviderOptions options;
  options.registry = &registry;
  auto provider = StaticProvider::FromFile(dir.Write("static.yaml", R"(models:
  - name: llama
    endpoints: ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"]
)"),
                                           options);
  ASSERT_TRUE(provider.ok()) << provider.status();
  store::Store store;
  ChangeLog log;
  store.AddListener(&log);
  ASSERT_TRUE((*provider)->Start(store).ok());
  EXPECT_EQ(log.Take().size(), 3u);

  // Endpoint 1 gets KV events (changed), endpoint 2 stays, endpoint 3 goes, a new one comes.
  Replace(dir, R"(models:
  - name: llama
    endpoints:
      - address: "10.0.0.1:8000"
        kv_events: true
      - "10.0.0.2:8000"
      - "10.0.0.9:8000"
)");
  ASSERT_TRUE((*provider)->Reload().ok());
  EXPECT_THAT(log.Take(),
              ElementsAre("-standalone/llama-10-0-0-3-2", "~standalone/llama-10-0-0-1-0",
                          "+standalone/llama-10-0-0-9-2"));
  EXPECT_THAT(PodKeys(store),
              ElementsAre("standalone/llama-10-0-0-1-0", "standalone/llama-10-0-0-2-1",
                          "standalone/llama-10-0-0-9-2"));
  auto changed = store.GetPod("standalone/llama-10-0-0-1-0");
  ASSERT_TRUE(changed.ok());
  EXPECT_TRUE(store::PodKvEventsEnabled((*changed)->object));

  // The same file again: a reload with nothing to change.
  ASSERT_TRUE((*provider)->Reload().ok());
  EXPECT_TRUE(log.Take().empty());
  EXPECT_EQ((*provider)->reloads(), 2u);
  EXPECT_EQ(CounterValue(registry, "aibrix_discovery_config_reloads_total"), 2);
  EXPECT_EQ(CounterValue(registry, "aibrix_discovery_config_reload_errors_total"), 0);
  store.RemoveListener(&log);
}

TEST(StaticProviderTest, BadFileKeepsTheStateAndIsCounted) {
  const testing::TempDir dir("static-bad");
  prometheus::Registry registry;
  StaticProviderOptions options;
  options.registry = &registry;
  auto provider = StaticProvider::FromFile(dir.Write("static.yaml", kTwoEndpoints), options);
  ASSERT_TRUE(provider.ok());
  store::Store store;
  ASSERT_TRUE((*provider)->Start(store).ok());
  const auto before = PodKeys(store);

  Replace(dir, "models:\n  - name: llama\n    endpoints:\n      - address: \"10.0.0.1:0\"\n");
  absl::Status st = (*provider)->Reload();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()),
              HasSubstr(dir.File("static.yaml") + ":4: field 'models[0].endpoints[0].address'"));
  EXPECT_EQ(PodKeys(store), before);
  EXPECT_THAT(PodsOf(store, "sql-lora"), ElementsAre("standalone/llama-10-0-0-2-1"));

  std::remove(dir.File("static.yaml").c_str());  // unreadable: refused the same way
  EXPECT_EQ((*provider)->Reload().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(PodKeys(store), before);
  EXPECT_EQ((*provider)->reload_errors(), 2u);
  EXPECT_EQ(CounterValue(registry, "aibrix_discovery_config_reload_errors_total"), 2);
  EXPECT_EQ(CounterValue(registry, "aibrix_discovery_config_reloads_total"), 0);
}

TEST(StaticProviderTest, AdaptersFollowTheFile) {
  const testing::TempDir dir("static-adapters");
  auto provider = StaticProvider::FromFile(dir.Write("static.yaml", kTwoEndpoints));
  ASSERT_TRUE(provider.ok());
  store::Store store;
  ASSERT_TRUE((*provider)->Start(store).ok());

  // sql-lora moves to both endpoints, chat-lora appears on the first.
  Replace(dir, R"(models:
  - name: llama
    endpoints:
      - address: "10.0.0.1:8000"
        adapters: [sql-lora, chat-lora]
      - address: "10.0.0.2:8000"
        adapters: [sql-lora]
)");
  ASSERT_TRUE((*provider)->Reload().ok());
  EXPECT_THAT(PodsOf(store, "sql-lora"),
              ElementsAre("standalone/llama-10-0-0-1-0", "standalone/llama-10-0-0-2-1"));
  EXPECT_THAT(PodsOf(store, "chat-lora"), ElementsAre("standalone/llama-10-0-0-1-0"));
  auto models = store.ListModelsByPod("standalone", "llama-10-0-0-1-0");
  ASSERT_TRUE(models.ok());
  EXPECT_THAT(*models, ElementsAre("chat-lora", "llama", "sql-lora"));

  // Both gone: the adapters' model entries go with them; the base model stays.
  Replace(dir, "models:\n  - name: llama\n    endpoints: [\"10.0.0.1:8000\", \"10.0.0.2:8000\"]\n");
  ASSERT_TRUE((*provider)->Reload().ok());
  EXPECT_FALSE(store.HasModel("sql-lora"));
  EXPECT_FALSE(store.HasModel("chat-lora"));
  EXPECT_EQ(PodsOf(store, "llama").size(), 2u);
}

TEST(StaticProviderTest, WatchedFileChangesReachTheStore) {
  const testing::TempDir dir("static-watch");
  prometheus::Registry registry;
  StaticProviderOptions options;
  options.watch = true;
  options.debounce = std::chrono::milliseconds(20);
  options.registry = &registry;
  auto provider = StaticProvider::FromFile(dir.Write("static.yaml", kTwoEndpoints), options);
  ASSERT_TRUE(provider.ok());
  store::Store store;
  ASSERT_TRUE((*provider)->Start(store).ok());

  Replace(dir, "models:\n  - name: mistral\n    endpoints: [\"10.0.0.5:8000\"]\n");
  EXPECT_TRUE(Eventually([&] { return store.HasModel("mistral") && !store.HasModel("llama"); }));
  EXPECT_THAT(PodKeys(store), ElementsAre("standalone/mistral-10-0-0-5-0"));

  // A bad version written in place is refused and counted; the good state stays.
  dir.Write("static.yaml", "models:\n  - name: mistral\n    endpoints: [\"10.0.0.5:8000\"\n");
  EXPECT_TRUE(Eventually([&] { return (*provider)->reload_errors() == 1; }));
  EXPECT_THAT(PodKeys(store), ElementsAre("standalone/mistral-10-0-0-5-0"));

  dir.Write("static.yaml", "models:\n  - name: mistral\n    endpoints: [\"10.0.0.6:8000\"]\n");
  EXPECT_TRUE(Eventually(
      [&] { return PodKeys(store) == std::vector<std::string>{"standalone/mistral-10-0-0-6-0"}; }));
  EXPECT_EQ(CounterValue(registry, "aibrix_discovery_config_reload_errors_total"), 1);
  (*provider)->Stop();
  (*provider)->Stop();
}

}  // namespace
}  // namespace aibrix::discovery
