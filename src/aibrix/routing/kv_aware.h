// kv-aware: the cost function of KV-aware routers (Dynamo's KV router, llm-d's scorer):
//   cost(pod) = prefill_weight × uncached prompt tokens + decode_weight × load
// where uncached = max(0, prompt tokens − matched_blocks × block_size), matched_blocks is the
// best of the exact (event) index, over tiers, and the approximate (routing) index, and
//   load = max(running here, engine running + engine waiting)
// with the engine's counts scraped (num_requests_running, num_requests_waiting; fresh only)
// and "running here" this process's in-flight requests on the pod. A pod without fresh engine
// counts uses its local count alone; when no pod has them the decision is reported as a
// metric fallback. The lowest cost wins, ties random. After choosing, the prompt is recorded
// in the approximate index for the chosen pod (so pods without KV events are still tracked).
// Score = cost.
//
// Thread safety: immutable after construction; Route() may run concurrently.
#pragma once

#include <string_view>

#include "aibrix/routing/algorithm.h"
#include "aibrix/routing/pod_metrics.h"

namespace aibrix::routing {

class KvAwareAlgorithm final : public Algorithm {
 public:
  explicit KvAwareAlgorithm(const AlgorithmEnv& env);
  std::string_view name() const override { return kKvAware; }
  absl::StatusOr<Decision> Route(const RouteRequest& request,
                                 const store::ModelPods& pods) const override;

 private:
  const AlgorithmEnv& env_;
  const MetricFallback fallback_;
};

}  // namespace aibrix::routing
