#include "aibrix/gateway/model_tokenizers.h"

#include <algorithm>

#include "aibrix/common/logging.h"
#include "aibrix/common/net.h"
#include "aibrix/common/strings.h"

namespace aibrix::gateway {
namespace {

// Ready pods tried per request before giving up (each attempt has its own retries).
constexpr size_t kMaxPodsPerRequest = 2;

}  // namespace

// One remote tokenization: asks the model's ready pods in key order, one at a time, then
// falls back to the local tokenizer. Kept alive by the callback of the call in flight.
class ModelTokenizers::RemoteCall : public std::enable_shared_from_this<RemoteCall> {
 public:
  RemoteCall(const ModelTokenizers& owner, boost::asio::io_context& io, Prompt prompt,
             Callback done)
      : owner_(owner),
        io_(io),
        prompt_(std::move(prompt)),
        done_(std::move(done)),
        pods_(owner.store_->ReadyPods(prompt_.model)),
        tries_(pods_ == nullptr ? 0 : std::min(pods_->ready.size(), kMaxPodsPerRequest)) {}

  // Asks the next pod, or falls back when none is left.
  void Next() {
    while (next_ < tries_) {
      const store::PodRef& pod = pods_->ready[next_++];
      const std::string endpoint =
          "http://" + common::FormatHostPort(
                          pod->ip(), static_cast<uint16_t>(store::PodServingPort(pod->object)));
      auto tok = owner_.pool_->Get(endpoint, prompt_.model);
      if (!tok.ok()) {
        last_ = tok.status();
        continue;
      }
      auto on_answer = [self = shared_from_this()](absl::StatusOr<tokenizer::TokenIds> ids) {
        self->OnAnswer(std::move(ids));
      };
      if (prompt_.chat) {
        (*tok)->TokenizeChat(io_, prompt_.messages, tokenizer::ChatOptions{}, std::move(on_answer));
      } else {
        (*tok)->Tokenize(io_, prompt_.text, std::move(on_answer));
      }
      return;
    }
    static common::RateLimiter limiter;
    common::WarnLimited(limiter, "tokenizer",
                        "no engine tokenizer of model '{}' answered ({}); using the local "
                        "tokenizer",
                        prompt_.model, common::AsStd(last_.message()));
    Finish(owner_.Local(prompt_));
  }

 private:
  void OnAnswer(absl::StatusOr<tokenizer::TokenIds> ids) {
    // The engine rejected the prompt itself: another pod would say the same.
    if (ids.ok() || ids.status().code() == absl::StatusCode::kInvalidArgument) {
      Finish(std::move(ids));
      return;
    }
    last_ = ids.status();
    Next();
  }

  void Finish(absl::StatusOr<Ids> ids) {
    auto done = std::move(done_);
    done(std::move(ids));
  }

  const ModelTokenizers& owner_;
  boost::asio::io_context& io_;
  const Prompt prompt_;
  Callback done_;
  const store::ModelPodsRef pods_;
  const size_t tries_;
  size_t next_ = 0;
  absl::Status last_ = absl::UnavailableError("the model has no ready pod");
};

ModelTokenizers::ModelTokenizers(const tokenizer::Tokenizer& local) : local_(local) {}

ModelTokenizers::ModelTokenizers(const tokenizer::Tokenizer& local, const store::Store& store,
                                 tokenizer::RemoteTokenizerOptions remote_defaults)
    : local_(local), store_(&store) {
  pool_.emplace(std::move(remote_defaults));
}

absl::StatusOr<ModelTokenizers::Ids> ModelTokenizers::Local(const Prompt& prompt) const {
  if (prompt.chat) return local_.TokenizeChat(prompt.messages, tokenizer::ChatOptions{});
  return local_.Tokenize(prompt.text);
}

void ModelTokenizers::TokenizeRemote(boost::asio::io_context& io, Prompt prompt,
                                     Callback done) const {
  if (prompt.chat && prompt.messages.empty()) {
    done(absl::InvalidArgumentError("`messages` must not be empty"));
    return;
  }
  std::make_shared<RemoteCall>(*this, io, std::move(prompt), std::move(done))->Next();
}

}  // namespace aibrix::gateway
