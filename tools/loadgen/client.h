// The HTTP side of loadgen: URL parsing, one streaming OpenAI request with its timings
// (TTFT at the first SSE chunk that carries generated text, end-to-end at the end of the
// stream), and plain GETs for engines' /metrics.
//
// Thread safety: a `StreamingClient` holds one keep-alive connection and is used by one
// thread at a time (loadgen gives each worker its own). The free functions are thread-safe.
#pragma once

#include <atomic>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "workload.h"

namespace httplib {
class Client;
}

namespace aibrix::loadgen {

struct HttpUrl {
  std::string host;  // without IPv6 brackets
  int port = 80;
  std::string path = "/";      // always starts with '/'
  std::string Origin() const;  // "http://host:port"
};

// Parses "http://host[:port][/path]" (also "host:port"); IPv6 hosts in brackets.
// InvalidArgument for other schemes or bad ports.
absl::StatusOr<HttpUrl> ParseHttpUrl(const std::string& url);

// What happened to one request.
struct RequestResult {
  bool ok = false;
  std::string error_kind;     // "connect", "timeout", "read", "write", "http_<status>",
                              // "stream_error", "bad_stream", "no_tokens", "incomplete",
                              // "canceled"; empty when ok
  std::string error_message;  // the first ~200 bytes of detail
  int http_status = 0;
  double ttft_s = -1;      // first generated text; -1 if none
  double e2e_s = 0;        // send to end of stream (also for failures)
  int output_tokens = 0;   // usage.completion_tokens, else text chunks seen
  int prompt_tokens = -1;  // from usage, -1 if absent
  int cached_tokens = -1;  // usage.prompt_tokens_details.cached_tokens, -1 if absent
  std::string target_pod;  // x-aibrix-target-pod response header, if any
};

struct ClientOptions {
  double timeout_s = 60;  // whole request; also the read timeout between chunks
  double connect_timeout_s = 5;
  std::vector<std::pair<std::string, std::string>> headers;  // added to every request
};

class StreamingClient {
 public:
  StreamingClient(const HttpUrl& target, ClientOptions options);
  ~StreamingClient();
  StreamingClient(const StreamingClient&) = delete;
  StreamingClient& operator=(const StreamingClient&) = delete;

  // Sends `spec` as a streaming request (model `default_model` when the spec has none) and
  // reads the stream to its end. Never throws; failures are described in the result.
  // `cancel` (may be null) aborts the request when it becomes true.
  RequestResult Send(const RequestSpec& spec, const std::string& default_model,
                     const std::atomic<bool>* cancel);

 private:
  ClientOptions options_;
  std::unique_ptr<httplib::Client> client_;
};

// GET `url`; the body on 200, Unavailable (naming the URL and the transport error) when it
// cannot connect, FailedPrecondition with the status otherwise.
absl::StatusOr<std::string> HttpGet(const HttpUrl& url, double timeout_s);

}  // namespace aibrix::loadgen
