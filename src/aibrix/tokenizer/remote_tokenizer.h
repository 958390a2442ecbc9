// RemoteTokenizer: token ids from a vLLM engine's `POST /tokenize` and `POST /detokenize`
// (protocols/README.md §5), so the token ids the prefix index hashes are the engine's own.
// Asynchronous, on the service's upstream client (http::Client): no thread waits for an
// engine. RemoteTokenizerPool keeps one tokenizer per (endpoint, model).
//
//   RemoteTokenizerOptions o;
//   o.endpoint = "http://10.0.0.7:8000";
//   o.model = "llama-3-1-8b";
//   ASSIGN_OR_RETURN(auto tok, RemoteTokenizer::Create(o));
//   tok->Tokenize(exchange->io(), "Hello, world", [](absl::StatusOr<TokenIds> ids) { ... });
//
// Completion: every call takes the io_context to run on (a server exchange's I/O thread,
// Exchange::io()) and a callback that runs exactly once on that io_context's thread — never
// inline, argument errors included (they are posted). If the io_context is stopped and
// destroyed first, the callback is destroyed without running (service shutdown).
//
// Retries (spec §7.5): transport errors and HTTP 408, 500, 502, 503, 504 are retried up to
// max_retries times with backoff base·2^(n−1) capped at max_backoff; 429 waits Retry-After
// (seconds or an HTTP date; capped at max_retry_after) else the backoff; every other status
// fails at once. Waits between attempts are asio timers on the call's io_context.
//
// Limits: each attempt is bounded by `timeout` (connect, then the whole answer); an answer
// (or error body) over max_response_bytes is cut off and fails at once (ResourceExhausted),
// so a hostile engine cannot make us buffer without bound.
//
// TLS: an https endpoint is served over TLS with the engine's certificate verified (the
// system trust store, or tls_ca_file) against the endpoint's host. https connections are
// not kept alive between calls (http::Client pools plain connections only).
//
// Thread safety: RemoteTokenizer and RemoteTokenizerPool are safe to call concurrently from
// any thread. A call in flight holds what it needs (options, the http::Client), so a
// tokenizer may be destroyed while its calls run. Keep-alive connections are pooled per
// (I/O thread, engine) by the tokenizer's http::Client; no lock is held during a request.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "aibrix/common/clock.h"
#include "aibrix/tokenizer/tokenizer.h"

namespace boost::asio {
class io_context;
}

namespace aibrix::tokenizer {

struct RemoteTokenizerOptions {
  // "http://host[:port]" or "https://host[:port]", optionally with a path prefix ("/v1" →
  // requests go to "/v1/tokenize"). Default ports 80 and 443.
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
  // Per attempt: connecting, then the whole answer (AIBRIX_TOKENIZER_REQUEST_TIMEOUT).
  std::chrono::milliseconds timeout{5000};
  // Largest answer body read (a /tokenize answer of a 128k-token prompt is under 1 MiB).
  size_t max_response_bytes = 64 << 20;
  // https only: a PEM file of the certificate authorities to trust instead of the system's.
  std::string tls_ca_file;
  // Called with each wait between attempts before it starts (tests record them). Optional.
  std::function<void(std::chrono::milliseconds)> on_retry_wait;
  // Wall clock for Retry-After dates. Not owned; must outlive every call.
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

class RemoteTokenizer {
 public:
  // The completion callback of a call returning T.
  template <typename T>
  using Done = absl::AnyInvocable<void(absl::StatusOr<T>)>;

  // Errors: InvalidArgument for an endpoint that is not http(s)://host[:port][/prefix], a
  // negative max_retries, a non-positive timeout or max_response_bytes, or (https) a TLS
  // context that cannot be set up (unreadable tls_ca_file).
  static absl::StatusOr<std::unique_ptr<RemoteTokenizer>> Create(RemoteTokenizerOptions options);
  ~RemoteTokenizer();
  RemoteTokenizer(const RemoteTokenizer&) = delete;
  RemoteTokenizer& operator=(const RemoteTokenizer&) = delete;

  // Every call completes on `io` as described at the top. Errors of every call: Unavailable
  // after the last retryable failure (transport error, timeout, 408/429/5xx) with the
  // endpoint and the last cause; InvalidArgument (400), NotFound (404), Unimplemented (501)
  // or FailedPrecondition (any other status, 3xx included) at once, with the engine's error
  // message; ResourceExhausted for an answer over max_response_bytes; Internal for a 200
  // whose body is not the documented JSON.

  // Completion form {model?, prompt, add_special_tokens}: the token ids. InvalidArgument for
  // a prompt that is not valid UTF-8.
  void Tokenize(boost::asio::io_context& io, std::string_view text, Done<TokenIds> done) const;
  // Completion form, the whole response.
  void TokenizeText(boost::asio::io_context& io, std::string_view text,
                    Done<TokenizeResponse> done) const;
  // Chat form {model?, messages: [{role, content}], add_special_tokens: false,
  // add_generation_prompt, continue_final_message?}. InvalidArgument (nothing sent) for no
  // messages, text that is not valid UTF-8, or both options set.
  void TokenizeChat(boost::asio::io_context& io, std::span<const ChatMessage> messages,
                    const ChatOptions& options, Done<TokenIds> done) const;
  // POST /detokenize {model?, tokens} → prompt.
  void Detokenize(boost::asio::io_context& io, std::span<const TokenId> ids,
                  Done<std::string> done) const;

  const std::string& endpoint() const;
  const std::string& model() const;

  // Constant state shared with the calls in flight.
  struct Core;

 private:
  explicit RemoteTokenizer(std::shared_ptr<const Core> core);
  // POSTs `body` to the prefix + `path` with retries; `done` gets the 200 body.
  void Post(boost::asio::io_context& io, std::string_view path, std::string body,
            Done<std::string> done) const;

  const std::shared_ptr<const Core> core_;
};

// One RemoteTokenizer per (endpoint, model), created on first use. Bounded: at most
// `max_tokenizers` (AIBRIX_MAX_TOKENIZERS_PER_POOL), the least recently used dropped first
// when a new one is needed, and entries unused for `ttl` (AIBRIX_TOKENIZER_TTL) dropped then
// too — engine pods come and go (Kubernetes gives a new pod a new IP), so the pool never
// fills up with the endpoints of pods long gone. A dropped tokenizer's calls in flight finish.
class RemoteTokenizerPool {
 public:
  // `defaults` supplies everything but endpoint and model, and the clock the TTL is measured
  // on (defaults.clock).
  explicit RemoteTokenizerPool(RemoteTokenizerOptions defaults, size_t max_tokenizers = 100,
                               std::chrono::seconds ttl = std::chrono::seconds(300));
  RemoteTokenizerPool(const RemoteTokenizerPool&) = delete;
  RemoteTokenizerPool& operator=(const RemoteTokenizerPool&) = delete;

  // The tokenizer of (endpoint, model); `*created` (when given) says whether it was made by
  // this call. Errors: as RemoteTokenizer::Create.
  absl::StatusOr<std::shared_ptr<const RemoteTokenizer>> Get(std::string_view endpoint,
                                                             std::string_view model,
                                                             bool* created = nullptr);
  size_t size() const;

 private:
  struct Entry {
    std::shared_ptr<const RemoteTokenizer> tokenizer;
    std::chrono::steady_clock::time_point last_used;
  };

  const RemoteTokenizerOptions defaults_;
  const size_t max_tokenizers_;
  const std::chrono::seconds ttl_;
  mutable std::mutex mu_;
  std::vector<Entry> entries_;  // guarded by mu_; small
};

}  // namespace aibrix::tokenizer
