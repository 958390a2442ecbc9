// HTTP/1.1 request framing for the service's server (RFC 9112): the request head (request
// line and header fields) and chunked request bodies. Pure functions over bytes, so they
// are unit-tested and fuzzed apart from sockets.
//
// Thread safety: pure functions; ChunkedDecoder is a plain value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace aibrix::http {

struct RequestHead {
  std::string method;
  std::string target;                                        // as sent: path and query
  int minor_version = 1;                                     // HTTP/1.<minor>
  std::vector<std::pair<std::string, std::string>> headers;  // names as sent, values trimmed
  // Framing, from the headers:
  std::optional<uint64_t> content_length;
  bool chunked = false;          // Transfer-Encoding: chunked
  bool expect_continue = false;  // Expect: 100-continue
  bool keep_alive = true;        // HTTP/1.1 unless "Connection: close"; 1.0 only with keep-alive
};

// How many bytes of empty lines (CRLF or LF) start `data`: RFC 9112 §2.2 lets a server
// skip them before a request line (some clients send one after a POST body).
size_t LeadingEmptyLines(std::string_view data);

// The size of the head at the start of `data` (through the blank line), or 0 when the
// blank line has not arrived yet.
size_t RequestHeadSize(std::string_view data);

// Parses a complete head (as delimited by RequestHeadSize). InvalidArgument with the reason
// for a malformed request line or header field, an HTTP version other than 1.x, a bad or
// conflicting Content-Length, a Transfer-Encoding other than chunked, or a Host field
// missing (HTTP/1.1) or repeated.
absl::StatusOr<RequestHead> ParseRequestHead(std::string_view head);

// Decodes a chunked body incrementally (chunk extensions ignored, trailers skipped).
class ChunkedDecoder {
 public:
  explicit ChunkedDecoder(uint64_t max_body_bytes) : max_body_bytes_(max_body_bytes) {}

  // Consumes a prefix of `data`, appending decoded bytes to `body`; returns how many bytes
  // were consumed (the rest must be offered again with more data appended). InvalidArgument
  // for malformed framing, OutOfRange when the body would exceed the limit.
  absl::StatusOr<size_t> Feed(std::string_view data, std::string* body);
  bool done() const { return state_ == State::kDone; }

 private:
  enum class State { kSize, kData, kDataEnd, kTrailer, kDone };
  const uint64_t max_body_bytes_;
  State state_ = State::kSize;
  uint64_t remaining_ = 0;  // bytes left in the current chunk
};

// The reason phrase of an HTTP status code ("OK", "Not Found", ...; "Unknown" otherwise).
std::string_view ReasonPhrase(int status);

}  // namespace aibrix::http
