#include "aibrix/routing/prefix_cache.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>
#include <vector>

#include "aibrix/prefix/approx_index.h"
#include "aibrix/routing/internal.h"
#include "aibrix/routing/metrics.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"

namespace aibrix::routing {

absl::StatusOr<Decision> PrefixCacheAlgorithm::Route(const RouteRequest& request,
                                                     const store::ModelPods& pods) const {
  const auto start = std::chrono::steady_clock::now();
  const bool kv_sync = source_ == PrefixSource::kExact;
  const PrefixSeries* series =
      env_.metrics != nullptr ? env_.metrics->ForPrefix(request.model, kv_sync) : nullptr;
  std::vector<Candidate> c = internal::BaseCandidates(pods);
  const size_t n = c.size();
  // prefix-cache-kv without a KV-event-fed index: nothing can match (the least-request
  // fallback below decides); counted on every decision so the misconfiguration shows.
  if (kv_sync && series != nullptr &&
      (env_.deps.matcher == nullptr || !env_.options.exact_index_fed)) {
    series->errors[static_cast<size_t>(PrefixError::kSyncIndexerUnavailable)]->Increment();
  }

  // (1) Load-imbalance gate.
  int32_t lo = c[0].running, hi = c[0].running;
  for (const Candidate& x : c) {
    lo = std::min(lo, x.running);
    hi = std::max(hi, x.running);
  }
  std::vector<char> eligible(n, 1);
  if (hi - lo > env_.options.imbalance_abs_count) {
    for (size_t i = 0; i < n; ++i) eligible[i] = c[i].running == lo;
    if (series != nullptr) series->load_imbalance->Increment();
  }

  // (2) Prefix match on the chosen index.
  const internal::PrefixMatches m = internal::MatchPrefix(env_, request, pods);
  const std::vector<uint32_t>& held = kv_sync ? m.exact : m.approx;
  const uint32_t total = static_cast<uint32_t>(m.keys.size());
  std::vector<int> matched;
  for (size_t i = 0; i < n; ++i) {
    c[i].matched_blocks = held[i];
    c[i].score = total == 0 ? 0 : static_cast<double>(uint64_t{held[i]} * 100 / total);
    if (eligible[i] && held[i] > 0) matched.push_back(static_cast<int>(i));
  }

  int chosen = -1;
  PrefixSelection selection = PrefixSelection::kLeastRequestFallback;
  if (!matched.empty()) {
    double mean = 0;
    size_t count = 0;
    for (size_t i = 0; i < n; ++i) {
      if (!eligible[i]) continue;
      mean += c[i].running;
      ++count;
    }
    mean /= static_cast<double>(count);
    double var = 0;
    for (size_t i = 0; i < n; ++i) {
      if (eligible[i]) var += (c[i].running - mean) * (c[i].running - mean);
    }
    const double std_dev = count > 1 ? std::sqrt(var / static_cast<double>(count - 1)) : 0.0;
    const double limit = mean + env_.options.std_dev_factor * std_dev;
    // Fisher-Yates with the seeded source, then a stable sort: equal candidates are taken in
    // random order.
    for (size_t i = matched.size(); i > 1; --i) {
      std::swap(matched[i - 1], matched[env_.random->Uniform(i)]);
    }
    std::stable_sort(matched.begin(), matched.end(), [&c](int a, int b) {
      if (c[a].score != c[b].score) return c[a].score > c[b].score;
      return c[a].running < c[b].running;
    });
    for (int i : matched) {
      if (c[i].running <= limit) {
        chosen = i;
        selection = PrefixSelection::kPrefixMatch;
        break;
      }
    }
    if (chosen < 0) selection = PrefixSelection::kPrefixMatchSkipped;
  }
  // (3) Least-request fallback among the eligible pods.
  if (chosen < 0) chosen = internal::PickLeastRunning(c, *env_.random, eligible);

  // Post-route update: the approximate index learns where the prompt went.
  if (!kv_sync && env_.deps.approx != nullptr && !m.keys.empty()) {
    env_.deps.approx->RecordKeys(m.keys, c[chosen].pod->key);
  }
  if (series != nullptr) {
    series->decisions[PrefixSeries::PercentBucket(static_cast<int>(c[chosen].score))]->Increment();
    series->selection[static_cast<int>(selection)]->Increment();
    series->latency->Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return internal::MakeDecision(name(), std::move(c), chosen, total);
}

}  // namespace aibrix::routing
