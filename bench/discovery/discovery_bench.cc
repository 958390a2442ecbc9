// Kubernetes discovery figures (issue 15):
//   list_10k_pods_ms  an initial LIST of 10,000 realistic pods (~5 KB of JSON each, the shape
//                     of protocols/vectors/k8s/pod_sample.json) in pages of 500, served by the
//                     fake API server on loopback and taken by the real informer: HTTP,
//                     decoding, and one Store publication, from the informer's start to the
//                     list handed over (median of 5 runs, each into an empty Store).
//   watch_event_us    one watch event applied end to end: the bytes of a MODIFIED event (a
//                     realistic pod whose readiness flips) fed to the informer's line
//                     assembler and decoder, applied to the Store holding the 10,000 pods
//                     (20 models of 500 pods), and reconciled by the KV event manager's
//                     listener on its own thread; the next event goes in only after the
//                     manager is idle again (median over 1,000 events, each on another pod).
//                     `--models N` spreads the pods over N models instead (a pod's change
//                     copies one chunk of each of its models' pod lists, store::PodList).
// Informational lines (not figures) give the CPU time behind each figure (the wall-clock
// figures include waiting for a core on a shared machine), break the LIST down into
// decoding and applying, and give the pipelined cost of a watch event (many events in, then
// one wait for the manager; the CPU split of a watch event is taken there).

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <cstdio>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "aibrix/common/clock.h"
#include "aibrix/common/huge_pages.h"
#include "aibrix/common/malloc_tuning.h"
#include "aibrix/discovery/informer.h"
#include "aibrix/discovery/k8s_decoder.h"
#include "aibrix/discovery/line_assembler.h"
#include "aibrix/discovery/store_sync.h"
#include "aibrix/kv/events.h"
#include "aibrix/kvevents/manager.h"
#include "aibrix/store/store.h"
#include "bench/common/figures.h"
#include "fmt/format.h"
#include "prometheus/registry.h"
#include "tests/util/fake_kube_api.h"

namespace {

using namespace aibrix;
using Clock = std::chrono::steady_clock;
using aibrix::bench::PrintFigure;

constexpr int kPods = 10000;
int model_count = 20;  // --models N: the pods are spread over N models

std::string ModelOf(int i) { return fmt::format("model-{}", i % model_count); }

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

double CpuMs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// Hands the list over to the Store and notes when that is done (and the thread CPU time).
class TimedSync : public discovery::InformerHandler {
 public:
  explicit TimedSync(store::Store& store) : sync_(store) {}
  void OnList(discovery::Resource resource, std::vector<discovery::K8sObject> objects,
              std::vector<std::string> deleted) override {
    sync_.OnList(resource, std::move(objects), std::move(deleted));
    cpu_end_ms = CpuMs();
    done_.set_value(Clock::now());
  }
  void OnEvents(discovery::Resource resource, std::vector<discovery::WatchEvent> events) override {
    sync_.OnEvents(resource, std::move(events));
  }
  std::future<Clock::time_point> done() { return done_.get_future(); }
  double cpu_end_ms = 0;  // written on the discovery thread before done() is ready

 private:
  discovery::StoreSync sync_;
  std::promise<Clock::time_point> done_;
};

// One LIST of every pod of `api` through a fresh informer into a fresh Store; milliseconds.
double ListOnce(testing::FakeKubeApi& api, size_t* pods_cached, double* client_cpu_ms) {
  store::Store store;
  TimedSync sync(store);
  auto done = sync.done();
  prometheus::Registry registry;
  discovery::DiscoveryMetrics metrics(registry);
  discovery::KubeConfig config;
  config.https = false;
  config.host = "127.0.0.1";
  config.port = api.port();
  auto client = discovery::KubeClient::Create(config, {}, common::SystemClock::Instance());
  boost::asio::io_context io;
  auto work = boost::asio::make_work_guard(io);
  discovery::InformerOptions options;
  options.page_size = 500;
  discovery::Informer informer(io, **client, options, sync,
                               metrics.For(discovery::Resource::kPods));
  std::thread thread([&] { io.run(); });
  const Clock::time_point start = Clock::now();
  double cpu_start_ms = 0;
  boost::asio::post(io, [&] {
    cpu_start_ms = CpuMs();
    informer.Start();
  });
  const Clock::time_point end = done.get();
  *client_cpu_ms = sync.cpu_end_ms - cpu_start_ms;
  boost::asio::post(io, [&] { informer.Stop(); });
  work.reset();
  thread.join();
  *pods_cached = store.ListPods().size();
  return std::chrono::duration<double, std::milli>(end - start).count();
}

// The same LIST from memory, split into decoding and applying (informational).
void ListBreakdown(const std::vector<std::string>& pages) {
  const double cpu0 = CpuMs();
  discovery::K8sDecoder decoder(discovery::Resource::kPods);
  store::Store store;
  discovery::StoreSync sync(store);
  const Clock::time_point start = Clock::now();
  std::vector<discovery::K8sObject> objects;
  for (const std::string& page : pages) {
    std::string body = page;  // the informer's page buffer
    body.append(discovery::kJsonPadding, '\0');
    auto decoded = decoder.DecodeList(std::string_view(body.data(), page.size()));
    for (auto& object : decoded->items) objects.push_back(std::move(object));
  }
  const Clock::time_point decoded = Clock::now();
  const double cpu1 = CpuMs();
  sync.OnList(discovery::Resource::kPods, std::move(objects), {});
  const Clock::time_point applied = Clock::now();
  const double cpu2 = CpuMs();
  std::printf(
      "info list_10k_pods from memory: decode %.1f ms (CPU %.1f), apply %.1f ms (CPU %.1f), "
      "%zu pods\n",
      std::chrono::duration<double, std::milli>(decoded - start).count(), cpu1 - cpu0,
      std::chrono::duration<double, std::milli>(applied - decoded).count(), cpu2 - cpu1,
      store.ListPods().size());
}

// A sink that takes nothing (no pod is KV-eligible; the manager only reconciles).
class NullSink : public kv::EventSink {
 public:
  void ApplyBatch(const kv::PodSource&, const kv::EventBatch&) override {}
  void ClearPod(const std::string&) override {}
};

void WatchEvents(const std::vector<std::string>& pages) {
  store::Store store;
  discovery::StoreSync sync(store);
  {
    discovery::K8sDecoder decoder(discovery::Resource::kPods);
    std::vector<discovery::K8sObject> objects;
    for (const std::string& page : pages) {
      std::string body = page;
      body.append(discovery::kJsonPadding, '\0');
      auto decoded = decoder.DecodeList(std::string_view(body.data(), page.size()));
      for (auto& object : decoded->items) objects.push_back(std::move(object));
    }
    sync.OnList(discovery::Resource::kPods, std::move(objects), {});
  }
  NullSink sink;
  kvevents::EventManagerOptions options;
  options.enabled = true;
  kvevents::EventManager manager(&store, &sink, nullptr, options);
  if (!manager.Start().ok() || !manager.WaitIdle(std::chrono::seconds(60))) {
    std::fprintf(stderr, "the KV event manager did not start\n");
    std::exit(1);
  }

  // The watch lines: MODIFIED events of distinct pods, readiness flipped.
  constexpr int kEvents = 2000;
  std::vector<std::string> lines;
  for (int i = 0; i < kEvents; ++i) {
    const int pod = (i * 37) % kPods;
    nlohmann::json object = testing::RealisticPod(pod, ModelOf(pod), "default", /*ready=*/false);
    object["kind"] = "Pod";
    object["apiVersion"] = "v1";
    object["metadata"]["resourceVersion"] = std::to_string(200000 + i);
    lines.push_back(nlohmann::json{{"type", "MODIFIED"}, {"object", object}}.dump() + "\n");
  }
  discovery::LineAssembler assembler(16 << 20);
  discovery::K8sDecoder decoder(discovery::Resource::kPods);
  // The CPU-time probes (a system call each on some VMs) run only in the pipelined half, so
  // the figure's one-by-one latencies time the event alone.
  double t_decode = 0, t_apply = 0;
  const auto apply = [&](const std::string& bytes, bool probe) {
    std::vector<discovery::WatchEvent> batch;
    const double c0 = probe ? CpuMs() : 0;
    assembler.Feed(bytes, [&](std::string_view line) {
      auto event = decoder.DecodeEvent(line);
      if (event.ok()) batch.push_back(std::move(*event));
      return true;
    });
    const double c1 = probe ? CpuMs() : 0;
    sync.OnEvents(discovery::Resource::kPods, std::move(batch));
    const double c2 = probe ? CpuMs() : 0;
    t_decode += c1 - c0;
    t_apply += c2 - c1;
  };

  std::vector<double> latencies;
  for (int i = 0; i < kEvents / 2; ++i) {
    const Clock::time_point start = Clock::now();
    apply(lines[static_cast<size_t>(i)], /*probe=*/false);
    manager.WaitIdle();
    latencies.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
  }
  const Clock::time_point start = Clock::now();
  for (int i = kEvents / 2; i < kEvents; ++i) apply(lines[static_cast<size_t>(i)], true);
  manager.WaitIdle();
  const double pipelined =
      std::chrono::duration<double, std::micro>(Clock::now() - start).count() / (kEvents / 2);
  std::printf(
      "info watch_event CPU time of the discovery side per event: %.1f us decoding, %.1f us "
      "applying (Store and listener hand-off)\n",
      t_decode * 1000 / (kEvents / 2), t_apply * 1000 / (kEvents / 2));
  size_t unready = 0;
  for (const store::PodRef& pod : store.ListPods()) unready += !pod->ready;
  manager.Stop();
  std::printf(
      "info watch_event pipelined: %.1f us per event (%d events, then one wait); "
      "%zu of %zu pods now unready; p99 one-by-one %.1f us\n",
      pipelined, kEvents / 2, unready, store.ListPods().size(), [&] {
        std::vector<double> sorted = latencies;
        std::sort(sorted.begin(), sorted.end());
        return sorted[sorted.size() * 99 / 100];
      }());
  PrintFigure("watch_event_us", Median(latencies), "us", 1);
}

}  // namespace

int main(int argc, char** argv) {
  // The service's process settings (src/aibrix/main.cc): huge pages for malloc, its malloc
  // thresholds.
  aibrix::common::UseHugePagesForMalloc(argv);
  aibrix::common::TuneMalloc();
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--models") model_count = std::max(1, std::atoi(argv[i + 1]));
  }
  // The same pods as LIST pages of 500, for the in-memory breakdown and the watch setup.
  std::vector<std::string> pages;
  {
    std::vector<nlohmann::json> pods;
    for (int i = 0; i < kPods; ++i) pods.push_back(testing::RealisticPod(i, ModelOf(i)));
    size_t bytes = 0;
    for (const nlohmann::json& pod : pods) bytes += pod.dump().size();
    std::printf("info %d pods, %.0f bytes of JSON per pod on average\n", kPods,
                static_cast<double>(bytes) / kPods);
    for (size_t at = 0; at < pods.size(); at += 500) {
      std::string page =
          R"({"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[)";
      for (size_t i = at; i < std::min(pods.size(), at + 500); ++i) {
        if (i > at) page += ',';
        page += pods[i].dump();
      }
      page += "]}";
      pages.push_back(std::move(page));
    }
  }

  testing::FakeKubeApi api;
  for (int i = 0; i < kPods; ++i)
    api.Upsert(testing::kPodsPath, testing::RealisticPod(i, ModelOf(i)));
  std::vector<double> runs;
  std::vector<double> cpu;
  size_t cached = 0;
  for (int run = 0; run < 5; ++run) {
    double client_cpu_ms = 0;
    runs.push_back(ListOnce(api, &cached, &client_cpu_ms));
    cpu.push_back(client_cpu_ms);
  }
  std::printf("info list runs (ms):");
  for (double ms : runs) std::printf(" %.1f", ms);
  std::printf("; CPU time of the informer's thread (ms):");
  for (double ms : cpu) std::printf(" %.1f", ms);
  std::printf("; %zu pods cached\n", cached);
  if (cached != static_cast<size_t>(kPods)) {
    std::fprintf(stderr, "the LIST cached %zu pods, not %d\n", cached, kPods);
    return 1;
  }
  PrintFigure("list_10k_pods_ms", Median(runs), "ms", 1);
  // Like the informer, on a thread of their own (the discovery thread's malloc arena, not the
  // main thread's, which rendering the pods above left fragmented).
  std::thread([&] { ListBreakdown(pages); }).join();
  std::thread([&] { WatchEvents(pages); }).join();
  return 0;
}
