// The reference's prefix-cache policy (spec §7.4) over one of the two prefix indexes:
//  - `prefix-cache`: the approximate, routing-fed index (ApproxIndex); after each decision
//    the prompt's blocks are recorded for the chosen pod.
//  - `prefix-cache-kv`: the exact, KV-event-fed index (ExactIndex); nothing is recorded (the
//    engine's events are the truth).
// Policy: (1) load-imbalance gate: if max − min running > imbalance_abs_count, only pods at the
// minimum stay eligible; (2) among eligible pods holding ≥ 1 leading block, shuffled then
// stably sorted by match percentage (desc) and running (asc), the first with running ≤ mean +
// std_dev_factor × sample-std-dev(running over eligible pods) wins; (3) otherwise the least
// running eligible pod, ties random. Score = match percentage ⌊matched·100/total⌋.
//
// Thread safety: immutable after construction; Route() may run concurrently.
#pragma once

#include <string_view>

#include "aibrix/routing/algorithm.h"

namespace aibrix::routing {

enum class PrefixSource { kApprox, kExact };

class PrefixCacheAlgorithm final : public Algorithm {
 public:
  PrefixCacheAlgorithm(const AlgorithmEnv& env, PrefixSource source) : env_(env), source_(source) {}
  std::string_view name() const override {
    return source_ == PrefixSource::kApprox ? kPrefixCache : kPrefixCacheKv;
  }
  absl::StatusOr<Decision> Route(const RouteRequest& request,
                                 const store::ModelPods& pods) const override;

 private:
  const AlgorithmEnv& env_;
  const PrefixSource source_;
};

}  // namespace aibrix::routing
