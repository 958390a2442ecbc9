#include "client.h"

#include <charconv>
#include <chrono>

#include "fmt/format.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "stats.h"

namespace aibrix::loadgen {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kMaxErrorBody = 200;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

template <typename Rep>
std::pair<time_t, time_t> SplitSeconds(Rep seconds) {
  const auto whole = static_cast<time_t>(seconds);
  return {whole, static_cast<time_t>((seconds - static_cast<double>(whole)) * 1e6)};
}

void ConfigureClient(httplib::Client& client, double timeout_s, double connect_timeout_s) {
  auto [rs, ru] = SplitSeconds(timeout_s);
  auto [cs, cu] = SplitSeconds(connect_timeout_s);
  client.set_connection_timeout(cs, cu);
  client.set_read_timeout(rs, ru);
  client.set_write_timeout(rs, ru);
  client.set_keep_alive(true);
  client.set_tcp_nodelay(true);
}

std::string Truncate(std::string_view s) {
  std::string out(s.substr(0, kMaxErrorBody));
  for (char& c : out) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return out;
}

std::string TransportErrorKind(httplib::Error e) {
  switch (e) {
    case httplib::Error::Connection:
    case httplib::Error::ConnectionTimeout:
    case httplib::Error::BindIPAddress:
      return "connect";
    case httplib::Error::Write:
      return "write";
    default:
      return "read";
  }
}

// The text a stream chunk adds: completions' `text` or chat's `delta.content`.
size_t ChunkTextBytes(const json& chunk) {
  size_t n = 0;
  const auto it = chunk.find("choices");
  if (it == chunk.end() || !it->is_array()) return 0;
  for (const json& choice : *it) {
    if (!choice.is_object()) continue;
    if (auto t = choice.find("text"); t != choice.end() && t->is_string()) {
      n += t->get_ref<const std::string&>().size();
    }
    if (auto d = choice.find("delta"); d != choice.end() && d->is_object()) {
      if (auto c = d->find("content"); c != d->end() && c->is_string()) {
        n += c->get_ref<const std::string&>().size();
      }
    }
  }
  return n;
}

}  // namespace

std::string HttpUrl::Origin() const {
  return host.find(':') != std::string::npos ? fmt::format("http://[{}]:{}", host, port)
                                             : fmt::format("http://{}:{}", host, port);
}

absl::StatusOr<HttpUrl> ParseHttpUrl(const std::string& url) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(fmt::format("bad URL '{}': {}", url, why));
  };
  std::string_view rest = url;
  if (const size_t scheme = rest.find("://"); scheme != std::string_view::npos) {
    if (rest.substr(0, scheme) != "http") return bad("only http:// is supported");
    rest.remove_prefix(scheme + 3);
  }
  HttpUrl out;
  const size_t slash = rest.find('/');
  if (slash != std::string_view::npos) {
    out.path = std::string(rest.substr(slash));
    rest = rest.substr(0, slash);
  }
  std::string_view port_text;
  bool has_port = false;
  if (rest.starts_with('[')) {
    const size_t close = rest.find(']');
    if (close == std::string_view::npos) return bad("unterminated '['");
    out.host = std::string(rest.substr(1, close - 1));
    rest.remove_prefix(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return bad("expected ':' after ']'");
      port_text = rest.substr(1);
      has_port = true;
    }
  } else {
    const size_t colon = rest.rfind(':');
    if (colon != std::string_view::npos) {
      port_text = rest.substr(colon + 1);
      rest = rest.substr(0, colon);
      has_port = true;
    }
    out.host = std::string(rest);
  }
  if (out.host.empty()) return bad("no host");
  if (has_port) {
    int port = 0;
    const auto [p, ec] =
        std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc() || p != port_text.data() + port_text.size() || port < 1 || port > 65535) {
      return bad(fmt::format("invalid port '{}'", port_text));
    }
    out.port = port;
  }
  return out;
}

StreamingClient::StreamingClient(const HttpUrl& target, ClientOptions options)
    : options_(std::move(options)),
      client_(std::make_unique<httplib::Client>(target.host, target.port)) {
  ConfigureClient(*client_, options_.timeout_s, options_.connect_timeout_s);
}

StreamingClient::~StreamingClient() = default;

RequestResult StreamingClient::Send(const RequestSpec& spec, const std::string& default_model,
                                    const std::atomic<bool>* cancel) {
  RequestResult r;
  httplib::Request req;
  req.method = "POST";
  req.path = spec.api == Api::kChat ? "/v1/chat/completions" : "/v1/completions";
  for (const auto& [k, v] : options_.headers) req.headers.emplace(k, v);
  req.headers.emplace("Accept", "text/event-stream");
  req.headers.emplace("Content-Type", "application/json");
  req.body = spec.Body(default_model).dump();

  bool done_seen = false;
  bool timed_out = false;
  bool canceled = false;
  int text_chunks = 0;
  std::string error_body;
  const Clock::time_point start = Clock::now();
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(options_.timeout_s));

  SseParser parser([&](std::string_view data) {
    if (data == "[DONE]") {
      done_seen = true;
      return true;
    }
    json chunk = json::parse(data, nullptr, /*allow_exceptions=*/false);
    if (!chunk.is_object()) {
      r.error_kind = "bad_stream";
      r.error_message = Truncate(data);
      return false;
    }
    if (chunk.contains("error")) {
      r.error_kind = "stream_error";
      r.error_message = Truncate(chunk["error"].dump());
      return false;
    }
    if (ChunkTextBytes(chunk) > 0) {
      if (text_chunks == 0) r.ttft_s = Seconds(Clock::now() - start);
      ++text_chunks;
    }
    if (auto u = chunk.find("usage"); u != chunk.end() && u->is_object()) {
      r.prompt_tokens = u->value("prompt_tokens", -1);
      r.output_tokens = u->value("completion_tokens", 0);
      if (auto d = u->find("prompt_tokens_details"); d != u->end() && d->is_object()) {
        r.cached_tokens = d->value("cached_tokens", -1);
      }
    }
    return true;
  });

  req.response_handler = [&](const httplib::Response& res) {
    r.http_status = res.status;
    r.target_pod = res.get_header_value("x-aibrix-target-pod");
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
      canceled = true;
      return false;
    }
    if (Clock::now() > deadline) {
      timed_out = true;
      return false;
    }
    if (r.http_status != 200) {
      if (error_body.size() < kMaxErrorBody) error_body.append(data, n);
      return true;
    }
    return parser.Feed(std::string_view(data, n));
  };

  httplib::Response res;
  httplib::Error err = httplib::Error::Success;
  const bool sent = client_->send(req, res, err);
  r.e2e_s = Seconds(Clock::now() - start);
  if (r.http_status == 0) r.http_status = res.status > 0 ? res.status : 0;

  if (canceled) {
    r.error_kind = "canceled";
  } else if (timed_out || (!sent && r.e2e_s >= options_.timeout_s)) {
    r.error_kind = "timeout";
    r.error_message = fmt::format("no end of stream within {} s", options_.timeout_s);
  } else if (!r.error_kind.empty()) {
    // set by the parser
  } else if (r.http_status != 0 && r.http_status != 200) {
    r.error_kind = fmt::format("http_{}", r.http_status);
    r.error_message = Truncate(error_body.empty() ? res.body : error_body);
  } else if (!sent) {
    r.error_kind = TransportErrorKind(err);
    r.error_message = httplib::to_string(err);
  } else if (!done_seen) {
    r.error_kind = "incomplete";
    r.error_message = "stream ended without data: [DONE]";
  } else if (text_chunks == 0 && r.output_tokens == 0) {
    r.error_kind = "no_tokens";
    r.error_message = "stream carried no generated text";
  }
  if (r.output_tokens == 0) r.output_tokens = text_chunks;
  r.ok = r.error_kind.empty();
  return r;
}

absl::StatusOr<std::string> HttpGet(const HttpUrl& url, double timeout_s) {
  httplib::Client client(url.host, url.port);
  ConfigureClient(client, timeout_s, std::min(timeout_s, 5.0));
  client.set_keep_alive(false);
  httplib::Result res = client.Get(url.path.c_str());
  if (!res) {
    return absl::UnavailableError(fmt::format("GET {}{}: cannot connect ({})", url.Origin(),
                                              url.path, httplib::to_string(res.error())));
  }
  if (res->status != 200) {
    return absl::FailedPreconditionError(fmt::format("GET {}{}: HTTP {}: {}", url.Origin(),
                                                     url.path, res->status, Truncate(res->body)));
  }
  return std::move(res->body);
}

}  // namespace aibrix::loadgen
