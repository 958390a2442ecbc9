#include "aibrix/tokenizer/remote_tokenizer.h"

#include <algorithm>
#include <charconv>
#include <ctime>
#include <limits>
#include <thread>
#include <utility>

#include "fmt/format.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace aibrix::tokenizer {

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

absl::StatusOr<std::unique_ptr<RemoteTokenizer>> RemoteTokenizer::Create(
    RemoteTokenizerOptions options) {
  const std::string& ep = options.endpoint;
  const size_t scheme_end = ep.find("://");
  if (scheme_end == std::string::npos ||
      (ep.compare(0, scheme_end, "http") != 0 && ep.compare(0, scheme_end, "https") != 0)) {
    return absl::InvalidArgumentError(
        fmt::format("remote tokenizer: endpoint '{}' is not http(s)://host[:port][/prefix]", ep));
  }
  const size_t path_start = ep.find('/', scheme_end + 3);
  std::string origin = ep.substr(0, path_start);
  std::string prefix = path_start == std::string::npos ? "" : ep.substr(path_start);
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  if (origin.size() == scheme_end + 3) {
    return absl::InvalidArgumentError(
        fmt::format("remote tokenizer: endpoint '{}' has no host", ep));
  }
  if (options.max_retries < 0 || options.timeout.count() <= 0) {
    return absl::InvalidArgumentError(
        fmt::format("remote tokenizer {}: max_retries must be >= 0 and timeout > 0", ep));
  }
  if (!options.sleep) {
    options.sleep = [](milliseconds d) { std::this_thread::sleep_for(d); };
  }
  return std::unique_ptr<RemoteTokenizer>(
      new RemoteTokenizer(std::move(options), std::move(origin), std::move(prefix)));
}

RemoteTokenizer::RemoteTokenizer(RemoteTokenizerOptions options, std::string origin,
                                 std::string prefix)
    : options_(std::move(options)), origin_(std::move(origin)), prefix_(std::move(prefix)) {}

RemoteTokenizer::~RemoteTokenizer() = default;

std::unique_ptr<httplib::Client> RemoteTokenizer::Acquire() const {
  {
    std::lock_guard lock(mu_);
    if (!idle_.empty()) {
      std::unique_ptr<httplib::Client> c = std::move(idle_.back());
      idle_.pop_back();
      return c;
    }
  }
  auto c = std::make_unique<httplib::Client>(origin_);
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(options_.timeout).count();
  c->set_connection_timeout(us / 1'000'000, us % 1'000'000);
  c->set_read_timeout(us / 1'000'000, us % 1'000'000);
  c->set_write_timeout(us / 1'000'000, us % 1'000'000);
  c->set_keep_alive(true);
  c->set_tcp_nodelay(true);  // headers and body are separate writes: avoid Nagle + delayed ACK
  return c;
}

void RemoteTokenizer::Release(std::unique_ptr<httplib::Client> client) const {
  std::lock_guard lock(mu_);
  if (idle_.size() < 8) idle_.push_back(std::move(client));
}

absl::StatusOr<std::string> RemoteTokenizer::Post(const std::string& path,
                                                  const std::string& body) const {
  const std::string where = fmt::format("remote tokenizer {}{}", options_.endpoint, path);
  std::string last_error;
  for (int attempt = 0; attempt <= options_.max_retries; ++attempt) {
    std::unique_ptr<httplib::Client> client = Acquire();
    httplib::Result res = client->Post((prefix_ + path).c_str(), body, "application/json");
    std::optional<milliseconds> wait;
    if (!res) {
      // Transport error: the connection is in an unknown state, drop it.
      last_error = fmt::format("transport error: {}", httplib::to_string(res.error()));
    } else {
      const int status = res->status;
      if (status == 200) {
        std::string out = std::move(res->body);
        Release(std::move(client));
        return out;
      }
      Release(std::move(client));
      if (!IsRetryableHttpStatus(status)) return StatusForHttp(status, where, res->body);
      last_error = fmt::format("HTTP {}: {}", status, ErrorMessage(res->body));
      if (status == 429 && res->has_header("Retry-After")) {
        wait = ParseRetryAfter(res->get_header_value("Retry-After"), options_.clock->WallNow());
        if (wait) wait = std::min(*wait, options_.max_retry_after);
      }
    }
    if (attempt == options_.max_retries) break;
    options_.sleep(
        wait.value_or(RetryBackoff(attempt + 1, options_.base_backoff, options_.max_backoff)));
  }
  return absl::UnavailableError(
      fmt::format("{}: failed after {} attempts: {}", where, options_.max_retries + 1, last_error));
}

absl::StatusOr<TokenizeResponse> RemoteTokenizer::TokenizeText(std::string_view text) const {
  nlohmann::json req = nlohmann::json::object();
  if (!options_.model.empty()) req["model"] = options_.model;
  req["prompt"] = std::string(text);
  req["add_special_tokens"] = options_.add_special_tokens;
  std::string body;
  try {
    body = req.dump();
  } catch (const nlohmann::json::exception& e) {  // invalid UTF-8 in the prompt
    return absl::InvalidArgumentError(fmt::format("remote tokenizer: prompt: {}", e.what()));
  }
  absl::StatusOr<std::string> resp = Post("/tokenize", body);
  if (!resp.ok()) return resp.status();
  return ParseTokenizeResponse(*resp, fmt::format("remote tokenizer {}", options_.endpoint));
}

absl::StatusOr<TokenIds> RemoteTokenizer::Tokenize(std::string_view text) const {
  absl::StatusOr<TokenizeResponse> r = TokenizeText(text);
  if (!r.ok()) return r.status();
  return std::move(r->tokens);
}

absl::StatusOr<TokenIds> RemoteTokenizer::TokenizeChat(const nlohmann::json& messages,
                                                       const ChatOptions& options) const {
  if (options.add_generation_prompt && options.continue_final_message) {
    return absl::InvalidArgumentError(
        "cannot set both `continue_final_message` and `add_generation_prompt` to true");
  }
  if (absl::StatusOr<std::vector<ChatMessage>> parsed = ParseChatMessages(messages); !parsed.ok()) {
    return parsed.status();
  }
  nlohmann::json req = nlohmann::json::object();
  if (!options_.model.empty()) req["model"] = options_.model;
  req["messages"] = messages;
  req["add_special_tokens"] = false;
  req["add_generation_prompt"] = options.add_generation_prompt;
  if (options.continue_final_message) req["continue_final_message"] = true;
  std::string body;
  try {
    body = req.dump();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(fmt::format("remote tokenizer: messages: {}", e.what()));
  }
  absl::StatusOr<std::string> resp = Post("/tokenize", body);
  if (!resp.ok()) return resp.status();
  absl::StatusOr<TokenizeResponse> r =
      ParseTokenizeResponse(*resp, fmt::format("remote tokenizer {}", options_.endpoint));
  if (!r.ok()) return r.status();
  return std::move(r->tokens);
}

absl::StatusOr<std::string> RemoteTokenizer::Detokenize(std::span<const TokenId> ids) const {
  nlohmann::json req = nlohmann::json::object();
  if (!options_.model.empty()) req["model"] = options_.model;
  req["tokens"] = std::vector<TokenId>(ids.begin(), ids.end());
  absl::StatusOr<std::string> resp = Post("/detokenize", req.dump());
  if (!resp.ok()) return resp.status();
  try {
    const nlohmann::json j = nlohmann::json::parse(*resp);
    if (j.is_object() && j.contains("prompt") && j["prompt"].is_string()) {
      return j["prompt"].get<std::string>();
    }
  } catch (const nlohmann::json::exception&) {
  }
  return absl::InternalError(fmt::format(
      "remote tokenizer {}: malformed /detokenize response: no string `prompt`", endpoint()));
}

RemoteTokenizerPool::RemoteTokenizerPool(RemoteTokenizerOptions defaults, size_t max_tokenizers)
    : defaults_(std::move(defaults)), max_tokenizers_(max_tokenizers) {}

absl::StatusOr<std::shared_ptr<const RemoteTokenizer>> RemoteTokenizerPool::Get(
    std::string_view endpoint, std::string_view model) {
  std::lock_guard lock(mu_);
  for (const auto& e : entries_) {
    if (e->endpoint() == endpoint && e->model() == model) return e;
  }
  if (entries_.size() >= max_tokenizers_) {
    return absl::ResourceExhaustedError(fmt::format(
        "remote tokenizer pool is full ({} tokenizers); not adding {}", max_tokenizers_, endpoint));
  }
  RemoteTokenizerOptions o = defaults_;
  o.endpoint = std::string(endpoint);
  o.model = std::string(model);
  absl::StatusOr<std::unique_ptr<RemoteTokenizer>> t = RemoteTokenizer::Create(std::move(o));
  if (!t.ok()) return t.status();
  entries_.push_back(std::shared_ptr<const RemoteTokenizer>(std::move(*t)));
  return entries_.back();
}

size_t RemoteTokenizerPool::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace aibrix::tokenizer
