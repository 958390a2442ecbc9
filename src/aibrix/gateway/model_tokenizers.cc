#include "aibrix/gateway/model_tokenizers.h"

#include <algorithm>

#include "aibrix/common/logging.h"
#include "aibrix/common/net.h"
#include "aibrix/common/strings.h"

namespace aibrix::gateway {
namespace {

// Ready pods tried per request before giving up (each attempt has its own retries).
constexpr size_t kMaxPodsPerRequest = 2;

absl::StatusOr<std::vector<uint32_t>> ToIds(absl::StatusOr<tokenizer::TokenIds> ids) {
  if (!ids.ok()) return ids.status();
  return std::vector<uint32_t>(ids->begin(), ids->end());
}

}  // namespace

ModelTokenizers::ModelTokenizers(const tokenizer::Tokenizer& local) : local_(local) {}

ModelTokenizers::ModelTokenizers(const tokenizer::Tokenizer& local, const store::Store& store,
                                 tokenizer::RemoteTokenizerOptions remote_defaults)
    : local_(local), store_(&store) {
  pool_.emplace(std::move(remote_defaults));
}

template <typename Call>
absl::StatusOr<std::vector<uint32_t>> ModelTokenizers::With(std::string_view model,
                                                            Call call) const {
  if (!pool_) return ToIds(call(local_));
  const store::ModelPodsRef pods = store_->ReadyPods(model);
  absl::Status last = absl::UnavailableError("the model has no ready pod");
  const size_t tries = pods == nullptr ? 0 : std::min(pods->ready.size(), kMaxPodsPerRequest);
  for (size_t i = 0; i < tries; ++i) {
    const store::PodRef& pod = pods->ready[i];
    const std::string endpoint =
        "http://" + common::FormatHostPort(
                        pod->ip(), static_cast<uint16_t>(store::PodServingPort(pod->object)));
    auto tok = pool_->Get(endpoint, model);
    if (!tok.ok()) {
      last = tok.status();
      continue;
    }
    auto ids = call(**tok);
    if (ids.ok()) return ToIds(std::move(ids));
    // The engine rejected the prompt itself: another pod would say the same.
    if (ids.status().code() == absl::StatusCode::kInvalidArgument) return ids.status();
    last = ids.status();
  }
  static common::RateLimiter limiter;
  common::WarnLimited(limiter, "tokenizer",
                      "no engine tokenizer of model '{}' answered ({}); using the local "
                      "tokenizer",
                      model, common::AsStd(last.message()));
  return ToIds(call(local_));
}

absl::StatusOr<std::vector<uint32_t>> ModelTokenizers::Tokenize(std::string_view model,
                                                                std::string_view text) const {
  return With(model, [&](const tokenizer::Tokenizer& t) { return t.Tokenize(text); });
}

absl::StatusOr<std::vector<uint32_t>> ModelTokenizers::TokenizeChat(
    std::string_view model, const nlohmann::json& messages) const {
  return With(model, [&](const tokenizer::Tokenizer& t) {
    return t.TokenizeChat(messages, tokenizer::ChatOptions{});
  });
}

}  // namespace aibrix::gateway
