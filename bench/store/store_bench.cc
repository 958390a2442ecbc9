// Store hot paths: the request-tracking pair and the ready snapshot a router reads.
// Figures: request_pair_ns, request_pair_2threads_ns, ready_snapshot_ns.
#include <string>
#include <vector>

#include "aibrix/store/store.h"
#include "bench/common/figures.h"
#include "fmt/format.h"

namespace {

using aibrix::store::PodObject;
using aibrix::store::Store;

PodObject MakePod(int i, const std::string& model) {
  PodObject pod;
  pod.ns = "bench";
  pod.name = fmt::format("pod-{}", i);
  pod.uid = pod.name;
  pod.labels[aibrix::store::kModelNameLabel] = model;
  pod.ip = fmt::format("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
  pod.phase = "Running";
  pod.ready_condition = true;
  return pod;
}

Store& SharedStore() {
  static Store* store = [] {
    auto* s = new Store();
    for (int i = 0; i < 1000; ++i) s->AddPod(MakePod(i, "llama"));
    return s;
  }();
  return *store;
}

// AddRequest + DoneRequest as the routing path makes them: the router holds the pod and the
// model's pod set from the snapshot it routed on; request ids are 36-character UUID-like strings.
void BM_RequestPair(benchmark::State& state) {
  Store& store = SharedStore();
  const auto pod = *store.GetPod(fmt::format("bench/pod-{}", state.thread_index()));
  const auto model = store.ReadyPods("llama");
  std::vector<std::string> ids;
  for (int i = 0; i < 4096; ++i) {
    ids.push_back(fmt::format("req-{:08x}-{:04x}-4000-8000-{:012x}", i, state.thread_index(), i));
  }
  size_t i = 0;
  for (auto _ : state) {
    const std::string& id = ids[i++ & 4095];
    benchmark::DoNotOptimize(store.AddRequest(id, pod, model));
    benchmark::DoNotOptimize(store.DoneRequest(id));
  }
}
BENCHMARK(BM_RequestPair)->Threads(1)->UseRealTime()->Repetitions(3);
BENCHMARK(BM_RequestPair)->Threads(2)->UseRealTime()->Repetitions(3);

// The same pair through the by-name API (pod key and model name looked up in the snapshot).
void BM_RequestPairByName(benchmark::State& state) {
  Store& store = SharedStore();
  const std::string pod = fmt::format("bench/pod-{}", state.thread_index());
  std::vector<std::string> ids;
  for (int i = 0; i < 4096; ++i)
    ids.push_back(fmt::format("req-{:08x}-0000-4000-8000-{:012x}", i, i));
  size_t i = 0;
  for (auto _ : state) {
    const std::string& id = ids[i++ & 4095];
    benchmark::DoNotOptimize(store.AddRequest(id, pod, "llama"));
    benchmark::DoNotOptimize(store.DoneRequest(id));
  }
}
BENCHMARK(BM_RequestPairByName)->UseRealTime()->Repetitions(3);

// The router's read: the immutable ready set of a model with 1,000 pods.
void BM_ReadySnapshot(benchmark::State& state) {
  Store& store = SharedStore();
  size_t total = 0;
  for (auto _ : state) {
    auto pods = store.ReadyPods("llama");
    total += pods->ready.size();
    benchmark::DoNotOptimize(pods);
  }
  if (total == 0) state.SkipWithError("no ready pods");
}
BENCHMARK(BM_ReadySnapshot)->UseRealTime()->Repetitions(3);

}  // namespace

int main(int argc, char** argv) {
  // With Threads(2) and UseRealTime, the reported time is wall time per iteration of each
  // thread, i.e. the cost of one pair while another thread runs pairs on another pod.
  return aibrix::bench::RunAndPrintFigures(
      argc, argv,
      {{"BM_RequestPair/repeats:3/real_time/threads:1", {"request_pair_ns", "ns"}},
       {"BM_RequestPair/repeats:3/real_time/threads:2", {"request_pair_2threads_ns", "ns"}},
       {"BM_RequestPairByName/repeats:3/real_time", {"request_pair_by_name_ns", "ns"}},
       {"BM_ReadySnapshot/repeats:3/real_time", {"ready_snapshot_ns", "ns"}}});
}
