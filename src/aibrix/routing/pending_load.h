// aibrix::routing::PendingLoadProvider — the load a request puts on a pod, from the pod's GPU
// profile and the model's output predictor (spec §1.4): the SLO-aware routers' input and the
// prediction endpoint's answer.
//
// A request's features are [predicted output tokens, prompt tokens]; the output comes from
// the model's OutputPredictor (tracking), drawn once per request. On a pod whose deployment
// has a profile for the model, the request's consumption is 1 / (throughput × mean E2E
// latency) at the features' grid cell: the share of the pod's concurrent capacity it takes
// (by Little's law the pod holds throughput × latency requests at its maximum rate). A pod's
// utilization is the sum of the consumptions of the requests this process has in flight on
// it (PodState::pending_load()); capacity is 1.0.
//
//   PendingLoadProvider provider(profiles, tracker);
//   auto view = provider.ViewFor("llama", provider.Features("llama", prompt_tokens));
//   absl::StatusOr<double> c = view.Consumption(*pod);
//
// Thread safety: every method may be called concurrently from any thread; a View holds one
// immutable profile snapshot and is used by one thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "aibrix/profile/profile_cache.h"
#include "aibrix/store/store.h"
#include "aibrix/tracking/request_tracker.h"

namespace aibrix::routing {

struct RequestFeatures {
  int64_t output_tokens = 0;  // predicted
  int64_t prompt_tokens = 0;
};

// What a profile expects of a request: its grid cell and the tables' values there (nullopt
// when the table is missing or does not cover the cell).
struct Expectation {
  std::string deployment;
  std::vector<int> signature;
  std::optional<double> e2e_seconds;
  std::optional<double> ttft_seconds;
  std::optional<double> tpot_seconds;
  std::optional<double> throughput_rps;
};

class PendingLoadProvider {
 public:
  static constexpr double kCapacity = 1.0;

  // Both are borrowed and must outlive the provider.
  PendingLoadProvider(const profile::ProfileCache& profiles, tracking::RequestTracker& tracker);

  // [predicted output tokens, prompt tokens]; the prediction is 1 (cold start) for a model the
  // tracker cannot hold.
  RequestFeatures Features(const std::string& model, int64_t prompt_tokens) const;
  // Whether any profile is loaded (a cheap check before predicting).
  bool HasProfiles() const { return !profiles_.snapshot()->empty(); }

  class View {
   public:
    // The profile of the pod's deployment for the request's model, else for the pod's base
    // model; null when the pod has no deployment name or there is no such profile.
    profile::ProfileRef ProfileFor(const store::Pod& pod) const;
    // The request's consumption on `pod`. Errors: NotFound (no profile for the pod),
    // FailedPrecondition (the profile gives the request zero throughput: it cannot meet the
    // SLO there), InvalidArgument / OutOfRange / NotFound from the profile's tables (a
    // missing latency table is an error, not the reference's consumption 0 ⚠), and
    // FailedPrecondition for a non-positive latency.
    absl::StatusOr<double> Consumption(const store::Pod& pod) const;
    // How far the request would be from its SLO on a deployment with `profile`: expected −
    // target, in seconds (negative = within the SLO). The SLO used is the first set of TPOT
    // (target tpot × output tokens + ttft, expected E2E), TTFT (expected TTFT), TPAT (target
    // tpat × all tokens, expected E2E), E2E. NotFound when the profile sets no SLO.
    absl::StatusOr<double> SloRank(const profile::GpuProfile& profile) const;
    // The profile's expectations for the request.
    Expectation Expect(const profile::GpuProfile& profile) const;

    const RequestFeatures& features() const { return features_; }

   private:
    friend class PendingLoadProvider;
    View(profile::ProfileMapRef profiles, std::string model, RequestFeatures features)
        : profiles_(std::move(profiles)), model_(std::move(model)), features_(features) {}
    absl::StatusOr<std::vector<int>> Signature(const profile::GpuProfile& profile) const;

    profile::ProfileMapRef profiles_;
    std::string model_;
    RequestFeatures features_;
  };
  // A view for one request of `model` with `features`.
  View ViewFor(std::string model, RequestFeatures features) const;

  // The pod's utilization: its pending load (this process's in-flight requests).
  static double Utilization(const store::Pod& pod) { return pod.state->pending_load(); }

 private:
  const profile::ProfileCache& profiles_;
  tracking::RequestTracker& tracker_;
};

}  // namespace aibrix::routing
