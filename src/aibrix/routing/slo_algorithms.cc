#include "aibrix/routing/slo_algorithms.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "aibrix/common/logging.h"
#include "aibrix/routing/internal.h"
#include "aibrix/routing/metrics.h"
#include "aibrix/routing/pending_load.h"

namespace aibrix::routing {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The ready pods of one deployment and the SLO rank of the request there.
struct DeploymentGroup {
  std::vector<int> members;
  double rank = 0;
};

}  // namespace

absl::StatusOr<Decision> LoadAlgorithm::Route(const RouteRequest& request,
                                              const store::ModelPods& pods) const {
  std::vector<Candidate> c = internal::BaseCandidates(pods);
  const auto least_request = [&](std::string_view reason) {
    if (env_.metrics != nullptr) env_.metrics->CountError(name_, reason);
    for (Candidate& x : c) x.score = kNaN;
    const int chosen = internal::PickLeastRunning(c, *env_.random);
    return internal::MakeDecision(name_, std::move(c), chosen);
  };
  const PendingLoadProvider* provider = env_.deps.load;
  if (provider == nullptr || !provider->HasProfiles()) {
    return least_request("profile_missing_fallback");
  }
  const PendingLoadProvider::View view = provider->ViewFor(
      request.model,
      provider->Features(request.model, static_cast<int64_t>(request.tokens.size())));

  const size_t n = c.size();
  std::vector<double> util(n);
  std::vector<std::optional<double>> load(n);
  bool any_profile = false;
  bool profile_error = false;
  for (size_t i = 0; i < n; ++i) {
    util[i] = PendingLoadProvider::Utilization(*c[i].pod);
    absl::StatusOr<double> consumption = view.Consumption(*c[i].pod);
    if (consumption.ok()) {
      load[i] = *consumption;
      any_profile = true;
    } else if (consumption.status().code() == absl::StatusCode::kFailedPrecondition) {
      any_profile = true;  // a profile that says the request cannot meet the SLO here
    } else if (consumption.status().code() != absl::StatusCode::kNotFound) {
      profile_error = true;
      static common::RateLimiter limiter;
      common::WarnLimited(limiter, "routing", "{}: pod {}: {}", name_, c[i].pod->key,
                          consumption.status().ToString());
    }
  }
  if (profile_error && env_.metrics != nullptr) env_.metrics->CountError(name_, "profile_error");
  if (!any_profile) return least_request("profile_missing_fallback");

  const bool push = policy_ == LoadPolicy::kLeastLoadPush;
  for (size_t i = 0; i < n; ++i) {
    c[i].score = push ? util[i] : (load[i] ? util[i] + *load[i] : kNaN);
  }

  // The order in which pod groups are tried.
  std::vector<DeploymentGroup> groups;
  if (order_ == SloOrder::kByDeployment) {
    std::map<std::string, std::vector<int>> by_deployment;
    for (size_t i = 0; i < n; ++i) {
      by_deployment[c[i].pod->object.deployment].push_back(static_cast<int>(i));
    }
    for (auto& [deployment, members] : by_deployment) {
      if (deployment.empty()) continue;
      const profile::ProfileRef profile = view.ProfileFor(*c[members.front()].pod);
      if (profile == nullptr) continue;
      absl::StatusOr<double> rank = view.SloRank(*profile);
      if (!rank.ok()) continue;
      groups.push_back(DeploymentGroup{std::move(members), *rank});
    }
    std::stable_sort(groups.begin(), groups.end(),
                     [](const auto& a, const auto& b) { return a.rank < b.rank; });
  }
  if (groups.empty()) {
    // No SLO to order by: one group of every pod (the reference's FIFO fallback).
    DeploymentGroup all;
    for (size_t i = 0; i < n; ++i) all.members.push_back(static_cast<int>(i));
    groups.push_back(std::move(all));
  }

  int chosen = -1;
  std::vector<char> eligible(n);
  for (size_t g = 0; g < groups.size() && chosen < 0; ++g) {
    // Past the most relaxed deployment, only those that still meet the SLO.
    if (g > 0 && groups[g].rank > 0) break;
    std::fill(eligible.begin(), eligible.end(), 0);
    for (int i : groups[g].members) {
      eligible[i] = push || (load[i] && util[i] + *load[i] <= PendingLoadProvider::kCapacity);
    }
    chosen = policy_ == LoadPolicy::kPackLoad ? internal::PickHighest(c, *env_.random, eligible)
                                              : internal::PickLowest(c, *env_.random, eligible);
  }
  if (chosen < 0) {
    // Every pod would go over capacity: the reference queues the request; we send it to the
    // pod that ends up least loaded, among the pods whose load is known if there are any.
    if (env_.metrics != nullptr) env_.metrics->CountError(name_, "capacity_reached_fallback");
    std::vector<Candidate> after = c;
    bool any_known = false;
    for (size_t i = 0; i < n; ++i) {
      after[i].score = load[i] ? util[i] + *load[i] : kNaN;
      any_known = any_known || load[i].has_value();
    }
    if (!any_known) {
      for (size_t i = 0; i < n; ++i) after[i].score = util[i];
    }
    chosen = internal::PickLowest(after, *env_.random);
  }
  Decision d = internal::MakeDecision(name_, std::move(c), chosen);
  d.pending_load = load[chosen];
  return d;
}

}  // namespace aibrix::routing
