#include "aibrix/http/parser.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "fmt/format.h"

namespace aibrix::http {
namespace {

// Longest line inside a chunked body's framing (size line or trailer field).
constexpr size_t kMaxChunkLine = 4096;

bool IsTokenChar(char c) {
  const auto u = static_cast<unsigned char>(c);
  return std::isalnum(u) || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// Whether the comma-separated list `value` contains `token` (case-insensitive).
bool ListHas(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    const size_t comma = value.find(',');
    std::string_view item = value.substr(0, comma);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (EqualsIgnoreCase(item, token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

absl::Status Malformed(std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("malformed HTTP request: {}", what));
}

}  // namespace

size_t LeadingEmptyLines(std::string_view data) {
  size_t at = 0;
  while (true) {
    if (data.substr(at, 2) == "\r\n") {
      at += 2;
    } else if (data.substr(at, 1) == "\n") {
      at += 1;
    } else {
      return at;
    }
  }
}

size_t RequestHeadSize(std::string_view data) {
  const size_t end = data.find("\r\n\r\n");
  return end == std::string_view::npos ? 0 : end + 4;
}

absl::StatusOr<RequestHead> ParseRequestHead(std::string_view head) {
  RequestHead out;
  // Request line: method SP target SP HTTP/1.x CRLF.
  const size_t line_end = head.find("\r\n");
  if (line_end == std::string_view::npos) return Malformed("no request line");
  const std::string_view line = head.substr(0, line_end);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return Malformed("request line is not 'METHOD target HTTP/1.x'");
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (method.empty() || !std::all_of(method.begin(), method.end(), IsTokenChar)) {
    return Malformed("bad method");
  }
  if (target.empty() || target.front() != '/' ||
      std::any_of(target.begin(), target.end(), [](char c) {
        return static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f;
      })) {
    return Malformed("bad request target");
  }
  if (version.size() != 8 || version.substr(0, 7) != "HTTP/1." || version[7] < '0' ||
      version[7] > '9') {
    return Malformed("unsupported HTTP version");
  }
  out.method = std::string(method);
  out.target = std::string(target);
  out.minor_version = version[7] - '0';
  out.keep_alive = out.minor_version >= 1;

  // Header fields: name ":" OWS value OWS CRLF, up to the blank line.
  std::string_view rest = head.substr(line_end + 2);
  bool have_length = false;
  int hosts = 0;
  while (!rest.empty() && rest.substr(0, 2) != "\r\n") {
    const size_t end = rest.find("\r\n");
    if (end == std::string_view::npos) return Malformed("unterminated header field");
    const std::string_view field = rest.substr(0, end);
    rest.remove_prefix(end + 2);
    const size_t colon = field.find(':');
    if (colon == std::string_view::npos || colon == 0)
      return Malformed("header field without name");
    const std::string_view name = field.substr(0, colon);
    if (!std::all_of(name.begin(), name.end(), IsTokenChar)) return Malformed("bad header name");
    std::string_view value = field.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    if (std::any_of(value.begin(), value.end(), [](char c) {
          return (static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f;
        })) {
      return Malformed("control character in a header value");
    }
    if (EqualsIgnoreCase(name, "Content-Length")) {
      uint64_t length = 0;
      const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), length);
      if (value.empty() || ec != std::errc() || ptr != value.data() + value.size()) {
        return Malformed("bad Content-Length");
      }
      if (have_length && length != *out.content_length) {
        return Malformed("conflicting Content-Length fields");
      }
      have_length = true;
      out.content_length = length;
    } else if (EqualsIgnoreCase(name, "Transfer-Encoding")) {
      if (!EqualsIgnoreCase(value, "chunked")) {
        return Malformed(fmt::format("unsupported Transfer-Encoding '{}'", value));
      }
      out.chunked = true;
    } else if (EqualsIgnoreCase(name, "Connection")) {
      if (ListHas(value, "close")) out.keep_alive = false;
      if (ListHas(value, "keep-alive")) out.keep_alive = true;
    } else if (EqualsIgnoreCase(name, "Host")) {
      ++hosts;
    } else if (EqualsIgnoreCase(name, "Expect")) {
      out.expect_continue = EqualsIgnoreCase(value, "100-continue");
    }
    out.headers.emplace_back(std::string(name), std::string(value));
  }
  if (out.chunked && out.content_length) {
    return Malformed("both Content-Length and Transfer-Encoding");
  }
  // RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host field.
  if (hosts > 1 || (hosts == 0 && out.minor_version >= 1)) {
    return Malformed(hosts > 1 ? "more than one Host field" : "HTTP/1.1 request without Host");
  }
  return out;
}

absl::StatusOr<size_t> ChunkedDecoder::Feed(std::string_view data, std::string* body) {
  size_t used = 0;
  while (used < data.size() && state_ != State::kDone) {
    const std::string_view rest = data.substr(used);
    if (state_ == State::kData) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, rest.size()));
      body->append(rest.substr(0, n));
      used += n;
      remaining_ -= n;
      if (remaining_ == 0) state_ = State::kDataEnd;
      continue;
    }
    const size_t eol = rest.find("\r\n");
    if (eol == std::string_view::npos) {
      if (rest.size() > kMaxChunkLine) return Malformed("chunk framing line too long");
      break;  // wait for the rest of the line
    }
    const std::string_view line = rest.substr(0, eol);
    used += eol + 2;
    switch (state_) {
      case State::kSize: {
        const std::string_view digits = line.substr(0, line.find_first_of("; \t"));
        uint64_t size = 0;
        const auto [ptr, ec] =
            std::from_chars(digits.data(), digits.data() + digits.size(), size, 16);
        if (digits.empty() || ec != std::errc() || ptr != digits.data() + digits.size()) {
          return Malformed("bad chunk size");
        }
        if (size > max_body_bytes_ || body->size() > max_body_bytes_ - size) {
          return absl::OutOfRangeError("chunked body exceeds the limit");
        }
        remaining_ = size;
        state_ = size == 0 ? State::kTrailer : State::kData;
        break;
      }
      case State::kDataEnd:
        if (!line.empty()) return Malformed("chunk data longer than its size");
        state_ = State::kSize;
        break;
      case State::kTrailer:
        if (line.empty()) state_ = State::kDone;  // trailer fields are skipped
        break;
      default:
        break;
    }
  }
  return used;
}

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Unknown";
  }
}

}  // namespace aibrix::http
