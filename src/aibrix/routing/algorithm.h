// Routing: the algorithms that pick one ready pod of a model for a request, and the Router
// that owns one instance of each and finds them by name (docs/routing.md lists what every
// algorithm reads, its formula and where it differs from the reference gateway).
//
//   Router router(store, RouterDeps{.matcher = &matcher, .approx = &approx}, {}, registry);
//   RouteRequest req{.model = "llama", .tokens = ids, .request_id = "r1"};
//   absl::StatusOr<Decision> d = router.Route("prefix-cache", req);
//   // d->pod is the chosen pod; the caller records Store::AddRequest itself.
//
// Thread safety: Router and every Algorithm are safe to call concurrently from any number of
// threads after construction. Route() reads an immutable Store snapshot, queries the prefix
// indexes lock-free and takes no lock of its own on the hot path (the random source is an
// atomic counter; metric handles are resolved once per model under a short mutex). Reading a
// pod's scraped metrics takes that pod's metric mutex briefly; vtc-basic's token tracker has
// its own mutex.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "aibrix/common/clock.h"
#include "aibrix/store/store.h"

namespace prometheus {
class Registry;
}
namespace aibrix::prefix {
class PrefixMatcher;
class ApproxIndex;
}  // namespace aibrix::prefix
namespace aibrix::routing {
class PendingLoadProvider;
}

namespace aibrix::routing {

// Names of the built-in algorithms (Router::Names() lists them sorted).
inline constexpr char kRandom[] = "random";
inline constexpr char kLeastRequest[] = "least-request";
inline constexpr char kThroughput[] = "throughput";
inline constexpr char kLeastKvCache[] = "least-kv-cache";
inline constexpr char kLeastLatency[] = "least-latency";
inline constexpr char kLeastGpuCache[] = "least-gpu-cache";
inline constexpr char kLeastUtilization[] = "least-utilization";
inline constexpr char kLeastBusyTime[] = "least-busy-time";
inline constexpr char kVtcBasic[] = "vtc-basic";
inline constexpr char kPrefixCache[] = "prefix-cache";       // approximate, routing-fed index
inline constexpr char kPrefixCacheKv[] = "prefix-cache-kv";  // exact, KV-event-fed index
inline constexpr char kKvAware[] = "kv-aware";
// Load-aware, from GPU profiles and the output predictor (slo_algorithms.h).
inline constexpr char kLeastLoad[] = "least-load";
inline constexpr char kPackLoad[] = "pack-load";
inline constexpr char kSlo[] = "slo";  // = slo-least-load-pulling
inline constexpr char kSloLeastLoad[] = "slo-least-load";
inline constexpr char kSloLeastLoadPulling[] = "slo-least-load-pulling";
inline constexpr char kSloPackLoad[] = "slo-pack-load";

// One routing question.
struct RouteRequest {
  // The model the request names, as the Store maps it (base model, adapter or claim).
  std::string model;
  // The adapter whose KV blocks the prompt reuses; "" = derive it: when `model` is not the base
  // model of the ready pods (it names an adapter), the adapter is `model` and the hash model is
  // the pods' base model. Only prefix-aware algorithms use it.
  std::string lora;
  // The prompt as the engine's token ids. Borrowed: must stay valid during Route().
  std::span<const uint32_t> tokens;
  // For logs and for the caller's AddRequest; routing does not read it.
  std::string request_id;
  // The end user the request is billed to (header `user`, else the body's `user` field); only
  // vtc-basic reads it (token-count fairness). "" = anonymous.
  std::string user;
  // Pod keys ("ns/name") not to choose (e.g. a retry after an upstream failure). If every ready
  // pod is excluded, Route() fails with Unavailable.
  std::vector<std::string> exclude_pods;
};

// How one ready pod looked to the algorithm.
struct Candidate {
  store::PodRef pod;
  // The algorithm's score (docs/routing.md says which one and its polarity); NaN when the pod
  // lacks the metric the algorithm reads (serialise as null).
  double score = 0;
  // Leading prompt blocks the pod holds in the index the algorithm consults (0 if none).
  uint32_t matched_blocks = 0;
  // Requests in flight on the pod at decision time: this process's and, with Redis, those the
  // other gateway replicas report (PodState::total_running()).
  int32_t running = 0;
};

// The answer: the chosen pod and every ready candidate considered, in pod-key order.
struct Decision {
  store::PodRef pod;
  std::string algorithm;
  std::vector<Candidate> candidates;
  // Leading blocks the chosen pod already holds, and the prompt's complete blocks (0 for
  // algorithms that do not hash the prompt).
  uint32_t matched_blocks = 0;
  uint32_t total_blocks = 0;
  // The prompt tokens the chosen pod must prefill: all but its matched blocks' (every token
  // for algorithms that do not hash the prompt). The gateway counts them on the pod until the
  // answer begins (PodState::pending_prefill_tokens()).
  int64_t uncached_tokens = 0;
  // The request's normalised load on the chosen pod (PendingLoadProvider consumption), when a
  // GPU profile gives one; the caller passes it to Store::AddRequest.
  std::optional<double> pending_load;
};

// Tunables, with the reference's defaults.
struct RouterOptions {
  // Seed of the random source (tie-breaks, `random`); 0 = seed from std::random_device.
  uint64_t seed = 0;
  // prefix-cache: AIBRIX_PREFIX_CACHE_POD_RUNNING_REQUEST_IMBALANCE_ABS_COUNT.
  int32_t imbalance_abs_count = 8;
  // prefix-cache: AIBRIX_PREFIX_CACHE_STANDARD_DEVIATION_FACTOR.
  double std_dev_factor = 1.0;
  // kv-aware: cost = prefill_weight * uncached prompt tokens + queue_weight * the pod's pending
  // prefill tokens (PodState) + decode_weight * running requests.
  double kv_aware_prefill_weight = 1.0;
  double kv_aware_decode_weight = 256.0;
  double kv_aware_queue_weight = 0.25;
  // Whether the exact index is fed by engines' KV events (--kv-event-sync). Without it
  // prefix-cache-kv has no index to read: each decision counts sync_indexer_unavailable.
  bool exact_index_fed = true;
  // A scraped engine metric older than this is stale: algorithms ignore it as if it were
  // missing (--metric-max-age).
  std::chrono::milliseconds metric_max_age{1000};
  // vtc-basic (AIBRIX_ROUTER_VTC_BASIC_*): score = fairness_weight × |pod index − user
  // position| + utilization_weight × min(engine running / max_pod_load, 1); a request adds
  // input_token_weight × prompt tokens + output_token_weight × estimated output tokens to its
  // user's count, kept over a window of window_minutes one-minute buckets.
  double vtc_fairness_weight = 0.5;
  double vtc_utilization_weight = 0.5;
  double vtc_max_pod_load = 100.0;
  double vtc_input_token_weight = 1.0;
  double vtc_output_token_weight = 2.0;
  int vtc_window_minutes = 60;
  // Users tracked at most; past it the users idle longest are forgotten first.
  size_t vtc_max_users = 100000;
  // Time source for metric freshness, vtc windows and log throttling; null = the system clock.
  // Not owned; must outlive the Router.
  const common::Clock* clock = nullptr;
};

// Shared read/write dependencies. Any pointer may be null: prefix-aware algorithms then find
// no matches and fall back as documented.
struct RouterDeps {
  const prefix::PrefixMatcher* matcher = nullptr;  // both indexes; not owned
  prefix::ApproxIndex* approx = nullptr;           // recorded after prefix-cache / kv-aware
  // GPU-profile loads: the load-aware algorithms' input, and every decision's pending_load.
  // Null: those algorithms fall back to least-request.
  const PendingLoadProvider* load = nullptr;
};

class RandomSource;
class RoutingMetrics;

// What every algorithm gets at construction (owned by the Router, outlives the algorithms).
struct AlgorithmEnv {
  store::Store* store = nullptr;
  RouterDeps deps;
  RouterOptions options;
  const common::Clock* clock = nullptr;  // never null
  RandomSource* random = nullptr;
  RoutingMetrics* metrics = nullptr;
};

// One routing policy.
class Algorithm {
 public:
  virtual ~Algorithm() = default;
  virtual std::string_view name() const = 0;
  // Chooses one pod of `pods.ready`. The Router has already removed request.exclude_pods.
  // REQUIRES: pods.ready is non-empty and sorted by key (the Router checks).
  // Errors: Unavailable when the policy finds no target (e.g. the load-imbalance gate).
  virtual absl::StatusOr<Decision> Route(const RouteRequest& request,
                                         const store::ModelPods& pods) const = 0;
};

class Router {
 public:
  // Builds one instance of every algorithm. `store` is not owned and must outlive the Router.
  // `registry` (optional) receives the routing metrics (docs/routing.md).
  Router(store::Store& store, RouterDeps deps, RouterOptions options = {},
         prometheus::Registry* registry = nullptr);
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // Routes `request` with algorithm `algorithm`.
  // Errors: InvalidArgument "unknown algorithm 'x' (known: a, b, ...)"; NotFound "model does not
  // exist in the cache: m"; Unavailable "no ready pod for model m" (also when every ready pod is
  // excluded); Unavailable from the policy itself (prefix-cache's imbalance gate).
  absl::StatusOr<Decision> Route(std::string_view algorithm, const RouteRequest& request) const;
  // The caller could not tokenize a prompt for `algorithm`: a prefix-cache algorithm counts
  // tokenize_failed for `model` (when the Store knows it).
  void CountTokenizeFailure(std::string_view algorithm, const std::string& model) const;

  // The algorithm called `name`, or null.
  const Algorithm* Find(std::string_view name) const;
  bool Has(std::string_view name) const { return Find(name) != nullptr; }
  // Names of every algorithm, sorted.
  std::vector<std::string> Names() const;
  // "a, b, c" — for error messages.
  std::string NamesJoined() const;

 private:
  store::Store& store_;
  std::unique_ptr<RandomSource> random_;
  std::unique_ptr<RoutingMetrics> metrics_;
  AlgorithmEnv env_;
  std::vector<std::unique_ptr<Algorithm>> algorithms_;  // sorted by name; constant
};

}  // namespace aibrix::routing
