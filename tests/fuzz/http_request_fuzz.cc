// libFuzzer target: the whole path untrusted HTTP bytes take in the service.
//  1. Framing alone: the request head and chunked body decoders must reject any input with a
//     status, never crash, never consume more than they were given, never decode more than
//     the body limit.
//  2. Then the same bytes go, over loopback, through the real http::Server of an in-process
//     Service (its every route: admin API, routing API, proxy to an unreachable engine):
//     framing, limits, path routing and parameter decoding, dispatch and the handlers. The
//     client half-closes after sending, so the server answers what it can and closes.
// Seed corpus: tests/fuzz/corpus/http_request.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "aibrix/common/logging.h"
#include "aibrix/http/parser.h"
#include "aibrix/server/service.h"
#include "tests/util/temp_dir.h"

namespace {

void CheckFraming(std::string_view input) {
  const size_t head_size = aibrix::http::RequestHeadSize(input);
  if (head_size > input.size()) std::abort();
  if (head_size == 0) return;
  auto head = aibrix::http::ParseRequestHead(input.substr(0, head_size));
  if (!head.ok() || !head->chunked) return;
  // The body arrives in pieces of a size taken from the head's length.
  constexpr uint64_t kLimit = 4096;
  aibrix::http::ChunkedDecoder decoder(kLimit);
  const size_t piece = 1 + head_size % 7;
  std::string body, pending;
  for (size_t at = head_size; at < input.size() && !decoder.done(); at += piece) {
    pending.append(input.substr(at, piece));
    auto used = decoder.Feed(pending, &body);
    if (!used.ok()) return;
    if (*used > pending.size() || body.size() > kLimit) std::abort();
    pending.erase(0, *used);
  }
}

// One service for the whole run: two pods of one model, neither reachable.
aibrix::server::Service& TheService() {
  static aibrix::server::Service* service = [] {
    aibrix::common::SetLogLevel("off");
    // The config is read once, at Start (not watched): its directory can go when this lambda
    // returns.
    const aibrix::testing::TempDir dir("http-fuzz");
    aibrix::server::ServiceConfig config;
    config.http_addr = "127.0.0.1:0";
    config.static_config = dir.Write(
        "config.yaml", "models:\n  - name: m\n    endpoints: [\"127.0.0.1:1\", \"127.0.0.2:1\"]\n");
    config.static_config_watch = false;
    config.io_threads = 1;
    config.max_body_bytes = 1 << 16;
    config.head_timeout_ms = 2000;
    config.body_timeout_ms = 2000;
    auto* s = new aibrix::server::Service(config);
    if (!s->Start().ok()) std::abort();
    return s;
  }();
  return *service;
}

void SendThroughServer(std::string_view input) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(TheService().http_port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // Each input is a connection; those closed by the server wait in TIME_WAIT for a minute,
  // so the client cycles through 127.1.x.y source addresses (all loopback) to keep the
  // 4-tuples fresh instead of running out of local ports.
  static uint32_t next_source = 0;
  const uint32_t n = next_source++ % (254 * 254);
  sockaddr_in source{};
  source.sin_family = AF_INET;
  source.sin_addr.s_addr = htonl((127u << 24) | (1u << 16) | ((1 + n / 254) << 8) | (1 + n % 254));
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(fd, reinterpret_cast<sockaddr*>(&source), sizeof(source)) == 0 &&
        connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      break;
    }
    // Out of local ports or addresses (and a connect the kernel gives up on at once under
    // load) is the machine's limit, not a finding: wait and retry. Anything else is reported.
    const int error = errno;
    const bool transient = error == EADDRNOTAVAIL || error == EADDRINUSE || error == EAGAIN ||
                           error == EINTR || error == ETIMEDOUT;
    if (!transient || attempt == 1000) {
      std::fprintf(stderr, "http_request_fuzz: cannot connect to the service: %s\n",
                   std::strerror(error));
      std::abort();
    }
    close(fd);
    fd = -1;
    usleep(1000);
  }
  // Closed with a reset: no TIME_WAIT, so a long run does not use up the local ports.
  const linger reset{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
  const timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  for (size_t sent = 0; sent < input.size();) {
    const ssize_t n = send(fd, input.data() + sent, input.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the server may close early (an answered error): fine
    sent += static_cast<size_t>(n);
  }
  shutdown(fd, SHUT_WR);
  char buf[4096];
  // The server must answer and close: a hang here is a finding (the read times out).
  while (true) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n == 0) break;
    if (n < 0 && errno == EINTR) continue;  // libFuzzer's timeout alarm
    if (n < 0) {
      std::fprintf(stderr, "http_request_fuzz: reading the answer: %s\n", std::strerror(errno));
      std::abort();
    }
  }
  close(fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  CheckFraming(input);
  SendThroughServer(input);
  return 0;
}
