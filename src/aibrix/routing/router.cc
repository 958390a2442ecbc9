#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>

#include "aibrix/prefix/block_hash.h"
#include "aibrix/prefix/match.h"
#include "aibrix/routing/algorithm.h"
#include "aibrix/routing/internal.h"
#include "aibrix/routing/kv_aware.h"
#include "aibrix/routing/load_algorithms.h"
#include "aibrix/routing/metrics.h"
#include "aibrix/routing/pending_load.h"
#include "aibrix/routing/prefix_cache.h"
#include "aibrix/routing/random_source.h"
#include "aibrix/routing/slo_algorithms.h"
#include "aibrix/routing/vtc.h"
#include "fmt/format.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"

namespace aibrix::routing {
namespace {

// For prefix-cache algorithms, the label using_kv_sync of their series; nullopt for others.
std::optional<bool> PrefixKvSync(std::string_view algorithm) {
  if (algorithm == kPrefixCache) return false;
  if (algorithm == kPrefixCacheKv) return true;
  return std::nullopt;
}

}  // namespace

Router::Router(store::Store& store, RouterDeps deps, RouterOptions options,
               prometheus::Registry* registry)
    : store_(store),
      random_(std::make_unique<RandomSource>(options.seed)),
      // The matcher does not say which indexes it holds; a configured approx index is local.
      metrics_(std::make_unique<RoutingMetrics>(
          registry, deps.matcher != nullptr && options.exact_index_fed, deps.approx != nullptr)) {
  env_.store = &store_;
  env_.deps = deps;
  env_.options = options;
  env_.clock = options.clock != nullptr ? options.clock : &common::SystemClock::Instance();
  env_.random = random_.get();
  env_.metrics = metrics_.get();
  algorithms_.push_back(std::make_unique<RandomAlgorithm>(env_));
  algorithms_.push_back(std::make_unique<LeastRequestAlgorithm>(env_));
  algorithms_.push_back(std::make_unique<ThroughputAlgorithm>(env_));
  algorithms_.push_back(std::make_unique<LeastKvCacheAlgorithm>(env_));
  algorithms_.push_back(std::make_unique<LeastLatencyAlgorithm>(env_));
  algorithms_.push_back(std::make_unique<LeastGpuCacheAlgorithm>(env_));
  algorithms_.push_back(std::make_unique<LeastUtilizationAlgorithm>(env_));
  algorithms_.push_back(std::make_unique<LeastBusyTimeAlgorithm>(env_));
  algorithms_.push_back(std::make_unique<VtcBasicAlgorithm>(env_));
  algorithms_.push_back(std::make_unique<PrefixCacheAlgorithm>(env_, PrefixSource::kApprox));
  algorithms_.push_back(std::make_unique<PrefixCacheAlgorithm>(env_, PrefixSource::kExact));
  algorithms_.push_back(std::make_unique<KvAwareAlgorithm>(env_));
  const auto load = [this](const char* name, LoadPolicy policy, SloOrder order) {
    algorithms_.push_back(std::make_unique<LoadAlgorithm>(env_, name, policy, order));
  };
  load(kLeastLoad, LoadPolicy::kLeastLoadPull, SloOrder::kNone);
  load(kPackLoad, LoadPolicy::kPackLoad, SloOrder::kNone);
  load(kSlo, LoadPolicy::kLeastLoadPull, SloOrder::kByDeployment);
  load(kSloLeastLoadPulling, LoadPolicy::kLeastLoadPull, SloOrder::kByDeployment);
  load(kSloLeastLoad, LoadPolicy::kLeastLoadPush, SloOrder::kByDeployment);
  load(kSloPackLoad, LoadPolicy::kPackLoad, SloOrder::kByDeployment);
  std::sort(algorithms_.begin(), algorithms_.end(),
            [](const auto& a, const auto& b) { return a->name() < b->name(); });
}

Router::~Router() = default;

const Algorithm* Router::Find(std::string_view name) const {
  for (const auto& a : algorithms_) {
    if (a->name() == name) return a.get();
  }
  return nullptr;
}

std::vector<std::string> Router::Names() const {
  std::vector<std::string> names;
  names.reserve(algorithms_.size());
  for (const auto& a : algorithms_) names.emplace_back(a->name());
  return names;
}

std::string Router::NamesJoined() const { return fmt::format("{}", fmt::join(Names(), ", ")); }

void Router::CountTokenizeFailure(std::string_view algorithm, const std::string& model) const {
  const auto kv_sync = PrefixKvSync(algorithm);
  if (!kv_sync || store_.ReadyPods(model) == nullptr) return;
  metrics_->CountPrefixError(model, *kv_sync, PrefixError::kTokenizeFailed);
}

absl::StatusOr<Decision> Router::Route(std::string_view algorithm,
                                       const RouteRequest& request) const {
  const auto start = std::chrono::steady_clock::now();
  const Algorithm* algo = Find(algorithm);
  if (algo == nullptr) {
    metrics_->CountError("unknown", "unknown_algorithm");
    return absl::InvalidArgumentError(
        fmt::format("unknown algorithm '{}' (known: {})", algorithm, NamesJoined()));
  }
  const store::ModelPodsRef pods = store_.ReadyPods(request.model);
  if (pods == nullptr) {
    metrics_->CountError(algo->name(), "unknown_model");
    return absl::NotFoundError(fmt::format("model does not exist in the cache: {}", request.model));
  }
  const store::ModelPods* view = pods.get();
  store::ModelPods filtered;
  if (!request.exclude_pods.empty()) {
    filtered.model = pods->model;
    filtered.state = pods->state;
    std::vector<store::PodRef> kept;
    kept.reserve(pods->ready.size());
    for (const store::PodRef& pod : pods->ready) {
      if (std::find(request.exclude_pods.begin(), request.exclude_pods.end(), pod->key) ==
          request.exclude_pods.end()) {
        kept.push_back(pod);
      }
    }
    filtered.ready = store::PodList(std::move(kept));
    view = &filtered;
  }
  if (view->ready.empty()) {
    metrics_->CountError(algo->name(), "no_ready_pod");
    if (const auto kv_sync = PrefixKvSync(algo->name())) {
      metrics_->CountPrefixError(request.model, *kv_sync, PrefixError::kNoTargetPod);
    }
    return absl::UnavailableError(fmt::format("no ready pod for model {}", request.model));
  }
  absl::StatusOr<Decision> d = algo->Route(request, *view);
  if (!d.ok()) {
    metrics_->CountError(algo->name(), "policy");
    return d;
  }
  const prefix::BlockHasher* hasher = internal::IndexHasher(env_);
  const int64_t cached = hasher == nullptr ? 0
                                           : static_cast<int64_t>(d->matched_blocks) *
                                                 static_cast<int64_t>(hasher->block_size());
  d->uncached_tokens = std::max<int64_t>(0, static_cast<int64_t>(request.tokens.size()) - cached);
  const PendingLoadProvider* provider = env_.deps.load;
  if (!d->pending_load && provider != nullptr && provider->HasProfiles()) {
    // Every request counts on its pod's utilization, whichever algorithm placed it (as the
    // reference's addPodStats), so the load-aware algorithms see all of this process's load.
    const auto view = provider->ViewFor(
        request.model,
        provider->Features(request.model, static_cast<int64_t>(request.tokens.size())));
    if (auto consumption = view.Consumption(*d->pod); consumption.ok()) {
      d->pending_load = *consumption;
    }
  }
  if (const AlgorithmSeries* s = metrics_->ForAlgorithm(algo->name(), request.model)) {
    s->decisions->Increment();
    s->latency->Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return d;
}

}  // namespace aibrix::routing
