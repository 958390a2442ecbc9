#include "aibrix/routing/kv_aware.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "aibrix/prefix/approx_index.h"
#include "aibrix/routing/internal.h"

namespace aibrix::routing {

absl::StatusOr<Decision> KvAwareAlgorithm::Route(const RouteRequest& request,
                                                 const store::ModelPods& pods) const {
  std::vector<Candidate> c = internal::BaseCandidates(pods);
  const internal::PrefixMatches m = internal::MatchPrefix(env_, request, pods);
  const double tokens = static_cast<double>(request.tokens.size());
  for (size_t i = 0; i < c.size(); ++i) {
    const uint32_t matched = std::max(m.exact[i], m.approx[i]);
    const double uncached =
        std::max(0.0, tokens - static_cast<double>(matched) * static_cast<double>(m.block_size));
    c[i].matched_blocks = matched;
    c[i].score = env_.options.kv_aware_prefill_weight * uncached +
                 env_.options.kv_aware_decode_weight * static_cast<double>(c[i].running);
  }
  const int chosen = internal::PickLowest(c, *env_.random);
  if (env_.deps.approx != nullptr && !m.keys.empty()) {
    env_.deps.approx->RecordKeys(m.keys, c[chosen].pod->key);
  }
  return internal::MakeDecision(name(), std::move(c), chosen, static_cast<uint32_t>(m.keys.size()));
}

}  // namespace aibrix::routing
