// The engine metric scraper (spec §4.1–4.4, done right): every `interval` it fetches the
// /metrics of every ready pod in the Store (each data-parallel port: metric port + rank),
// parses the bodies, extracts the registered metrics of the pod's engine and writes them to
// the pod's state, each stamped with the scrape time (so readers tell fresh from stale).
//
// - One thread runs an io_context for every pod: all fetches are asynchronous calls of one
//   http::Client (keep-alive connections, connect and read deadlines). No thread per pod.
// - At most one scrape in flight per pod; a slow pod is scraped again only after its
//   current scrape ends (successfully, by timeout or otherwise).
// - A failed scrape (refused, timeout, reset, non-200 including redirects, which are not
//   followed, a body over the cap, a body that is not an exposition, an unknown engine)
//   is counted by reason, logged at a limited rate, and the pod backs off: the next attempt
//   waits backoff_initial * 2^(failures-1) (capped at backoff_max), jittered to [1/2, 1] of
//   that. Its values are not touched: they go stale after the max age.
// - Counters are stored as the engine's value. Derived values: the prompt and generation
//   throughput (avg_*_throughput_toks_per_s, model scope) from the prompt_tokens_total /
//   generation_tokens_total deltas of every pod, and realtime_running_requests_drain_rate_1m
//   (pod scope) from the requests this process completed on the pod, both with
//   counter-reset handling (CounterRate).
// - A pod that leaves the Store, turns unready or is re-created stops being scraped: its
//   calls are cancelled and its state (rates, failure counters) released.
//
// Times (scrape stamps, interval and backoff decisions) come from the injected clock; the
// loop itself wakes on a real timer every `interval`.
//
// Thread safety: Start/Stop from one thread; pods_tracked() and ticks() from any thread. Everything
// else runs on the scraper's thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "aibrix/common/clock.h"
#include "aibrix/common/logging.h"
#include "aibrix/http/client.h"
#include "aibrix/metrics/exposition.h"
#include "aibrix/metrics/extract.h"
#include "aibrix/metrics/rate.h"
#include "aibrix/metrics/registry.h"
#include "aibrix/store/store.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/registry.h"

namespace boost::asio {
class io_context;
}

namespace aibrix::metrics {

inline constexpr char kDrainRateMetric[] = "realtime_running_requests_drain_rate_1m";

struct ScraperOptions {
  std::chrono::milliseconds interval{50};
  std::chrono::milliseconds connect_timeout{1000};
  std::chrono::milliseconds read_timeout{3000};  // the whole response after connecting
  size_t max_body_bytes = 8 << 20;
  size_t max_series = 50000;
  std::chrono::milliseconds backoff_initial{250};
  std::chrono::milliseconds backoff_max{10000};
  CounterRateOptions throughput_rate{};  // 1 s spacing, 10 s window
  CounterRateOptions drain_rate{std::chrono::seconds(5), std::chrono::seconds(60),
                                std::chrono::minutes(3), 36, std::chrono::seconds(10)};
  const common::Clock* clock = &common::SystemClock::Instance();
};

class Scraper {
 public:
  // `store` and `registry` must outlive the scraper; its counters are registered in
  // `metrics`.
  Scraper(store::Store& store, const EngineMetricRegistry& registry, ScraperOptions options,
          prometheus::Registry& metrics);
  ~Scraper();
  Scraper(const Scraper&) = delete;
  Scraper& operator=(const Scraper&) = delete;

  // Starts the scraper's thread. FailedPrecondition if already started.
  absl::Status Start();
  // Cancels every fetch and joins the thread. Idempotent.
  void Stop();

  // Pods currently tracked (ready pods seen by the last tick).
  size_t pods_tracked() const { return tracked_.load(std::memory_order_relaxed); }
  // Ticks run so far (tests wait for the loop to have run instead of sleeping).
  uint64_t ticks() const { return ticks_.load(std::memory_order_relaxed); }

 private:
  using TimePoint = std::chrono::steady_clock::time_point;
  struct PodEntry;
  class Fetch;

  void Tick();
  void StartScrape(const std::string& key, PodEntry& entry, TimePoint now);
  void FetchDone(const std::string& key, uint64_t id, size_t port, const Fetch& fetch);
  void Complete(const std::string& key, PodEntry& entry);
  void Fail(const std::string& key, PodEntry& entry, const std::string& reason,
            const std::string& detail);
  // The prompt and generation throughput of each model in `out` (unless the engine gave
  // them), appended to `out`.
  void DeriveThroughput(PodEntry& entry, Extracted& out, TimePoint now);
  void UpdateDrainRate(PodEntry& entry, TimePoint now);
  void Release(PodEntry& entry);
  // An engine's registered metrics, and their raw names (the only families a scrape parses).
  struct EngineBindings {
    std::vector<Binding> bindings;
    absl::flat_hash_set<std::string_view> names;
  };
  const EngineBindings& BindingsFor(const std::string& engine);

  // Constant after construction.
  store::Store& store_;
  const EngineMetricRegistry& registry_;
  const ScraperOptions options_;
  const common::Clock& clock_;
  const EngineMetricDef* const prompt_rate_def_;
  const EngineMetricDef* const generation_rate_def_;
  prometheus::Family<prometheus::Counter>& scrapes_;     // by result
  prometheus::Family<prometheus::Counter>& query_fail_;  // by pod and reason
  prometheus::Counter& scrapes_ok_;
  prometheus::Counter& bad_lines_;
  http::Client client_;  // before io_: calls die with the io_context first

  // Owned by the scraper's thread once started.
  std::unique_ptr<boost::asio::io_context> io_;
  struct Loop;
  std::unique_ptr<Loop> loop_;  // timer and work guard
  absl::flat_hash_map<std::string, std::unique_ptr<PodEntry>> pods_;
  absl::flat_hash_map<std::string, EngineBindings> bindings_;
  uint64_t next_id_ = 1;
  bool stopping_ = false;
  std::minstd_rand jitter_{std::random_device{}()};
  common::RateLimiter log_limiter_;

  std::atomic<size_t> tracked_{0};
  std::atomic<uint64_t> ticks_{0};
  std::thread thread_;
};

}  // namespace aibrix::metrics
