// RemoteTokenizer: the Tokenizer seam backed by a vLLM engine's `POST /tokenize` and
// `POST /detokenize` (protocols/README.md §5), so the token ids the prefix index hashes are
// the engine's own. RemoteTokenizerPool keeps one tokenizer per (endpoint, model).
//
//   RemoteTokenizerOptions o;
//   o.endpoint = "http://10.0.0.7:8000";
//   o.model = "llama-3-1-8b";
//   ASSIGN_OR_RETURN(auto tok, RemoteTokenizer::Create(o));
//   ASSIGN_OR_RETURN(TokenIds ids, tok->Tokenize("Hello, world"));
//
// Retries (spec §7.5): transport errors and HTTP 408, 500, 502, 503, 504 are retried up to
// max_retries times with backoff base·2^(n−1) capped at max_backoff; 429 waits Retry-After
// (seconds or an HTTP date; capped at max_retry_after) else the backoff; every other status
// fails at once. Each attempt is bounded by `timeout`.
//
// Thread safety: RemoteTokenizer and RemoteTokenizerPool are safe to call concurrently. A
// tokenizer keeps a small free list of HTTP connections (a mutex guards the list only; no lock
// is held during a request), so concurrent calls use separate connections.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "aibrix/common/clock.h"
#include "aibrix/tokenizer/tokenizer.h"

namespace httplib {
class Client;
}

namespace aibrix::tokenizer {

struct RemoteTokenizerOptions {
  // "http://host:port" or "https://host:port", optionally with a path prefix ("/v1" → requests
  // go to "/v1/tokenize").
  std::string endpoint;
  // Sent as "model" when non-empty.
  std::string model;
  // Completion form: add the model's special tokens (BOS, ...); vLLM's default is true.
  bool add_special_tokens = true;
  // Retries after the first attempt (the reference's pool uses 3).
  int max_retries = 3;
  std::chrono::milliseconds base_backoff{100};
  std::chrono::milliseconds max_backoff{5000};
  // Upper bound on a 429's Retry-After wait (a hostile or broken engine must not stall routing).
  std::chrono::milliseconds max_retry_after{30'000};
  // Per attempt: connect, send and receive each (AIBRIX_TOKENIZER_REQUEST_TIMEOUT).
  std::chrono::milliseconds timeout{5000};
  // Waits between attempts; tests inject a recorder. Default: std::this_thread::sleep_for.
  std::function<void(std::chrono::milliseconds)> sleep;
  // Wall clock for Retry-After dates. Not owned.
  const common::Clock* clock = &common::SystemClock::Instance();
};

// The full /tokenize answer.
struct TokenizeResponse {
  int64_t count = 0;
  int64_t max_model_len = 0;
  TokenIds tokens;
};

// Retry policy helpers (exposed for tests and for other HTTP clients of the module).
// Whether HTTP `status` is retried (408, 429, 500, 502, 503, 504).
bool IsRetryableHttpStatus(int status);
// Delay before retry `n` (1-based): base·2^(n−1), capped at `cap`.
std::chrono::milliseconds RetryBackoff(int n, std::chrono::milliseconds base,
                                       std::chrono::milliseconds cap);
// A Retry-After header value: delta-seconds or an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37
// GMT") relative to `now`; nullopt when it is neither. A date in the past gives 0.
std::optional<std::chrono::milliseconds> ParseRetryAfter(std::string_view value,
                                                         std::chrono::system_clock::time_point now);

class RemoteTokenizer final : public Tokenizer {
 public:
  // Errors: InvalidArgument for an endpoint that is not http(s)://host[:port][/prefix], a
  // negative max_retries or a non-positive timeout.
  static absl::StatusOr<std::unique_ptr<RemoteTokenizer>> Create(RemoteTokenizerOptions options);
  ~RemoteTokenizer() override;
  RemoteTokenizer(const RemoteTokenizer&) = delete;
  RemoteTokenizer& operator=(const RemoteTokenizer&) = delete;

  // Completion form {model?, prompt, add_special_tokens}.
  absl::StatusOr<TokenIds> Tokenize(std::string_view text) const override;
  // Chat form {model?, messages, add_special_tokens: false, add_generation_prompt,
  // continue_final_message}; `messages` is forwarded untouched once it parses as a messages
  // array. InvalidArgument for malformed messages or both options set.
  absl::StatusOr<TokenIds> TokenizeChat(const nlohmann::json& messages,
                                        const ChatOptions& options) const override;
  // POST /detokenize {model?, tokens} → prompt.
  absl::StatusOr<std::string> Detokenize(std::span<const TokenId> ids) const override;

  // Completion form, the whole response.
  absl::StatusOr<TokenizeResponse> TokenizeText(std::string_view text) const;

  // Errors of every call: Unavailable after the last retryable failure (transport error,
  // 408/429/5xx) with the endpoint and the last cause; InvalidArgument (400), NotFound (404),
  // Unimplemented (501) or FailedPrecondition (any other status, 3xx included) at once, with
  // the engine's error message; Internal for a 200 whose body is not the documented JSON.

  const std::string& endpoint() const { return options_.endpoint; }
  const std::string& model() const { return options_.model; }

 private:
  RemoteTokenizer(RemoteTokenizerOptions options, std::string origin, std::string prefix);
  // POSTs `body` to prefix_ + path with retries; the 200 body on success.
  absl::StatusOr<std::string> Post(const std::string& path, const std::string& body) const;
  std::unique_ptr<httplib::Client> Acquire() const;
  void Release(std::unique_ptr<httplib::Client> client) const;

  // Constant after construction.
  const RemoteTokenizerOptions options_;
  const std::string origin_;  // scheme://host:port
  const std::string prefix_;  // path prefix, "" or "/v1"

  mutable std::mutex mu_;
  mutable std::vector<std::unique_ptr<httplib::Client>> idle_;  // guarded by mu_
};

// One RemoteTokenizer per (endpoint, model), created on first use and kept.
class RemoteTokenizerPool {
 public:
  // `defaults` supplies everything but endpoint and model. At most `max_tokenizers` entries
  // (AIBRIX_MAX_TOKENIZERS_PER_POOL).
  explicit RemoteTokenizerPool(RemoteTokenizerOptions defaults, size_t max_tokenizers = 100);
  RemoteTokenizerPool(const RemoteTokenizerPool&) = delete;
  RemoteTokenizerPool& operator=(const RemoteTokenizerPool&) = delete;

  // The tokenizer of (endpoint, model). Errors: as RemoteTokenizer::Create; ResourceExhausted
  // when the pool is full (the caller then uses its local tokenizer).
  absl::StatusOr<std::shared_ptr<const RemoteTokenizer>> Get(std::string_view endpoint,
                                                             std::string_view model);
  size_t size() const;

 private:
  const RemoteTokenizerOptions defaults_;
  const size_t max_tokenizers_;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<const RemoteTokenizer>> entries_;  // guarded by mu_; small
};

}  // namespace aibrix::tokenizer
