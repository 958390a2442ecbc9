#include "aibrix/routing/kv_aware.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "aibrix/prefix/approx_index.h"
#include "aibrix/routing/internal.h"
#include "fmt/format.h"

namespace aibrix::routing {

KvAwareAlgorithm::KvAwareAlgorithm(const AlgorithmEnv& env)
    : env_(env),
      fallback_(env, kKvAware, fmt::format("{} and {}", kMetricRunning, kMetricWaiting),
                "counting this process's in-flight requests only") {}

absl::StatusOr<Decision> KvAwareAlgorithm::Route(const RouteRequest& request,
                                                 const store::ModelPods& pods) const {
  std::vector<Candidate> c = internal::BaseCandidates(pods);
  const internal::PrefixMatches m = internal::MatchPrefix(env_, request, pods);
  const Freshness freshness{env_.clock->Now(), env_.options.metric_max_age};
  const double tokens = static_cast<double>(request.tokens.size());
  bool any_engine_load = false;
  bool stale = false;
  for (size_t i = 0; i < c.size(); ++i) {
    const uint32_t matched = std::max(m.exact[i], m.approx[i]);
    const double uncached =
        std::max(0.0, tokens - static_cast<double>(matched) * static_cast<double>(m.block_size));
    PodMetrics metrics(*c[i].pod, request.model, freshness);
    double load = static_cast<double>(c[i].running);
    if (const auto running = metrics.Value(kMetricRunning)) {
      // The engine's counts include requests other gateway replicas (or clients talking to it
      // directly) sent; ours are instantaneous where a scrape lags. Take the larger.
      load = std::max(load, *running + metrics.Value(kMetricWaiting).value_or(0));
      any_engine_load = true;
    }
    stale = stale || metrics.saw_stale();
    c[i].matched_blocks = matched;
    // The prefill queued ahead on the pod (this process's requests whose answer has not begun)
    // delays the first token as much as this request's own uncached tokens.
    const double queued = static_cast<double>(c[i].pod->state->pending_prefill_tokens());
    c[i].score = env_.options.kv_aware_prefill_weight * uncached +
                 env_.options.kv_aware_queue_weight * queued +
                 env_.options.kv_aware_decode_weight * load;
  }
  if (!any_engine_load) {
    fallback_.Report(request.model, stale ? FallbackReason::kStale : FallbackReason::kMissing);
  }
  const int chosen = internal::PickLowest(c, *env_.random);
  if (env_.deps.approx != nullptr && !m.keys.empty()) {
    env_.deps.approx->RecordKeys(m.keys, c[chosen].pod->key);
  }
  return internal::MakeDecision(name(), std::move(c), chosen, static_cast<uint32_t>(m.keys.size()));
}

}  // namespace aibrix::routing
