#include "aibrix/store/store.h"

#include <cmath>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "aibrix/store/test_pods.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aibrix::store {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using testing::MakePod;

template <class Pods>  // std::vector<PodRef> or PodList
std::vector<std::string> Keys(const Pods& pods) {
  std::vector<std::string> keys;
  for (const PodRef& pod : pods) keys.push_back(pod->key);
  return keys;
}

class RecordingListener : public PodListener {
 public:
  struct Change {
    std::string before;
    std::string after;
  };
  void OnPodChanged(const PodRef& before, const PodRef& after) override {
    changes.push_back({before ? before->key : "", after ? after->key : ""});
  }
  std::vector<Change> changes;
};

TEST(StoreTest, AddPodCreatesPodAndModelEntries) {
  Store store;
  EXPECT_TRUE(store.AddPod(MakePod("p1", "llama")));
  auto pod = store.GetPod("default", "p1");
  ASSERT_TRUE(pod.ok());
  EXPECT_EQ((*pod)->key, "default/p1");
  EXPECT_EQ((*pod)->object.ip, "10.0.0.1");
  EXPECT_TRUE((*pod)->ready);
  EXPECT_TRUE(store.HasModel("llama"));
  EXPECT_THAT(store.ListModels(), ElementsAre("llama"));
  auto by_model = store.ListPodsByModel("llama");
  ASSERT_TRUE(by_model.ok());
  EXPECT_THAT(Keys((*by_model)->pods), ElementsAre("default/p1"));
  EXPECT_THAT(Keys(store.ListPods()), ElementsAre("default/p1"));
  auto models = store.ListModelsByPod("default", "p1");
  ASSERT_TRUE(models.ok());
  EXPECT_THAT(*models, ElementsAre("llama"));
}

TEST(StoreTest, MissingEntriesReportTheKey) {
  Store store;
  auto pod = store.GetPod("ns", "missing");
  EXPECT_EQ(pod.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(pod.status().message(), "key does not exist in the cache: ns/missing");
  auto model = store.ListPodsByModel("m");
  EXPECT_EQ(model.status().message(), "model does not exist in the cache: m");
  EXPECT_FALSE(store.HasModel("m"));
  EXPECT_EQ(store.ReadyPods("m"), nullptr);
  EXPECT_FALSE(store.ListModelsByPod("ns", "missing").ok());
}

TEST(StoreTest, IgnoresPodsWithoutModelAndWorkerPods) {
  Store store;
  EXPECT_FALSE(store.AddPod(MakePod("nomodel", "")));
  PodObject worker = MakePod("worker", "llama");
  worker.labels[kRayNodeTypeLabel] = "worker";
  EXPECT_FALSE(store.AddPod(worker));
  PodObject grouped = MakePod("grouped", "llama");
  grouped.labels[kPodGroupIndexLabel] = "2";
  EXPECT_FALSE(store.AddPod(grouped));
  EXPECT_THAT(store.ListPods(), IsEmpty());
  EXPECT_THAT(store.ListModels(), IsEmpty());
}

TEST(StoreTest, ModelNameFromAnnotationAllowsSlashes) {
  Store store;
  PodObject pod = MakePod("p1", "");
  pod.annotations[kModelNameLabel] = "meta-llama/Llama-3.1-8B";
  EXPECT_TRUE(store.AddPod(pod));
  EXPECT_TRUE(store.HasModel("meta-llama/Llama-3.1-8B"));
}

TEST(StoreTest, PodBecomesCachedOnlyWhenGroupIndexDropsToZero) {
  Store store;
  PodObject pod = MakePod("p1", "llama");
  pod.labels[kPodGroupIndexLabel] = "1";
  EXPECT_FALSE(store.AddPod(pod));
  pod.labels[kPodGroupIndexLabel] = "0";
  EXPECT_TRUE(store.UpdatePod(pod));
  EXPECT_TRUE(store.GetPod("default", "p1").ok());
  pod.labels[kPodGroupIndexLabel] = "3";
  EXPECT_FALSE(store.UpdatePod(pod));
  EXPECT_FALSE(store.GetPod("default", "p1").ok());
  EXPECT_FALSE(store.HasModel("llama"));
}

TEST(StoreTest, UpdatePodMovesModelMappingAndDropsEmptyModels) {
  Store store;
  store.AddPod(MakePod("p1", "old-model"));
  store.UpdatePod(MakePod("p1", "new-model", "10.0.0.9"));
  EXPECT_FALSE(store.HasModel("old-model"));
  EXPECT_TRUE(store.HasModel("new-model"));
  EXPECT_EQ((*store.GetPod("default", "p1"))->object.ip, "10.0.0.9");
}

TEST(StoreTest, UpdateOfAStayingPodKeepsCountersAndAdapters) {
  Store store;
  store.AddPod(MakePod("p1", "llama"));
  store.AddModelAdapter({"default", "sql-lora", {"p1"}});
  ASSERT_TRUE(store.AddRequest("r1", "default/p1", "llama").ok());
  PodObject updated = MakePod("p1", "llama");
  updated.labels["extra"] = "label";
  store.UpdatePod(updated);
  auto pod = *store.GetPod("default", "p1");
  EXPECT_EQ(pod->state->running(), 1);
  EXPECT_THAT(pod->models, ElementsAre("llama", "sql-lora"));
  ASSERT_TRUE(store.DoneRequest("r1").ok());
  EXPECT_EQ(pod->state->running(), 0);
  EXPECT_EQ(pod->state->completed(), 1);
}

TEST(StoreTest, ExpiredRequestsAreSettledOnceAndOthersStay) {
  Store store;
  store.AddPod(MakePod("p1", "llama"));
  auto pod = *store.GetPod("default", "p1");
  const auto now = std::chrono::steady_clock::now();
  ASSERT_TRUE(store.AddRequest("old", pod, store.ReadyPods("llama"), {.expires = now}).ok());
  ASSERT_TRUE(store
                  .AddRequest("young", pod, store.ReadyPods("llama"),
                              {.expires = now + std::chrono::hours(1)})
                  .ok());
  ASSERT_TRUE(store.AddRequest("forever", pod, store.ReadyPods("llama")).ok());
  EXPECT_EQ(pod->state->running(), 3);
  auto expired = store.ExpireRequests(now);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].model->name(), "llama");
  EXPECT_EQ(pod->state->running(), 2);
  EXPECT_FALSE(store.DoneRequest("old").ok());  // settled once
  EXPECT_TRUE(store.ExpireRequests(now).empty());
  EXPECT_TRUE(store.DoneRequest("young").ok());
  EXPECT_TRUE(store.DoneRequest("forever").ok());
  EXPECT_EQ(pod->state->running(), 0);
}

TEST(StoreTest, DoneAfterSameNamePodRecreationDoesNotTouchTheNewPod) {
  Store store;
  store.AddPod(MakePod("p1", "llama"));
  ASSERT_TRUE(store.AddRequest("r1", "default/p1", "llama").ok());
  auto old_pod = *store.GetPod("default", "p1");
  store.DeletePod("default", "p1");
  PodObject recreated = MakePod("p1", "llama");
  recreated.uid = "uid-new";
  store.AddPod(recreated);
  auto new_pod = *store.GetPod("default", "p1");
  EXPECT_NE(old_pod->state, new_pod->state);
  EXPECT_EQ(new_pod->state->running(), 0);
  ASSERT_TRUE(store.DoneRequest("r1").ok());
  EXPECT_EQ(old_pod->state->running(), 0);
  EXPECT_EQ(old_pod->state->completed(), 1);
  EXPECT_EQ(new_pod->state->running(), 0);
  EXPECT_EQ(new_pod->state->completed(), 0);
}

TEST(StoreTest, UidChangeOnUpdateStartsFreshState) {
  Store store;
  store.AddPod(MakePod("p1", "llama"));
  ASSERT_TRUE(store.AddRequest("r1", "default/p1", "llama").ok());
  PodObject replaced = MakePod("p1", "llama");
  replaced.uid = "other";
  store.UpdatePod(replaced);
  EXPECT_EQ((*store.GetPod("default", "p1"))->state->running(), 0);
}

TEST(StoreTest, DeletePodClearsPodModelAndAdapterEntries) {
  Store store;
  store.AddPod(MakePod("p1", "llama"));
  store.AddModelAdapter({"default", "sql-lora", {"p1"}});
  EXPECT_TRUE(store.HasModel("sql-lora"));
  EXPECT_TRUE(store.DeletePod("default", "p1"));
  EXPECT_FALSE(store.DeletePod("default", "p1"));
  EXPECT_THAT(store.ListPods(), IsEmpty());
  EXPECT_THAT(store.ListModels(), IsEmpty());
}

TEST(StoreTest, AdapterBeforePodIsMappedWhenThePodArrives) {
  Store store;
  store.AddModelAdapter({"default", "sql-lora", {"p1"}});
  EXPECT_FALSE(store.HasModel("sql-lora"));
  store.AddPod(MakePod("p1", "llama"));
  EXPECT_TRUE(store.HasModel("sql-lora"));
  EXPECT_THAT(Keys((*store.ListPodsByModel("sql-lora"))->pods), ElementsAre("default/p1"));
}

TEST(StoreTest, AdapterUpdateResetsAndDeleteRemovesMappings) {
  Store store;
  store.AddPod(MakePod("p1", "llama", "10.0.0.1"));
  store.AddPod(MakePod("p2", "llama", "10.0.0.2"));
  store.AddModelAdapter({"default", "lora", {"p1"}});
  store.UpdateModelAdapter({"default", "lora", {"p2"}});
  EXPECT_THAT(Keys((*store.ListPodsByModel("lora"))->pods), ElementsAre("default/p2"));
  EXPECT_THAT(*store.ListModelsByPod("default", "p1"), ElementsAre("llama"));
  store.DeleteModelAdapter("default", "lora");
  EXPECT_FALSE(store.HasModel("lora"));
  EXPECT_THAT(*store.ListModelsByPod("default", "p2"), ElementsAre("llama"));
}

TEST(StoreTest, AdapterInOtherNamespaceDoesNotMap) {
  Store store;
  store.AddPod(MakePod("p1", "llama"));
  store.AddModelAdapter({"other", "lora", {"p1"}});
  EXPECT_FALSE(store.HasModel("lora"));
}

TEST(StoreTest, ReadySnapshotFiltersUnreadyPodsAndIsShared) {
  Store store;
  store.AddPod(MakePod("p1", "llama", "10.0.0.1"));
  PodObject unready = MakePod("p2", "llama", "10.0.0.2");
  unready.ready_condition = false;
  store.AddPod(unready);
  PodObject terminating = MakePod("p3", "llama", "10.0.0.3");
  terminating.deletion_timestamp = "2026-01-01T00:00:00Z";
  store.AddPod(terminating);
  PodObject no_ip = MakePod("p4", "llama", "");
  store.AddPod(no_ip);
  ModelPodsRef snap = store.ReadyPods("llama");
  ASSERT_NE(snap, nullptr);
  EXPECT_THAT(Keys(snap->pods),
              ElementsAre("default/p1", "default/p2", "default/p3", "default/p4"));
  EXPECT_THAT(Keys(snap->ready), ElementsAre("default/p1"));
  EXPECT_EQ(store.ReadyPods("llama").get(), snap.get());  // no copy per call
  unready.ready_condition = true;
  store.UpdatePod(unready);
  EXPECT_THAT(Keys(snap->ready), ElementsAre("default/p1"));  // old snapshot is immutable
  EXPECT_THAT(Keys(store.ReadyPods("llama")->ready), ElementsAre("default/p1", "default/p2"));
}

TEST(StoreTest, RequestCountedOnceEvenWhenDoneTwice) {
  Store store;
  store.AddPod(MakePod("p1", "llama"));
  auto pod = *store.GetPod("default", "p1");
  auto model = store.ReadyPods("llama");
  ASSERT_TRUE(store.AddRequest("r1", "default/p1", "llama").ok());
  EXPECT_EQ(store.AddRequest("r1", "default/p1", "llama").code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(pod->state->running(), 1);
  EXPECT_EQ(model->state->pending(), 1);
  auto settled = store.DoneRequest("r1");
  ASSERT_TRUE(settled.ok());
  ASSERT_NE(settled->model, nullptr);
  EXPECT_EQ(settled->model->name(), "llama");
  EXPECT_EQ(settled->pod, pod->state);
  EXPECT_EQ(store.DoneRequest("r1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(pod->state->running(), 0);
  EXPECT_EQ(pod->state->completed(), 1);
  EXPECT_EQ(model->state->pending(), 0);
  EXPECT_EQ(store.InFlightRequests(), 0u);
}

TEST(StoreTest, AddRequestForUnknownPodFails) {
  Store store;
  EXPECT_EQ(store.AddRequest("r1", "default/none", "llama").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store.InFlightRequests(), 0u);
}

TEST(StoreTest, PerPortRunningCountsThatPortOnly) {
  Store store;
  PodObject pod = MakePod("dp", "llama");
  pod.labels[kPortLabel] = "8000";
  pod.containers[0].env.push_back({"data-parallel-size", "2"});
  store.AddPod(pod);
  ASSERT_TRUE(store.AddRequest("a", "default/dp", "llama", 8000).ok());
  ASSERT_TRUE(store.AddRequest("b", "default/dp", "llama", 8001).ok());
  ASSERT_TRUE(store.AddRequest("c", "default/dp", "llama", 8001).ok());
  auto state = (*store.GetPod("default", "dp"))->state;
  EXPECT_EQ(state->running(), 3);
  EXPECT_EQ(state->running_on_port(8000), 1);
  EXPECT_EQ(state->running_on_port(8001), 2);
  ASSERT_TRUE(store.DoneRequest("b").ok());
  EXPECT_EQ(state->running_on_port(8001), 1);
}

TEST(StoreTest, PendingLoadIsAddedPerRequestAndReturnsExactlyToZero) {
  Store store;
  store.AddPod(MakePod("p1", "llama"));
  auto pod = *store.GetPod("default", "p1");
  auto model = store.ReadyPods("llama");
  ASSERT_TRUE(store.AddRequest("a", pod, model, {.pending_load = 0.1}).ok());
  ASSERT_TRUE(store.AddRequest("b", pod, model, {.pending_load = 0.2}).ok());
  EXPECT_NEAR(pod->state->pending_load(), 0.3, 1e-9);
  // A second add of the same id is refused and adds no load.
  EXPECT_FALSE(store.AddRequest("a", pod, model, {.pending_load = 5.0}).ok());
  EXPECT_NEAR(pod->state->pending_load(), 0.3, 1e-9);
  // Broken loads count as none.
  ASSERT_TRUE(store.AddRequest("nan", pod, model, {.pending_load = std::nan("")}).ok());
  ASSERT_TRUE(store.AddRequest("neg", pod, model, {.pending_load = -1}).ok());
  EXPECT_NEAR(pod->state->pending_load(), 0.3, 1e-9);
  for (const char* id : {"a", "b", "nan", "neg"}) ASSERT_TRUE(store.DoneRequest(id).ok());
  EXPECT_EQ(pod->state->pending_load(), 0.0);
}

TEST(StoreTest, PrefillTokensCountUntilTheAnswerBeginsOrTheRequestSettles) {
  Store store;
  store.AddPod(MakePod("p1", "llama"));
  auto pod = *store.GetPod("default", "p1");
  auto model = store.ReadyPods("llama");
  ASSERT_TRUE(store.AddRequest("a", pod, model, {.prefill_tokens = 1000}).ok());
  ASSERT_TRUE(store.AddRequest("b", pod, model, {.prefill_tokens = 300}).ok());
  ASSERT_TRUE(store.AddRequest("neg", pod, model, {.prefill_tokens = -5}).ok());  // counts 0
  EXPECT_EQ(pod->state->pending_prefill_tokens(), 1300);
  // A refused duplicate adds nothing.
  EXPECT_FALSE(store.AddRequest("a", pod, model, {.prefill_tokens = 50}).ok());
  EXPECT_EQ(pod->state->pending_prefill_tokens(), 1300);

  // The answer began: a's tokens leave at once, and only once.
  ASSERT_TRUE(store.PrefillDone("a").ok());
  EXPECT_EQ(pod->state->pending_prefill_tokens(), 300);
  ASSERT_TRUE(store.PrefillDone("a").ok());
  EXPECT_EQ(pod->state->pending_prefill_tokens(), 300);
  EXPECT_EQ(pod->state->running(), 3);  // still in flight
  // Settling a after PrefillDone releases nothing twice; settling b releases its tokens.
  ASSERT_TRUE(store.DoneRequest("a").ok());
  EXPECT_EQ(pod->state->pending_prefill_tokens(), 300);
  ASSERT_TRUE(store.DoneRequest("b").ok());
  EXPECT_EQ(pod->state->pending_prefill_tokens(), 0);
  EXPECT_EQ(store.PrefillDone("b").code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(store.DoneRequest("neg").ok());
  EXPECT_EQ(pod->state->pending_prefill_tokens(), 0);
}

TEST(StoreTest, TotalRunningAddsOtherReplicasReports) {
  Store store;
  store.AddPod(MakePod("p1", "llama"));
  auto pod = *store.GetPod("default", "p1");
  ASSERT_TRUE(store.AddRequest("a", "default/p1", "llama").ok());
  pod->state->set_remote_running(4);
  EXPECT_EQ(pod->state->running(), 1);
  EXPECT_EQ(pod->state->remote_running(), 4);
  EXPECT_EQ(pod->state->total_running(), 5);
}

TEST(StoreTest, MetricsByPodAndModel) {
  Store store;
  store.AddPod(MakePod("p1", "llama"));
  const PodRef pod = store.GetPod("default/p1").value();
  EXPECT_FALSE(pod->state->Metric("num_requests_running").has_value());
  ASSERT_TRUE(store.SetPodMetric("default/p1", "num_requests_running", {SimpleMetric{3, {}}}).ok());
  ASSERT_TRUE(
      store.SetPodModelMetric("default/p1", "llama", "kv_cache_usage_perc", {SimpleMetric{0.5, {}}})
          .ok());
  EXPECT_EQ(pod->state->Metric("num_requests_running")->Simple(), 3);
  EXPECT_EQ(pod->state->ModelMetric("llama", "kv_cache_usage_perc")->Simple(), 0.5);
  EXPECT_FALSE(pod->state->ModelMetric("other", "kv_cache_usage_perc").has_value());
  EXPECT_FALSE(store.SetPodMetric("default/none", "x", {SimpleMetric{1, {}}}).ok());
  // Metrics survive an update of the same pod.
  PodObject updated = MakePod("p1", "llama");
  updated.labels["x"] = "y";
  store.UpdatePod(updated);
  EXPECT_EQ(store.GetPod("default/p1").value()->state->Metric("num_requests_running")->Simple(), 3);
}

TEST(StoreTest, ModelClaimsMapServedModels) {
  Store store;
  PodObject warm = MakePod("warm", "");
  warm.annotations["modelclaim.aibrix.ai/a"] = R"({"model":"m1","port":9001})";
  warm.annotations["modelclaim.aibrix.ai/b"] = R"({"model":"m2","port":9002,"state":"active"})";
  warm.annotations["modelclaim.aibrix.ai/c"] = R"({"model":"m3","port":0,"state":"sleeping"})";
  warm.annotations["modelclaim.aibrix.ai/bad"] = R"({"model":"m4","port":0,"state":"active"})";
  warm.annotations["modelclaim.aibrix.ai/junk"] = "not json";
  EXPECT_TRUE(store.AddPod(warm));
  EXPECT_THAT(store.ListModels(), ElementsAre("m1", "m2"));
  warm.annotations.erase("modelclaim.aibrix.ai/a");
  store.UpdatePod(warm);
  EXPECT_THAT(store.ListModels(), ElementsAre("m2"));
}

TEST(StoreTest, ListenersSeeAddUpdateDeleteInOrderAndNotNoOps) {
  Store store;
  RecordingListener listener;
  store.AddListener(&listener);
  store.AddPod(MakePod("p1", "llama"));
  store.AddPod(MakePod("p1", "llama"));  // identical: no change
  store.UpdatePod(MakePod("p1", "llama", "10.0.0.2"));
  store.DeletePod("default", "p1");
  store.RemoveListener(&listener);
  store.AddPod(MakePod("p2", "llama"));
  ASSERT_EQ(listener.changes.size(), 3u);
  EXPECT_EQ(listener.changes[0].before, "");
  EXPECT_EQ(listener.changes[0].after, "default/p1");
  EXPECT_EQ(listener.changes[1].before, "default/p1");
  EXPECT_EQ(listener.changes[1].after, "default/p1");
  EXPECT_EQ(listener.changes[2].before, "default/p1");
  EXPECT_EQ(listener.changes[2].after, "");
}

TEST(StoreTest, ApplyPublishesABatchAsOneSnapshot) {
  Store store;
  store.AddPod(MakePod("old", "llama"));
  RecordingListener listener;
  store.AddListener(&listener);
  const uint64_t version = store.snapshot()->version;
  std::vector<StoreWrite> writes;
  writes.push_back(ModelAdapterObject{"default", "lora", {"p1", "p2", "p1"}});  // before its pods
  for (int i = 0; i < 3; ++i) writes.push_back(MakePod(absl::StrCat("p", i), "llama"));
  writes.push_back(PodDeletion{"default", "old"});
  writes.push_back(MakePod("p0", "llama", "10.9.9.9"));  // replaced within the batch
  writes.push_back(PodDeletion{"default", "never-there"});
  store.Apply(std::move(writes));
  store.RemoveListener(&listener);
  EXPECT_EQ(store.snapshot()->version, version + 1);
  EXPECT_EQ(listener.changes.size(), 4u);  // p0, p1, p2 added, old deleted: once each
  EXPECT_THAT(Keys(store.ListPods()), ElementsAre("default/p0", "default/p1", "default/p2"));
  EXPECT_EQ((*store.GetPod("default/p0"))->ip(), "10.9.9.9");
  EXPECT_THAT(Keys((*store.ListPodsByModel("lora"))->pods),
              ElementsAre("default/p1", "default/p2"));
  store.Apply({ModelAdapterDeletion{"default", "lora"}, PodDeletion{"default", "p1"}});
  EXPECT_FALSE(store.HasModel("lora"));
  EXPECT_THAT(Keys(store.ReadyPods("llama")->pods), ElementsAre("default/p0", "default/p2"));
}

TEST(StoreTest, SnapshotsShareWhatAChangeDoesNotTouch) {
  Store store;
  for (int i = 0; i < 300; ++i) {
    store.AddPod(MakePod(absl::StrCat("a", i), "model-a"));
    store.AddPod(MakePod(absl::StrCat("b", i), "model-b"));
  }
  SnapshotRef before = store.snapshot();
  PodObject changed = MakePod("a7", "model-a", "10.7.7.7");
  store.UpdatePod(changed);
  SnapshotRef after = store.snapshot();
  // The other model's pod set and the other pods' records are the same objects.
  EXPECT_EQ(before->models.Find("model-b")->get(), after->models.Find("model-b")->get());
  EXPECT_EQ(before->pods.Find("default/a8")->get(), after->pods.Find("default/a8")->get());
  EXPECT_NE(before->models.Find("model-a")->get(), after->models.Find("model-a")->get());
  EXPECT_EQ((*before->pods.Find("default/a7"))->ip(), "10.0.0.1");
  EXPECT_EQ((*after->pods.Find("default/a7"))->ip(), "10.7.7.7");
  EXPECT_EQ(after->pods.size(), 600u);
  EXPECT_EQ((*after->models.Find("model-a"))->pods.size(), 300u);
  // Within the changed model, the chunks of its lists away from the change are shared:
  // "default/a0" is first, "default/a7" at position 267.
  const ModelPods& model_before = **before->models.Find("model-a");
  const ModelPods& model_after = **after->models.Find("model-a");
  EXPECT_EQ(&model_before.pods.front(), &model_after.pods.front());
  EXPECT_EQ(&model_before.ready.front(), &model_after.ready.front());
  EXPECT_NE(model_before.pods[267], model_after.pods[267]);
  EXPECT_EQ(model_after.pods[267]->ip(), "10.7.7.7");
}

// Random writes, checked after each against the whole state recomputed from scratch: the
// incremental publication must agree with a full rebuild.
TEST(StoreTest, IncrementalSnapshotsMatchAFullRebuild) {
  std::mt19937 rng(7);
  Store store;
  std::map<std::string, PodObject> pods;                     // what the store should hold
  std::map<std::string, std::vector<std::string>> adapters;  // adapter name -> instances
  const auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  const std::vector<std::string> models = {"m0", "m1", "m2", ""};
  for (int step = 0; step < 3000; ++step) {
    std::vector<StoreWrite> writes;
    for (int w = 1 + pick(4); w > 0; --w) {
      const std::string name = "p" + std::to_string(pick(40));
      switch (pick(5)) {
        case 0:
        case 1: {
          PodObject pod = MakePod(name, models[pick(4)], "10.0.0." + std::to_string(pick(3)));
          pod.ready_condition = pick(2) == 0;
          if (PodModelName(pod).empty()) {
            pods.erase("default/" + name);
          } else {
            pods["default/" + name] = pod;
          }
          writes.push_back(std::move(pod));
          break;
        }
        case 2:
          pods.erase("default/" + name);
          writes.push_back(PodDeletion{"default", name});
          break;
        case 3: {
          const std::string adapter = "lora" + std::to_string(pick(3));
          std::vector<std::string> instances;
          for (int k = pick(4); k > 0; --k) instances.push_back("p" + std::to_string(pick(40)));
          adapters[adapter] = instances;
          writes.push_back(ModelAdapterObject{"default", adapter, instances});
          break;
        }
        default: {
          const std::string adapter = "lora" + std::to_string(pick(3));
          adapters.erase(adapter);
          writes.push_back(ModelAdapterDeletion{"default", adapter});
          break;
        }
      }
    }
    store.Apply(std::move(writes));

    std::map<std::string, std::set<std::string>> want_models;  // model -> pod keys
    std::map<std::string, std::set<std::string>> want_ready;
    for (const auto& [key, pod] : pods) {
      std::set<std::string> mapped = {PodModelName(pod)};
      for (const auto& [adapter, instances] : adapters) {
        if (std::find(instances.begin(), instances.end(), pod.name) != instances.end()) {
          mapped.insert(adapter);
        }
      }
      for (const std::string& model : mapped) {
        want_models[model].insert(key);
        if (IsPodReady(pod)) want_ready[model].insert(key);
      }
      auto got = store.GetPod(key);
      ASSERT_TRUE(got.ok()) << "step " << step << " " << key;
      ASSERT_EQ((*got)->object, pod) << "step " << step;
      ASSERT_EQ((*got)->models, std::vector<std::string>(mapped.begin(), mapped.end()));
    }
    SnapshotRef snap = store.snapshot();
    ASSERT_EQ(snap->pods.size(), pods.size()) << "step " << step;
    ASSERT_EQ(snap->models.size(), want_models.size()) << "step " << step;
    for (const auto& [model, keys] : want_models) {
      const ModelPodsRef* got = snap->models.Find(model);
      ASSERT_NE(got, nullptr) << "step " << step << " " << model;
      ASSERT_EQ(Keys((*got)->pods), std::vector<std::string>(keys.begin(), keys.end()))
          << "step " << step << " " << model;
      const auto& ready = want_ready[model];
      ASSERT_EQ(Keys((*got)->ready), std::vector<std::string>(ready.begin(), ready.end()));
      for (const PodRef& pod : (*got)->pods) {
        ASSERT_EQ(pod.get(), snap->pods.Find(pod->key)->get());  // one record per pod
      }
    }
  }
}

TEST(StoreTest, ConcurrentAddDoneLeavesCountsAtZero) {
  Store store;
  for (int i = 0; i < 4; ++i) store.AddPod(MakePod(absl::StrCat("p", i), "llama"));
  constexpr int kThreads = 8;
  constexpr int kRequests = 5000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&store, t] {
      for (int i = 0; i < kRequests; ++i) {
        std::string id = std::to_string(t) + "-" + std::to_string(i);
        std::string pod = "default/p" + std::to_string(i % 4);
        ASSERT_TRUE(store.AddRequest(id, pod, "llama").ok());
        ASSERT_TRUE(store.DoneRequest(id).ok());
        EXPECT_FALSE(store.DoneRequest(id).ok());
      }
    });
  }
  // Readers and a writer race the request traffic.
  std::thread writer([&store] {
    for (int i = 0; i < 200; ++i) {
      store.AddPod(MakePod("churn", "llama", "10.1.0." + std::to_string(i % 250)));
      store.AddModelAdapter({"default", "lora", {"p0", "churn"}});
      store.DeletePod("default", "churn");
    }
  });
  std::thread reader([&store] {
    for (int i = 0; i < 2000; ++i) {
      auto pods = store.ReadyPods("llama");
      ASSERT_NE(pods, nullptr);
      EXPECT_GE(pods->ready.size(), 4u);
      store.ListModels();
    }
  });
  for (auto& thread : threads) thread.join();
  writer.join();
  reader.join();
  EXPECT_EQ(store.InFlightRequests(), 0u);
  int64_t completed = 0;
  for (const PodRef& pod : store.ListPods()) {
    EXPECT_EQ(pod->state->running(), 0);
    completed += pod->state->completed();
  }
  EXPECT_EQ(completed, kThreads * kRequests);
  EXPECT_EQ(store.ReadyPods("llama")->state->pending(), 0);
}

}  // namespace
}  // namespace aibrix::store
