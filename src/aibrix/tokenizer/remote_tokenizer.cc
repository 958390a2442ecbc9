#include "aibrix/tokenizer/remote_tokenizer.h"

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/system_error.hpp>
#include <charconv>
#include <ctime>
#include <limits>
#include <utility>

#include "absl/strings/numbers.h"
#include "aibrix/common/net.h"
#include "aibrix/common/status_macros.h"
#include "aibrix/common/strings.h"
#include "aibrix/http/client.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace aibrix::tokenizer {

namespace asio = boost::asio;

namespace {

using std::chrono::milliseconds;

// The engine's error message from either error shape, else the (truncated) body.
std::string ErrorMessage(const std::string& body) {
  try {
    const nlohmann::json j = nlohmann::json::parse(body);
    if (j.is_object()) {
      if (j.contains("error") && j["error"].is_object() && j["error"].contains("message") &&
          j["error"]["message"].is_string()) {
        return j["error"]["message"].get<std::string>();
      }
      if (j.contains("message") && j["message"].is_string()) return j["message"].get<std::string>();
    }
  } catch (const nlohmann::json::exception&) {
  }
  return body.substr(0, 200);
}

absl::Status StatusForHttp(int status, const std::string& where, const std::string& body) {
  const std::string msg = fmt::format("{}: HTTP {}: {}", where, status, ErrorMessage(body));
  switch (status) {
    case 400:
      return absl::InvalidArgumentError(msg);
    case 404:
      return absl::NotFoundError(msg);
    case 501:
      return absl::UnimplementedError(msg);
    default:
      return absl::FailedPreconditionError(msg);
  }
}

absl::StatusOr<TokenizeResponse> ParseTokenizeResponse(const std::string& body,
                                                       const std::string& where) {
  const auto bad = [&](std::string_view why) {
    return absl::InternalError(fmt::format("{}: malformed /tokenize response: {}", where, why));
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(body);
  } catch (const nlohmann::json::exception& e) {
    return bad(e.what());
  }
  if (!j.is_object()) return bad("not an object");
  auto tokens = j.find("tokens");
  if (tokens == j.end() || !tokens->is_array()) return bad("`tokens` missing or not an array");
  TokenizeResponse r;
  r.tokens.reserve(tokens->size());
  for (const nlohmann::json& t : *tokens) {
    if (!t.is_number_integer()) return bad("a token id is not an integer");
    const int64_t v = t.get<int64_t>();
    if (v < 0 || v > std::numeric_limits<TokenId>::max()) return bad("a token id is out of range");
    r.tokens.push_back(static_cast<TokenId>(v));
  }
  if (auto c = j.find("count"); c != j.end()) {
    if (!c->is_number_integer()) return bad("`count` is not an integer");
    r.count = c->get<int64_t>();
  } else {
    r.count = static_cast<int64_t>(r.tokens.size());
  }
  if (auto m = j.find("max_model_len"); m != j.end() && m->is_number_integer()) {
    r.max_model_len = m->get<int64_t>();
  }
  return r;
}

}  // namespace

bool IsRetryableHttpStatus(int status) {
  switch (status) {
    case 408:
    case 429:
    case 500:
    case 502:
    case 503:
    case 504:
      return true;
    default:
      return false;
  }
}

milliseconds RetryBackoff(int n, milliseconds base, milliseconds cap) {
  if (n < 1) n = 1;
  milliseconds d = base;
  for (int i = 1; i < n && d < cap; ++i) d *= 2;
  return std::min(d, cap);
}

std::optional<milliseconds> ParseRetryAfter(std::string_view value,
                                            std::chrono::system_clock::time_point now) {
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
  if (value.empty()) return std::nullopt;
  int64_t seconds = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
  if (ec == std::errc() && end == value.data() + value.size()) {
    if (seconds < 0) return std::nullopt;
    return milliseconds(std::min<int64_t>(seconds, 86'400) * 1000);
  }
  // IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
  std::tm tm{};
  const std::string text(value);
  const char* rest = strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (rest == nullptr || *rest != '\0') return std::nullopt;
  const auto at = std::chrono::system_clock::from_time_t(timegm(&tm));
  if (at <= now) return milliseconds(0);
  return std::chrono::duration_cast<milliseconds>(at - now);
}

struct RemoteTokenizer::Core {
  RemoteTokenizerOptions options;
  std::string host;  // name or IP address (IPv6 without brackets)
  uint16_t port = 0;
  std::string prefix;                       // path prefix, "" or "/v1"
  std::shared_ptr<asio::ssl::context> tls;  // https only
  // Start is the only member used; the client locks its own connection pool.
  std::unique_ptr<http::Client> client;
};

namespace {

// Runs `done` with `result` on `io` (never inline).
template <typename T>
void PostResult(asio::io_context& io, RemoteTokenizer::Done<T> done, absl::StatusOr<T> result) {
  asio::post(io, [done = std::move(done), result = std::move(result)]() mutable {
    done(std::move(result));
  });
}

// One POST with its retries. Every method after Start runs on the io_context's thread.
class PostCall final : public http::ResponseObserver,
                       public std::enable_shared_from_this<PostCall> {
 public:
  PostCall(std::shared_ptr<const RemoteTokenizer::Core> core, asio::io_context& io,
           std::string_view path, std::string body, RemoteTokenizer::Done<std::string> done)
      : core_(std::move(core)),
        io_(io),
        where_(fmt::format("remote tokenizer {}{}", core_->options.endpoint, path)),
        target_(core_->prefix + std::string(path)),
        body_(std::move(body)),
        done_(std::move(done)),
        timer_(io) {}

  void Start() {
    asio::post(io_, [self = shared_from_this()] { self->Attempt(); });
  }

  void OnHead(int status, const http::Headers& headers) override {
    status_ = status;
    if (status == 429 && headers.Has("Retry-After")) {
      retry_after_ = std::string(headers.Get("Retry-After"));
    }
    uint64_t length = 0;
    if (headers.Has("Content-Length") &&
        absl::SimpleAtoi(common::AsAbsl(headers.Get("Content-Length")), &length) &&
        length > core_->options.max_response_bytes) {
      TooLarge();
    }
  }

  void OnBody(std::string_view data) override {
    if (answer_.size() + data.size() > core_->options.max_response_bytes) {
      TooLarge();
      return;
    }
    answer_.append(data);
    call_->ReadMore();
  }

  void OnEnd(http::ClientError error, std::string_view detail) override {
    call_.reset();  // ends the call <-> observer cycle
    const RemoteTokenizerOptions& o = core_->options;
    if (too_large_) {
      Finish(absl::ResourceExhaustedError(
          fmt::format("{}: the answer is larger than {} bytes", where_, o.max_response_bytes)));
      return;
    }
    std::optional<milliseconds> wait;
    if (error != http::ClientError::kNone) {
      last_error_ = fmt::format("transport error: {}: {}", http::ClientErrorName(error), detail);
    } else if (status_ == 200) {
      Finish(std::move(answer_));
      return;
    } else if (!IsRetryableHttpStatus(status_)) {
      Finish(StatusForHttp(status_, where_, answer_));
      return;
    } else {
      last_error_ = fmt::format("HTTP {}: {}", status_, ErrorMessage(answer_));
      if (retry_after_) {
        wait = ParseRetryAfter(*retry_after_, o.clock->WallNow());
        if (wait) wait = std::min(*wait, o.max_retry_after);
      }
    }
    if (attempt_ == o.max_retries) {
      Finish(absl::UnavailableError(
          fmt::format("{}: failed after {} attempts: {}", where_, o.max_retries + 1, last_error_)));
      return;
    }
    ++attempt_;
    const milliseconds delay = wait.value_or(RetryBackoff(attempt_, o.base_backoff, o.max_backoff));
    if (o.on_retry_wait) o.on_retry_wait(delay);
    timer_.expires_after(delay);
    // The timer is never cancelled: it only fails when the io_context goes away.
    timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->Attempt();
    });
  }

 private:
  void Attempt() {
    status_ = 0;
    retry_after_.reset();
    answer_.clear();
    http::ClientRequest request;
    request.host = core_->host;
    request.port = core_->port;
    request.target = target_;
    request.headers.Set("Content-Type", "application/json");
    request.headers.Set("Accept", "application/json");
    request.body = body_;  // kept for a retry
    request.tls = core_->tls;
    call_ = core_->client->Start(io_, std::move(request), shared_from_this());
  }

  void TooLarge() {
    too_large_ = true;
    if (call_) call_->Cancel();  // OnEnd(kCancelled) follows
  }

  void Finish(absl::StatusOr<std::string> result) {
    auto done = std::move(done_);
    done(std::move(result));
  }

  const std::shared_ptr<const RemoteTokenizer::Core> core_;
  asio::io_context& io_;
  const std::string where_;
  const std::string target_;
  const std::string body_;
  RemoteTokenizer::Done<std::string> done_;
  asio::steady_timer timer_;
  // The current attempt.
  std::shared_ptr<http::ClientCall> call_;
  int attempt_ = 0;
  int status_ = 0;
  std::optional<std::string> retry_after_;
  std::string answer_;
  bool too_large_ = false;
  std::string last_error_;
};

// A JSON body, or InvalidArgument naming `what` (nlohmann refuses invalid UTF-8).
absl::StatusOr<std::string> Dump(const nlohmann::json& request, std::string_view what) {
  try {
    return request.dump();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(fmt::format("remote tokenizer: {}: {}", what, e.what()));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<RemoteTokenizer>> RemoteTokenizer::Create(
    RemoteTokenizerOptions options) {
  const std::string& ep = options.endpoint;
  const auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(fmt::format("remote tokenizer: endpoint '{}' {}", ep, why));
  };
  const size_t scheme_end = ep.find("://");
  if (scheme_end == std::string::npos) return bad("is not http(s)://host[:port][/prefix]");
  const std::string_view scheme = std::string_view(ep).substr(0, scheme_end);
  if (scheme != "http" && scheme != "https") return bad("is not http(s)://host[:port][/prefix]");
  const bool https = scheme == "https";
  const size_t path_start = ep.find('/', scheme_end + 3);
  const std::string_view authority = std::string_view(ep).substr(
      scheme_end + 3,
      path_start == std::string::npos ? std::string::npos : path_start - scheme_end - 3);
  if (authority.empty()) return bad("has no host");
  absl::StatusOr<common::HostPort> host_port = common::ParseHostPort(authority, https ? 443 : 80);
  if (!host_port.ok())
    return bad(fmt::format("has a bad host:port: {}", common::AsStd(host_port.status().message())));
  std::string prefix = path_start == std::string::npos ? "" : ep.substr(path_start);
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  if (options.max_retries < 0 || options.timeout.count() <= 0 || options.max_response_bytes == 0) {
    return absl::InvalidArgumentError(fmt::format(
        "remote tokenizer {}: max_retries must be >= 0, timeout and max_response_bytes > 0", ep));
  }
  auto core = std::make_shared<Core>();
  if (https) {
    try {
      core->tls = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
      core->tls->set_verify_mode(asio::ssl::verify_peer);
      if (options.tls_ca_file.empty()) {
        core->tls->set_default_verify_paths();
      } else {
        core->tls->load_verify_file(options.tls_ca_file);
      }
    } catch (const boost::system::system_error& e) {
      return absl::InvalidArgumentError(
          fmt::format("remote tokenizer {}: cannot set up TLS (CA file '{}'): {}", ep,
                      options.tls_ca_file, e.what()));
    }
  }
  http::ClientOptions client;
  client.connect_timeout = options.timeout;
  client.first_byte_timeout = options.timeout;
  client.idle_timeout = options.timeout;
  client.total_timeout = options.timeout;
  client.max_idle_per_address = 8;
  core->client = std::make_unique<http::Client>(client);
  core->host = std::move(host_port->host);
  core->port = host_port->port;
  core->prefix = std::move(prefix);
  core->options = std::move(options);
  return std::unique_ptr<RemoteTokenizer>(new RemoteTokenizer(std::move(core)));
}

RemoteTokenizer::RemoteTokenizer(std::shared_ptr<const Core> core) : core_(std::move(core)) {}

RemoteTokenizer::~RemoteTokenizer() = default;

const std::string& RemoteTokenizer::endpoint() const { return core_->options.endpoint; }
const std::string& RemoteTokenizer::model() const { return core_->options.model; }

void RemoteTokenizer::Post(asio::io_context& io, std::string_view path, std::string body,
                           Done<std::string> done) const {
  std::make_shared<PostCall>(core_, io, path, std::move(body), std::move(done))->Start();
}

void RemoteTokenizer::TokenizeText(asio::io_context& io, std::string_view text,
                                   Done<TokenizeResponse> done) const {
  nlohmann::json req = nlohmann::json::object();
  if (!model().empty()) req["model"] = model();
  req["prompt"] = std::string(text);
  req["add_special_tokens"] = core_->options.add_special_tokens;
  absl::StatusOr<std::string> body = Dump(req, "prompt");
  if (!body.ok()) {
    PostResult<TokenizeResponse>(io, std::move(done), body.status());
    return;
  }
  Post(io, "/tokenize", std::move(*body),
       [where = fmt::format("remote tokenizer {}", endpoint()),
        done = std::move(done)](absl::StatusOr<std::string> answer) mutable {
         if (!answer.ok()) {
           done(answer.status());
           return;
         }
         done(ParseTokenizeResponse(*answer, where));
       });
}

namespace {

// The token ids of a /tokenize answer, for `done`.
RemoteTokenizer::Done<TokenizeResponse> TokensOnly(RemoteTokenizer::Done<TokenIds> done) {
  return [done = std::move(done)](absl::StatusOr<TokenizeResponse> r) mutable {
    if (!r.ok()) {
      done(r.status());
      return;
    }
    done(std::move(r->tokens));
  };
}

}  // namespace

void RemoteTokenizer::Tokenize(asio::io_context& io, std::string_view text,
                               Done<TokenIds> done) const {
  TokenizeText(io, text, TokensOnly(std::move(done)));
}

void RemoteTokenizer::TokenizeChat(asio::io_context& io, std::span<const ChatMessage> messages,
                                   const ChatOptions& options, Done<TokenIds> done) const {
  if (options.add_generation_prompt && options.continue_final_message) {
    PostResult<TokenIds>(io, std::move(done),
                         absl::InvalidArgumentError("cannot set both `continue_final_message` "
                                                    "and `add_generation_prompt` to true"));
    return;
  }
  if (messages.empty()) {
    PostResult<TokenIds>(io, std::move(done),
                         absl::InvalidArgumentError("`messages` must not be empty"));
    return;
  }
  nlohmann::json list = nlohmann::json::array();
  for (const ChatMessage& m : messages) {
    list.push_back({{"role", m.role}, {"content", m.content}});
  }
  nlohmann::json req = nlohmann::json::object();
  if (!model().empty()) req["model"] = model();
  req["messages"] = std::move(list);
  req["add_special_tokens"] = false;
  req["add_generation_prompt"] = options.add_generation_prompt;
  if (options.continue_final_message) req["continue_final_message"] = true;
  absl::StatusOr<std::string> body = Dump(req, "messages");
  if (!body.ok()) {
    PostResult<TokenIds>(io, std::move(done), body.status());
    return;
  }
  Post(io, "/tokenize", std::move(*body),
       [where = fmt::format("remote tokenizer {}", endpoint()),
        done = TokensOnly(std::move(done))](absl::StatusOr<std::string> answer) mutable {
         if (!answer.ok()) {
           done(answer.status());
           return;
         }
         done(ParseTokenizeResponse(*answer, where));
       });
}

void RemoteTokenizer::Detokenize(asio::io_context& io, std::span<const TokenId> ids,
                                 Done<std::string> done) const {
  nlohmann::json req = nlohmann::json::object();
  if (!model().empty()) req["model"] = model();
  req["tokens"] = std::vector<TokenId>(ids.begin(), ids.end());
  Post(io, "/detokenize", req.dump(),
       [where = fmt::format("remote tokenizer {}", endpoint()),
        done = std::move(done)](absl::StatusOr<std::string> answer) mutable {
         if (!answer.ok()) {
           done(answer.status());
           return;
         }
         std::optional<std::string> prompt;
         try {
           const nlohmann::json j = nlohmann::json::parse(*answer);
           if (j.is_object() && j.contains("prompt") && j["prompt"].is_string()) {
             prompt = j["prompt"].get<std::string>();
           }
         } catch (const nlohmann::json::exception&) {
         }
         if (!prompt) {
           done(absl::InternalError(
               fmt::format("{}: malformed /detokenize response: no string `prompt`", where)));
           return;
         }
         done(std::move(*prompt));
       });
}

RemoteTokenizerPool::RemoteTokenizerPool(RemoteTokenizerOptions defaults, size_t max_tokenizers,
                                         std::chrono::seconds ttl)
    : defaults_(std::move(defaults)),
      max_tokenizers_(std::max<size_t>(1, max_tokenizers)),
      ttl_(ttl) {}

absl::StatusOr<std::shared_ptr<const RemoteTokenizer>> RemoteTokenizerPool::Get(
    std::string_view endpoint, std::string_view model, bool* created) {
  const auto now = defaults_.clock->Now();
  if (created != nullptr) *created = false;
  std::lock_guard lock(mu_);
  for (Entry& e : entries_) {
    if (e.tokenizer->endpoint() == endpoint && e.tokenizer->model() == model) {
      e.last_used = now;
      return e.tokenizer;
    }
  }
  RemoteTokenizerOptions o = defaults_;
  o.endpoint = std::string(endpoint);
  o.model = std::string(model);
  ASSIGN_OR_RETURN(std::shared_ptr<const RemoteTokenizer> t, RemoteTokenizer::Create(std::move(o)));
  std::erase_if(entries_, [&](const Entry& e) { return now - e.last_used >= ttl_; });
  if (entries_.size() >= max_tokenizers_) {
    entries_.erase(
        std::min_element(entries_.begin(), entries_.end(),
                         [](const Entry& a, const Entry& b) { return a.last_used < b.last_used; }));
  }
  entries_.push_back(Entry{std::move(t), now});
  if (created != nullptr) *created = true;
  return entries_.back().tokenizer;
}

size_t RemoteTokenizerPool::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace aibrix::tokenizer
