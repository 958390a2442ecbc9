// The lifecycle of one proxied client request, settled exactly once: admitted to the request
// tracker when first routed, counted on a pod (Store::AddRequest) per attempt, and finished —
// DoneRequest on the pod and OnFinished on the tracker — on success, on an error answer, on
// client disconnect, on upstream failure or timeout, or on shutdown (the destructor settles
// whatever is still open).
//
// Thread safety: one owner at a time (not shared between threads concurrently).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "aibrix/gateway/usage_scanner.h"
#include "aibrix/routing/algorithm.h"
#include "aibrix/store/store.h"
#include "aibrix/tracking/request_tracker.h"

namespace aibrix::gateway {

class InFlightRequest {
 public:
  // Admits a request for `model` with `input_tokens` to the tracker. Store and tracker must
  // outlive this object.
  InFlightRequest(store::Store& store, tracking::RequestTracker& tracker, std::string model,
                  int64_t input_tokens);
  ~InFlightRequest() { Finish(std::nullopt); }
  InFlightRequest(const InFlightRequest&) = delete;
  InFlightRequest& operator=(const InFlightRequest&) = delete;

  // Counts an attempt on the decision's pod under `request_id`, with the request's normalised
  // load there (Decision::pending_load) and its uncached prompt tokens as pending prefill
  // until AnswerBegan (a previous attempt is released first). The Store's error (e.g.
  // AlreadyExists) otherwise; the request stays admitted.
  absl::Status Attempt(const std::string& request_id, const routing::Decision& decision);
  // The engine began answering the current attempt (its first response bytes: the prefill is
  // done): the attempt's prefill tokens leave the pod's pending prefill. Later calls, and
  // calls without an attempt, do nothing.
  void AnswerBegan();
  // Releases the current attempt's pod count without finishing (before a retry).
  void ReleaseAttempt();
  // Settles: the attempt's DoneRequest and the tracker's OnFinished (with the engine's output
  // tokens when known). Later calls do nothing.
  void Finish(std::optional<int64_t> output_tokens);
  // Settles a relayed response: the engine's output tokens (as `usage` read them) count only
  // when the engine answered 200.
  void FinishResponse(int http_status, const UsageScanner& usage) {
    Finish(http_status == 200 ? usage.output_tokens() : std::nullopt);
  }

  bool finished() const { return finished_; }
  const std::string& model() const { return model_; }

 private:
  store::Store& store_;
  tracking::RequestTracker& tracker_;
  const std::string model_;
  const int64_t input_tokens_;
  std::string attempt_id_;     // empty when no attempt is counted
  bool answer_began_ = false;  // for the current attempt
  bool finished_ = false;
};

}  // namespace aibrix::gateway
