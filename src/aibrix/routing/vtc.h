// vtc-basic: the reference's Virtual Token Counter router (pkg/plugins/gateway/algorithms/vtc),
// a hybrid of per-user token fairness and engine load.
//
// For a request of user u over the ready pods 0..n-1 (sorted by key):
//   tokens(u)   = u's weighted tokens over the sliding window (VtcTokenTracker)
//   position    = (tokens(u) mod (n × 100)) / 100          — a point in [0, n)
//   fairness(i) = |i − position|                            — 0 for an anonymous request
//   load(i)     = min(num_requests_running(i) / max_pod_load, 1)   (scraped, engine's count)
//   score(i)    = fairness_weight × fairness(i) + utilization_weight × load(i); lowest wins.
// After the decision u's count grows by input_weight × prompt tokens + output_weight ×
// ⌈1.5 × prompt tokens⌉ (the reference's output estimate). So a user's traffic walks across
// the pods as its count grows, steered away from loaded pods.
//
// Thread safety: VtcTokenTracker is guarded by its mutex; the algorithm may route concurrently.
#pragma once

#include <cstdint>
#include <deque>
#include <list>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "aibrix/common/clock.h"
#include "aibrix/common/mutex.h"
#include "aibrix/routing/load_algorithms.h"

namespace aibrix::routing {

// Weighted token counts per user over a sliding window of one-minute buckets (the reference's
// InMemorySlidingWindowTokenTracker): a bucket counts while its start is within the window.
// At most `max_users` users are kept; adding a new user beyond that forgets the user whose
// count was updated longest ago.
class VtcTokenTracker {
 public:
  // `clock` must outlive the tracker. REQUIRES: window_minutes > 0, max_users > 0.
  VtcTokenTracker(const common::Clock& clock, int window_minutes, size_t max_users);
  VtcTokenTracker(const VtcTokenTracker&) = delete;
  VtcTokenTracker& operator=(const VtcTokenTracker&) = delete;

  // The user's tokens in the window ending now; 0 for an unknown or empty user.
  double Tokens(std::string_view user) const;
  // Adds `tokens` to the user's bucket of the current minute. An empty user is ignored.
  void Add(std::string_view user, double tokens);
  // Users currently held.
  size_t users() const;

 private:
  struct UserTokens {
    std::deque<std::pair<int64_t, double>> buckets;  // (minute since the clock's epoch, tokens)
    std::list<std::string>::iterator lru;            // position in lru_
  };
  int64_t MinuteNow() const;
  // The first minute whose bucket still counts at `minute`.
  int64_t FirstMinute(int64_t minute) const { return minute - window_minutes_ + 1; }

  // Constant after construction.
  const common::Clock& clock_;
  const int64_t window_minutes_;
  const size_t max_users_;

  mutable common::Mutex mu_;
  absl::flat_hash_map<std::string, UserTokens> users_ ABSL_GUARDED_BY(mu_);
  std::list<std::string> lru_ ABSL_GUARDED_BY(mu_);  // most recently updated first
};

class VtcBasicAlgorithm final : public MetricAlgorithm {
 public:
  explicit VtcBasicAlgorithm(const AlgorithmEnv& env);
  const VtcTokenTracker& tracker() const { return tracker_; }

 protected:
  void Score(const RouteRequest& request, std::span<PodMetrics> metrics,
             std::span<Candidate> candidates) const override;
  void OnDecision(const RouteRequest& request, const Candidate& chosen) const override;

 private:
  // Not const: Route() adds to it (it locks internally).
  mutable VtcTokenTracker tracker_;
};

}  // namespace aibrix::routing
