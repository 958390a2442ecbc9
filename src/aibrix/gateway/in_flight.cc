#include "aibrix/gateway/in_flight.h"

namespace aibrix::gateway {

InFlightRequest::InFlightRequest(store::Store& store, tracking::RequestTracker& tracker,
                                 std::string model, int64_t input_tokens)
    : store_(store), tracker_(tracker), model_(std::move(model)), input_tokens_(input_tokens) {
  tracker_.OnAdmitted(model_);
}

absl::Status InFlightRequest::Attempt(const std::string& request_id,
                                      const routing::Decision& decision) {
  ReleaseAttempt();
  absl::Status added = store_.AddRequest(request_id, decision.pod, store_.ReadyPods(model_),
                                         {.pending_load = decision.pending_load.value_or(0),
                                          .prefill_tokens = decision.uncached_tokens});
  if (added.ok()) {
    attempt_id_ = request_id;
    answer_began_ = false;
  }
  return added;
}

void InFlightRequest::AnswerBegan() {
  if (attempt_id_.empty() || answer_began_) return;
  answer_began_ = true;
  (void)store_.PrefillDone(attempt_id_);
}

void InFlightRequest::ReleaseAttempt() {
  if (attempt_id_.empty()) return;
  (void)store_.DoneRequest(attempt_id_);
  attempt_id_.clear();
}

void InFlightRequest::Finish(std::optional<int64_t> output_tokens) {
  if (finished_) return;
  finished_ = true;
  ReleaseAttempt();
  tracker_.OnFinished(model_, input_tokens_, output_tokens);
}

}  // namespace aibrix::gateway
