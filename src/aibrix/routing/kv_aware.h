// kv-aware: the cost function of KV-aware routers (Dynamo's KV router, llm-d's scorer):
//   cost(pod) = prefill_weight × uncached prompt tokens + decode_weight × running requests
// where uncached = max(0, prompt tokens − matched_blocks × block_size) and matched_blocks is
// the best of the exact (event) index, over tiers, and the approximate (routing) index. The
// lowest cost wins, ties random. After choosing, the prompt is recorded in the approximate
// index for the chosen pod (so pods without KV events are still tracked). Score = cost.
//
// Thread safety: immutable after construction; Route() may run concurrently.
#pragma once

#include <string_view>

#include "aibrix/routing/algorithm.h"

namespace aibrix::routing {

class KvAwareAlgorithm final : public Algorithm {
 public:
  explicit KvAwareAlgorithm(const AlgorithmEnv& env) : env_(env) {}
  std::string_view name() const override { return kKvAware; }
  absl::StatusOr<Decision> Route(const RouteRequest& request,
                                 const store::ModelPods& pods) const override;

 private:
  const AlgorithmEnv& env_;
};

}  // namespace aibrix::routing
