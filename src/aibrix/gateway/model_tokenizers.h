// ModelTokenizers: which tokenizer turns a model's prompts into the token ids that routing
// hashes (the prefix indexes only match when these are the engine's own ids).
//  * local: the built-in byte tokenizer, engine-sim's rules (right for engine-sim fleets
//    and the demo; no network call).
//  * remote: the engines' vLLM `POST /tokenize`, one client per (pod endpoint, model) from a
//    RemoteTokenizerPool. The model's ready pods are tried in key order (so one endpoint
//    serves a model while it is up). When none answers (or the model has no ready pod), the
//    local tokenizer is used, as in the reference, with a rate-limited warning: routing stays
//    up and only loses its prefix matches. An engine that rejects the prompt itself (400)
//    fails the request with its message.
//
// Thread safety: safe to call concurrently.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "aibrix/store/store.h"
#include "aibrix/tokenizer/remote_tokenizer.h"
#include "aibrix/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace aibrix::gateway {

class ModelTokenizers {
 public:
  // Local only. `local` must outlive this object.
  explicit ModelTokenizers(const tokenizer::Tokenizer& local);
  // Remote, through the ready pods of `store` (which must outlive this object).
  // `remote_defaults` supplies retries and timeouts (endpoint and model are set per call).
  ModelTokenizers(const tokenizer::Tokenizer& local, const store::Store& store,
                  tokenizer::RemoteTokenizerOptions remote_defaults);

  // Completion prompt of `model`.
  absl::StatusOr<std::vector<uint32_t>> Tokenize(std::string_view model,
                                                 std::string_view text) const;
  // Chat messages of `model` (the default chat options: generation prompt added).
  absl::StatusOr<std::vector<uint32_t>> TokenizeChat(std::string_view model,
                                                     const nlohmann::json& messages) const;

  bool remote() const { return pool_.has_value(); }

 private:
  // Runs `call` on the model's tokenizer (local, or the first remote that answers).
  template <typename Call>
  absl::StatusOr<std::vector<uint32_t>> With(std::string_view model, Call call) const;

  const tokenizer::Tokenizer& local_;
  const store::Store* store_ = nullptr;
  mutable std::optional<tokenizer::RemoteTokenizerPool> pool_;
};

}  // namespace aibrix::gateway
