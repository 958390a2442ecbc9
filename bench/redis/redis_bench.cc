// redis-bench: the Redis features against a real redis-server started by the bench (unix
// socket, tests/util RedisServer), timed by themselves on the wall clock.
//
//   figure redis_trace_flush_ms   p50 of one trace flush of 100 models (swap, JSON, one
//                                 pipelined SET ... EX per model), 20 bucket keys each
//   figure redis_trace_flush_p99_ms
//   figure redis_replica_sync_ms  p50 of one replica-sync round over 1,000 pods, 500 of them
//                                 busy on this replica and 500 reported by another replica
//
// Flags: --rounds N (default 200).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "aibrix/redis/replica_sync.h"
#include "aibrix/redis/trace_flusher.h"
#include "bench/common/figures.h"
#include "fmt/format.h"
#include "prometheus/registry.h"
#include "tests/util/redis_server.h"

namespace aibrix::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * static_cast<double>(v.size())))];
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// 100 models, 20 (input, output) buckets each, a few requests still pending.
void FillTraces(tracking::RequestTracker& tracker) {
  for (int m = 0; m < 100; ++m) {
    const std::string model = fmt::format("org/model-{}", m);
    for (int i = 0; i < 22; ++i) tracker.OnAdmitted(model);
    for (int i = 0; i < 20; ++i) tracker.OnFinished(model, 16 << (i % 10), 1 << (i / 2));
  }
}

int Run(int rounds) {
  auto server = testing::RedisServer::Start();
  if (!server.ok()) {
    std::fprintf(stderr, "redis-bench: %s\n", server.status().ToString().c_str());
    return 1;
  }
  redis::ConnectionOptions connection;
  connection.address = *redis::ParseAddress((*server)->address());
  prometheus::Registry registry;

  // Trace flushes.
  tracking::RequestTracker tracker(common::SystemClock::Instance());
  redis::TraceFlusher flusher(tracker, common::SystemClock::Instance(),
                              redis::TraceFlusherOptions{.connection = connection}, registry);
  std::vector<double> flush_ms;
  auto round_t = std::chrono::system_clock::time_point(std::chrono::seconds(1'700'000'000));
  for (int r = 0; r < rounds + 5; ++r) {
    FillTraces(tracker);
    const auto start = Clock::now();
    auto written = flusher.Flush(round_t);
    const auto elapsed = Clock::now() - start;
    round_t += std::chrono::seconds(10);
    if (!written.ok() || *written != 100) {
      std::fprintf(stderr, "redis-bench: flush failed: %s\n",
                   written.ok() ? "not 100 keys" : written.status().ToString().c_str());
      return 1;
    }
    if (r >= 5) flush_ms.push_back(Ms(elapsed));  // the first rounds warm up
  }

  // The traces' keys (TTL 10 min) stay: SCAN walks the whole keyspace, as in production.
  // Replica sync: 1,000 pods; this replica has requests on the first 500, another replica
  // reports the other 500.
  store::Store mine, theirs;
  for (int i = 0; i < 1000; ++i) {
    store::PodObject pod;
    pod.ns = "default";
    pod.name = fmt::format("pod-{}", i);
    pod.uid = pod.name;
    pod.labels[store::kModelNameLabel] = "llama";
    pod.ip = "10.0.0.1";
    pod.phase = "Running";
    pod.ready_condition = true;
    mine.AddPod(pod);
    theirs.AddPod(pod);
    store::Store& owner = i < 500 ? mine : theirs;
    for (int k = 0; k < 1 + i % 4; ++k) {
      (void)owner.AddRequest(fmt::format("r{}-{}", i, k), "default/" + pod.name, "llama");
    }
  }
  redis::ReplicaSyncOptions mine_options{.connection = connection, .gateway_id = "bench-a"};
  mine_options.key_ttl = std::chrono::seconds(60);
  redis::ReplicaSyncOptions theirs_options = mine_options;
  theirs_options.gateway_id = "bench-b";
  redis::ReplicaSync sync(mine, mine_options, registry);
  redis::ReplicaSync other(theirs, theirs_options, registry);
  if (!other.SyncOnce().ok()) return 1;
  std::vector<double> sync_ms;
  for (int r = 0; r < rounds / 4 + 5; ++r) {
    const auto start = Clock::now();
    const absl::Status st = sync.SyncOnce();
    const auto elapsed = Clock::now() - start;
    if (!st.ok()) {
      std::fprintf(stderr, "redis-bench: sync failed: %s\n", st.ToString().c_str());
      return 1;
    }
    if (r >= 5) sync_ms.push_back(Ms(elapsed));
  }
  const auto remote = (*mine.GetPod("default/pod-999"))->state->remote_running();
  std::printf("trace flush of 100 models: p50 %.2f ms, p99 %.2f ms (%d rounds)\n",
              Percentile(flush_ms, 50), Percentile(flush_ms, 99), rounds);
  std::printf(
      "replica sync over 1000 pods: p50 %.2f ms, p99 %.2f ms; remote count of pod-999: %d\n",
      Percentile(sync_ms, 50), Percentile(sync_ms, 99), remote);
  PrintFigure("redis_trace_flush_ms", Percentile(flush_ms, 50), "ms", 2);
  PrintFigure("redis_trace_flush_p99_ms", Percentile(flush_ms, 99), "ms", 2);
  PrintFigure("redis_replica_sync_ms", Percentile(sync_ms, 50), "ms", 2);
  return 0;
}

}  // namespace
}  // namespace aibrix::bench

int main(int argc, char** argv) {
  int rounds = 200;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--rounds") == 0) rounds = std::max(1, std::atoi(argv[i + 1]));
  }
  return aibrix::bench::Run(rounds);
}
