#include "aibrix/routing/pending_load.h"

#include <array>
#include <cmath>

#include "aibrix/common/status_macros.h"
#include "fmt/format.h"

namespace aibrix::routing {

PendingLoadProvider::PendingLoadProvider(const profile::ProfileCache& profiles,
                                         tracking::RequestTracker& tracker)
    : profiles_(profiles), tracker_(tracker) {}

RequestFeatures PendingLoadProvider::Features(const std::string& model,
                                              int64_t prompt_tokens) const {
  RequestFeatures features;
  features.prompt_tokens = prompt_tokens;
  tracking::OutputPredictor* predictor = tracker_.Predictor(model);
  features.output_tokens = predictor != nullptr ? predictor->Predict(prompt_tokens) : 1;
  return features;
}

PendingLoadProvider::View PendingLoadProvider::ViewFor(std::string model,
                                                       RequestFeatures features) const {
  return View(profiles_.snapshot(), std::move(model), features);
}

profile::ProfileRef PendingLoadProvider::View::ProfileFor(const store::Pod& pod) const {
  if (profiles_->empty()) return nullptr;
  const std::string deployment = pod.object.deployment;
  if (deployment.empty()) return nullptr;
  if (auto it = profiles_->find(profile::ProfileKey(model_, deployment)); it != profiles_->end()) {
    return it->second;
  }
  if (!pod.model.empty() && pod.model != model_) {
    if (auto it = profiles_->find(profile::ProfileKey(pod.model, deployment));
        it != profiles_->end()) {
      return it->second;
    }
  }
  return nullptr;
}

absl::StatusOr<std::vector<int>> PendingLoadProvider::View::Signature(
    const profile::GpuProfile& profile) const {
  const std::array<double, 2> features{static_cast<double>(features_.output_tokens),
                                       static_cast<double>(features_.prompt_tokens)};
  return profile.Signature(features);
}

absl::StatusOr<double> PendingLoadProvider::View::Consumption(const store::Pod& pod) const {
  const profile::ProfileRef profile = ProfileFor(pod);
  if (profile == nullptr) {
    return absl::NotFoundError(
        fmt::format("no GPU profile for pod {} (deployment '{}')", pod.key, pod.object.deployment));
  }
  ASSIGN_OR_RETURN(std::vector<int> signature, Signature(*profile));
  ASSIGN_OR_RETURN(double throughput, profile->Throughput(signature));
  if (!(throughput > 0) || !std::isfinite(throughput)) {
    return absl::FailedPreconditionError(
        fmt::format("profile {} gives zero throughput at [{}, {}]: the request cannot meet its "
                    "SLO there",
                    profile->deployment, signature[0], signature[1]));
  }
  ASSIGN_OR_RETURN(double latency, profile->Latency(signature));
  if (!(latency > 0) || !std::isfinite(latency)) {
    return absl::FailedPreconditionError(fmt::format("profile {} has latency {} at [{}, {}]",
                                                     profile->deployment, latency, signature[0],
                                                     signature[1]));
  }
  return 1.0 / (throughput * latency);
}

absl::StatusOr<double> PendingLoadProvider::View::SloRank(
    const profile::GpuProfile& profile) const {
  ASSIGN_OR_RETURN(std::vector<int> signature, Signature(profile));
  const profile::Slos& slos = profile.slos;
  const auto output = static_cast<double>(features_.output_tokens);
  const auto prompt = static_cast<double>(features_.prompt_tokens);
  if (slos.tpot > 0) {
    // Profiles hold means only: expected E2E = TTFT + TPOT × tokens, against that target.
    ASSIGN_OR_RETURN(double expected, profile.Latency(signature));
    return expected - (slos.tpot * output + slos.ttft);
  }
  if (slos.ttft > 0) {
    ASSIGN_OR_RETURN(double expected, profile.Ttft(signature));
    return expected - slos.ttft;
  }
  if (slos.tpat > 0) {
    ASSIGN_OR_RETURN(double expected, profile.Latency(signature));
    return expected - slos.tpat * (prompt + output);
  }
  if (slos.e2e > 0) {
    ASSIGN_OR_RETURN(double expected, profile.Latency(signature));
    return expected - slos.e2e;
  }
  return absl::NotFoundError(fmt::format("profile {} sets no SLO", profile.deployment));
}

Expectation PendingLoadProvider::View::Expect(const profile::GpuProfile& profile) const {
  Expectation out;
  out.deployment = profile.deployment;
  auto signature = Signature(profile);
  if (!signature.ok()) return out;
  out.signature = *signature;
  const auto value = [](absl::StatusOr<double> v) -> std::optional<double> {
    if (!v.ok() || !std::isfinite(*v)) return std::nullopt;
    return *v;
  };
  out.e2e_seconds = value(profile.Latency(out.signature));
  out.ttft_seconds = value(profile.Ttft(out.signature));
  out.tpot_seconds = value(profile.Tpot(out.signature));
  out.throughput_rps = value(profile.Throughput(out.signature));
  return out;
}

}  // namespace aibrix::routing
