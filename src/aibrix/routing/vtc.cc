#include "aibrix/routing/vtc.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "aibrix/common/strings.h"

namespace aibrix::routing {

VtcTokenTracker::VtcTokenTracker(const common::Clock& clock, int window_minutes, size_t max_users)
    : clock_(clock),
      window_minutes_(std::max(window_minutes, 1)),
      max_users_(std::max<size_t>(max_users, 1)) {}

int64_t VtcTokenTracker::MinuteNow() const {
  return std::chrono::duration_cast<std::chrono::minutes>(clock_.Now().time_since_epoch()).count();
}

double VtcTokenTracker::Tokens(std::string_view user) const {
  if (user.empty()) return 0;
  const int64_t first = FirstMinute(MinuteNow());
  common::MutexLock lock(&mu_);
  auto it = users_.find(common::AsAbsl(user));
  if (it == users_.end()) return 0;
  double sum = 0;
  for (const auto& [minute, tokens] : it->second.buckets) {
    if (minute >= first) sum += tokens;
  }
  return sum;
}

void VtcTokenTracker::Add(std::string_view user, double tokens) {
  if (user.empty()) return;
  const int64_t now = MinuteNow();
  common::MutexLock lock(&mu_);
  auto it = users_.find(common::AsAbsl(user));
  if (it == users_.end()) {
    if (users_.size() >= max_users_) {
      users_.erase(lru_.back());
      lru_.pop_back();
    }
    lru_.emplace_front(user);
    it = users_.emplace(lru_.front(), UserTokens{{}, lru_.begin()}).first;
  } else {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
  }
  auto& buckets = it->second.buckets;
  while (!buckets.empty() && buckets.front().first < FirstMinute(now)) buckets.pop_front();
  if (!buckets.empty() && buckets.back().first == now) {
    buckets.back().second += tokens;
  } else {
    buckets.emplace_back(now, tokens);
  }
}

size_t VtcTokenTracker::users() const {
  common::MutexLock lock(&mu_);
  return users_.size();
}

VtcBasicAlgorithm::VtcBasicAlgorithm(const AlgorithmEnv& env)
    : MetricAlgorithm(env, kVtcBasic, kMetricRunning),
      tracker_(*env.clock, env.options.vtc_window_minutes, env.options.vtc_max_users) {}

void VtcBasicAlgorithm::Score(const RouteRequest& request, std::span<PodMetrics> metrics,
                              std::span<Candidate> candidates) const {
  const RouterOptions& o = env_.options;
  const double n = static_cast<double>(candidates.size());
  // Anonymous requests have no fairness position: only load decides.
  const bool anonymous = request.user.empty();
  const double position =
      anonymous ? 0 : std::fmod(tracker_.Tokens(request.user), n * 100.0) / 100.0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const auto running = metrics[i].Value(kMetricRunning);
    if (!running) {
      candidates[i].score = std::numeric_limits<double>::quiet_NaN();
      continue;
    }
    const double fairness = anonymous ? 0 : std::fabs(static_cast<double>(i) - position);
    const double load = o.vtc_max_pod_load > 0 ? std::min(*running / o.vtc_max_pod_load, 1.0) : 0;
    candidates[i].score = o.vtc_fairness_weight * fairness + o.vtc_utilization_weight * load;
  }
}

void VtcBasicAlgorithm::OnDecision(const RouteRequest& request, const Candidate& /*chosen*/) const {
  if (request.user.empty()) return;
  const double input = static_cast<double>(request.tokens.size());
  const double output = std::ceil(input * 1.5);  // the reference's SimpleTokenEstimator ratio
  tracker_.Add(request.user, env_.options.vtc_input_token_weight * input +
                                 env_.options.vtc_output_token_weight * output);
}

}  // namespace aibrix::routing
