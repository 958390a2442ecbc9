// The load-aware algorithms over GPU profiles (spec §1.4, §5): least-load, pack-load and the
// slo-* family. Each request's load on a pod comes from the PendingLoadProvider
// (consumption = 1 / (throughput × latency) from the pod's deployment profile at the
// request's [predicted output, prompt] cell); a pod's utilization is the summed load of its
// in-flight requests; capacity is 1.0. docs/routing.md describes each one and how it differs
// from the reference, which queues requests (SLOQueue) where these route at once.
//
//   least-load              lowest utilization + consumption among pods that stay within
//                           capacity (the reference's "pulling" least-load)
//   pack-load               highest utilization + consumption within capacity (fill pods)
//   slo, slo-least-load-pulling   deployments (GPU types) ordered by SLO rank (expected −
//                           target; most relaxed first), least-load within the first that
//                           has room; later deployments only while they still meet the SLO
//   slo-least-load          the same order, lowest utilization within the first deployment
//                           (push mode: no capacity check)
//   slo-pack-load           the same order, pack-load within each deployment
//
// Without a provider or without a profile for any ready pod they route like least-request
// (aibrix_routing_errors_total{reason="profile_missing_fallback"}); when no pod has room
// they take the pod with the least load after the request, among the pods whose load is
// known if any ({reason="capacity_reached_fallback"}), instead of queueing. Candidate scores are
// utilization + consumption (utilization alone in push mode), NaN for pods without a usable
// profile. The decision's pending_load is the request's consumption on the chosen pod.
//
// Thread safety: immutable after construction; Route() may run concurrently.
#pragma once

#include <string>
#include <string_view>

#include "aibrix/routing/algorithm.h"

namespace aibrix::routing {

enum class LoadPolicy {
  kLeastLoadPush,  // lowest utilization; the request's own load and capacity not considered
  kLeastLoadPull,  // lowest utilization + consumption among pods within capacity
  kPackLoad,       // highest utilization + consumption among pods within capacity
};
enum class SloOrder { kNone, kByDeployment };

class LoadAlgorithm final : public Algorithm {
 public:
  LoadAlgorithm(const AlgorithmEnv& env, std::string_view name, LoadPolicy policy, SloOrder order)
      : env_(env), name_(name), policy_(policy), order_(order) {}
  std::string_view name() const override { return name_; }
  absl::StatusOr<Decision> Route(const RouteRequest& request,
                                 const store::ModelPods& pods) const override;

 private:
  const AlgorithmEnv& env_;
  const std::string name_;
  const LoadPolicy policy_;
  const SloOrder order_;
};

}  // namespace aibrix::routing
