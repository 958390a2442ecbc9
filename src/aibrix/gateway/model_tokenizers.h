// ModelTokenizers: which tokenizer turns a model's prompts into the token ids that routing
// hashes (the prefix indexes only match when these are the engine's own ids).
//  * local: the built-in byte tokenizer, engine-sim's rules (right for engine-sim fleets; no
//    network call).
//  * remote: vLLM's `POST /tokenize`, one client per (endpoint, model) from a
//    RemoteTokenizerPool. Asked in order: the configured endpoint (when set; a model it does
//    not serve answers 404 and the call moves on), then the model's ready vLLM engines (engine
//    label vllm or absent) in key order, so one engine serves a model while it is up. When
//    none answers (or there is none), the local tokenizer is used, as in the reference, with a
//    rate-limited warning: routing stays up and only loses its prefix matches. An engine that
//    rejects the prompt itself (400) fails the request with its message. A model with no vLLM
//    engine (all its pods say sglang, trtllm, ...) and no configured endpoint is tokenized
//    locally: Choice() says so.
//
// Asynchronous, so no thread waits for an engine: a call takes the io_context of the
// request's I/O thread (Exchange::io()) and a completion `done(absl::StatusOr<std::vector<
// uint32_t>>)` that runs exactly once — inline, before the call returns, when the answer is
// known at once (the local tokenizer, or no endpoint to ask), else later on `io`'s thread.
// The local path costs no allocation beyond the tokenizer's own (`done` is not type-erased).
//
//   tokenizers.Tokenize(exchange->io(), model, prompt, [exchange](auto ids) { ... });
//
// Thread safety: safe to call concurrently. Must outlive the remote calls in flight (the
// service stops its HTTP server, whose I/O threads run them, first).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "aibrix/gateway/request_body.h"
#include "aibrix/store/store.h"
#include "aibrix/tokenizer/remote_tokenizer.h"
#include "aibrix/tokenizer/tokenizer.h"

namespace boost::asio {
class io_context;
}
namespace prometheus {
class Registry;
}

namespace aibrix::gateway {

struct RemoteTokenizersOptions {
  // Retries, timeouts and limits of each call (endpoint and model are set per call).
  tokenizer::RemoteTokenizerOptions call;
  // A vLLM server asked first for every model ("" = none).
  std::string endpoint;
  // An engine's tokenizer URL with "%s" for its IP (bracketed when IPv6); "" =
  // "http://IP:<serving port>".
  std::string endpoint_template;
  // Clients kept (least recently used dropped first) and how long an unused one lives.
  size_t max_tokenizers = 100;
  std::chrono::seconds ttl{300};
  // Where the tokenizer-pool metrics (spec §9.4, aibrix_tokenizer_pool_*) are registered;
  // null: none. Must outlive the ModelTokenizers.
  prometheus::Registry* registry = nullptr;
};

// Which tokenizer a model's prompts go through.
struct TokenizerChoice {
  bool remote = false;
  std::string source;  // for people: what is asked, or why the local tokenizer is used
  bool operator==(const TokenizerChoice&) const = default;
};

class ModelTokenizers {
 public:
  using Ids = std::vector<uint32_t>;
  using Callback = absl::AnyInvocable<void(absl::StatusOr<Ids>)>;

  // Local only. `local` must outlive this object.
  explicit ModelTokenizers(const tokenizer::Tokenizer& local);
  // Remote, through `options.endpoint` and the ready pods of `store` (which must outlive this
  // object).
  ModelTokenizers(const tokenizer::Tokenizer& local, const store::Store& store,
                  RemoteTokenizersOptions options);
  ~ModelTokenizers();

  // Token ids of `model`'s completion prompt `text`, to `done` (see the top). `model` and
  // `text` may point into `done` (a remote call copies them before it takes `done`).
  // Errors: the engine's InvalidArgument (400) with its message.
  template <typename Done>
  void Tokenize(boost::asio::io_context& io, std::string_view model, std::string_view text,
                Done&& done) const {
    if (!pool_) {
      done(local_.Tokenize(text));
      return;
    }
    Prompt prompt{std::string(model), std::string(text), {}, false};
    TokenizeRemote(io, std::move(prompt), Callback(std::forward<Done>(done)));
  }

  // Token ids of `model`'s chat `messages` (the default chat options: generation prompt
  // added), to `done`. `model` and `messages` may point into `done`, as above. Errors:
  // InvalidArgument for no messages, or the engine's 400.
  template <typename Done>
  void TokenizeChat(boost::asio::io_context& io, std::string_view model,
                    std::span<const tokenizer::ChatMessage> messages, Done&& done) const {
    if (!pool_) {
      done(local_.TokenizeChat(messages, tokenizer::ChatOptions{}));
      return;
    }
    Prompt prompt{std::string(model), {}, {messages.begin(), messages.end()}, true};
    TokenizeRemote(io, std::move(prompt), Callback(std::forward<Done>(done)));
  }

  // The token ids of a parsed request body: `token_ids` as they are, else `messages`, else
  // `prompt`, then `then(RequestBody& body, absl::StatusOr<Ids> ids)` runs once, inline or
  // later on `io`'s thread as above (the body is handed back, its prompt fields consumed or
  // not). Errors: InvalidArgument when the body has none of the three; those of the calls.
  template <typename Then>
  void TokenizeBody(boost::asio::io_context& io, RequestBody body, Then then) const {
    if (body.token_ids) {
      Ids ids = std::move(*body.token_ids);
      body.token_ids.reset();
      then(body, std::move(ids));
      return;
    }
    if (!body.messages && !body.prompt) {
      then(body,
           absl::InvalidArgumentError("one of 'prompt', 'messages' or 'token_ids' is required"));
      return;
    }
    // The views below point into `done`, which the calls allow (see above).
    BodyDone<Then> done{std::move(body), std::move(then)};
    const std::string_view model = done.body.model;
    if (done.body.messages) {
      const std::span<const tokenizer::ChatMessage> messages = *done.body.messages;
      TokenizeChat(io, model, messages, std::move(done));
    } else {
      const std::string_view text = *done.body.prompt;
      Tokenize(io, model, text, std::move(done));
    }
  }

  bool remote() const { return pool_.has_value(); }
  // The tokenizer of a model whose pods are `pods` (its entry in a Store snapshot; null when
  // the model has none).
  TokenizerChoice Choice(const store::ModelPods* pods) const;
  // The endpoints a remote call for a model with `pods` asks, in order (at most the
  // configured endpoint and two engines); empty when local.
  std::vector<std::string> Endpoints(const store::ModelPods* pods) const;

 private:
  class RemoteCall;
  struct PoolMetrics;

  // A prompt owned by a remote call (tried on several pods, then perhaps locally).
  struct Prompt {
    std::string model;
    std::string text;
    std::vector<tokenizer::ChatMessage> messages;
    bool chat = false;
  };

  // TokenizeBody's completion: the body travels with the continuation.
  template <typename Then>
  struct BodyDone {
    RequestBody body;
    Then then;
    void operator()(absl::StatusOr<Ids> ids) { then(body, std::move(ids)); }
  };

  void TokenizeRemote(boost::asio::io_context& io, Prompt prompt, Callback done) const;
  // The local tokenizer's ids of `prompt`.
  absl::StatusOr<Ids> Local(const Prompt& prompt) const;

  // The vLLM tokenizer URL of an engine pod.
  std::string EngineEndpoint(const store::Pod& pod) const;

  const tokenizer::Tokenizer& local_;
  const store::Store* store_ = nullptr;
  const std::string endpoint_;
  const std::string endpoint_template_;
  mutable std::optional<tokenizer::RemoteTokenizerPool> pool_;
  std::unique_ptr<PoolMetrics> metrics_;  // null without a registry
};

}  // namespace aibrix::gateway
