// Many concurrent SSE streams through the OpenAI proxy, in process: an aibrix::server::Service
// in front of one SseUpstream (tests/util/sse_upstream.h), which holds every stream after its
// first event until the test opens its gate, so the streams are provably open together. The
// clients are non-blocking sockets driven by one epoll loop on the test's thread (no thread
// per stream). Each test checks what every client got (a 200 chunked text/event-stream, every
// event, `data: [DONE]`, a well-formed last chunk), what the upstream saw (streams started,
// finished, cut) and the accounting: nothing left in flight in the Store, no running count on
// the pod, every request admitted and finished once in the tracker.
//
// The process holds three sockets per stream (client, service, upstream): the soft
// RLIMIT_NOFILE is raised to the hard limit first, and a test fails with a clear message when
// that is too low. Waits are polling loops with generous deadlines; nothing asserts a
// duration.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "aibrix/server/service.h"
#include "aibrix/store/pod.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/util/in_process_service.h"
#include "tests/util/poll.h"
#include "tests/util/sse_upstream.h"

namespace aibrix {
namespace {

using namespace std::chrono_literals;
using aibrix::testing::SseUpstream;
using aibrix::testing::SseUpstreamOptions;
using server::Service;
using server::ServiceConfig;
using Clock = std::chrono::steady_clock;

constexpr char kModel[] = "llama";
constexpr std::string_view kDone = "data: [DONE]\n\n";
// Every wait: long enough for a loaded 2-core machine, short of ctest's 300 s.
constexpr auto kDeadline = 60s;
// The upstream's gate is opened by the tests only (the timeout is never reached).
constexpr auto kNeverByTimeout = std::chrono::milliseconds(std::chrono::hours(1));

using aibrix::testing::Eventually;

size_t Count(std::string_view haystack, std::string_view needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string_view::npos;
       at = haystack.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

// Raises the soft descriptor limit to the hard one. FailedPrecondition when the hard limit is
// below `needed`.
absl::Status RaiseFdLimit(rlim_t needed, std::string_view why) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(fmt::format("getrlimit(RLIMIT_NOFILE): {}", strerror(errno)));
  }
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < needed) {
    return absl::FailedPreconditionError(fmt::format(
        "RLIMIT_NOFILE hard limit is {} but this test needs {} descriptors ({}); raise it "
        "(ulimit -Hn as root, /etc/security/limits.conf, docker run --ulimit nofile=N:N)",
        limit.rlim_max, needed, why));
  }
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
      return absl::InternalError(
          fmt::format("setrlimit(RLIMIT_NOFILE, {}): {}", limit.rlim_max, strerror(errno)));
    }
  }
  return absl::OkStatus();
}

std::string StreamingRequest(int max_tokens) {
  const std::string body = nlohmann::json{
      {"model", kModel},
      {"prompt", "hello there"},
      {"stream", true},
      {"max_tokens",
       max_tokens}}.dump();
  return fmt::format(
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
      "Accept: text/event-stream\r\nContent-Length: {}\r\n\r\n{}",
      body.size(), body);
}

// Incremental, strict reader of one HTTP/1.1 response with a chunked body: chunk sizes in hex
// without extensions, CRLF after each chunk's data, the last chunk followed by CRLF (no
// trailers), nothing after it.
class ChunkedResponse {
 public:
  // Takes received bytes; false on a framing error (see error()).
  bool Feed(std::string_view data) {
    if (!error_.empty()) return false;
    if (complete_) return Fail("bytes after the last chunk");
    raw_.append(data);
    if (!head_done_) {
      const size_t end = raw_.find("\r\n\r\n");
      if (end == std::string::npos) return raw_.size() < (64 << 10) || Fail("head too long");
      head_ = raw_.substr(0, end + 2);
      for (char& c : head_) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (!head_.starts_with("http/1.1 ") || head_.size() < 12) return Fail("not an HTTP/1.1 head");
      status_ = std::atoi(head_.c_str() + 9);
      if (head_.find("\r\ntransfer-encoding: chunked\r\n") == std::string::npos) {
        return Fail("not chunked");
      }
      raw_.erase(0, end + 4);
      head_done_ = true;
    }
    size_t pos = 0;
    while (!complete_) {
      const size_t eol = raw_.find("\r\n", pos);
      if (eol == std::string::npos) break;
      const std::string_view size_text = std::string_view(raw_).substr(pos, eol - pos);
      if (size_text.empty() || size_text.size() > 8 ||
          !std::all_of(size_text.begin(), size_text.end(),
                       [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); })) {
        return Fail(fmt::format("bad chunk size line '{}'", size_text));
      }
      const size_t size = std::stoul(std::string(size_text), nullptr, 16);
      if (raw_.size() < eol + 2 + size + 2) break;
      if (raw_.compare(eol + 2 + size, 2, "\r\n") != 0) return Fail("no CRLF after a chunk");
      if (size == 0) {
        complete_ = true;
        if (raw_.size() > eol + 4) return Fail("bytes after the last chunk");
      }
      body_.append(raw_, eol + 2, size);
      pos = eol + 2 + size + 2;
    }
    raw_.erase(0, pos);
    return true;
  }

  bool head_done() const { return head_done_; }
  bool complete() const { return complete_; }
  int status() const { return status_; }
  const std::string& head() const { return head_; }  // lower-cased, through the last CRLF
  const std::string& body() const { return body_; }
  const std::string& error() const { return error_; }

 private:
  bool Fail(std::string error) {
    error_ = std::move(error);
    return false;
  }

  std::string raw_;  // received, not yet parsed
  std::string head_;
  std::string body_;
  std::string error_;
  bool head_done_ = false;
  bool complete_ = false;
  int status_ = 0;
};

// `n` clients, each sending `request` on a connection of its own to 127.0.0.1:port and reading
// the streamed response, on non-blocking sockets driven by Poll() on the caller's thread.
// Connections are opened at most kConnectWindow handshakes at a time (the listen backlog is
// finite). A client for which `leaves(i)` holds closes its socket as soon as the first SSE
// event has arrived. Observations are ordered by a counter (a logical clock), never timed.
class StreamClients {
 public:
  enum class State { kWaiting, kConnecting, kSending, kReading, kComplete, kLeft, kFailed };
  struct Stream {
    int fd = -1;
    State state = State::kWaiting;
    bool leaves = false;
    size_t sent = 0;
    ChunkedResponse response;
    uint64_t first_event_at = 0;  // logical time; 0: not yet
    uint64_t ended_at = 0;        // complete, left or failed
    std::string error;
  };

  StreamClients(int port, int n, std::string request, const std::function<bool(int)>& leaves)
      : port_(port), request_(std::move(request)), streams_(static_cast<size_t>(n)) {
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < n; ++i) streams_[static_cast<size_t>(i)].leaves = leaves && leaves(i);
  }
  ~StreamClients() {
    for (Stream& s : streams_) {
      if (s.fd >= 0) close(s.fd);
    }
    close(epoll_);
  }
  StreamClients(const StreamClients&) = delete;
  StreamClients& operator=(const StreamClients&) = delete;

  // Starts connections (within the window) and handles what is ready, waiting up to `wait`.
  void Poll(std::chrono::milliseconds wait) {
    StartConnections();
    epoll_event events[512];
    const int k = epoll_wait(epoll_, events, 512, static_cast<int>(wait.count()));
    for (int i = 0; i < k; ++i) {
      Stream& s = streams_[events[i].data.u64];
      if (s.state == State::kConnecting) {
        int error = 0;
        socklen_t len = sizeof(error);
        getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &error, &len);
        --connecting_;
        if (error != 0) {
          End(s, State::kFailed, fmt::format("connect: {}", strerror(error)));
          continue;
        }
        s.state = State::kSending;
      }
      if (s.state == State::kSending) SendRequest(s);
      if (s.state == State::kReading) Read(s);
    }
  }

  // Polls until `done()` holds or `timeout` passes; returns the last `done()`.
  bool PollUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!done()) {
      if (Clock::now() >= deadline) return false;
      Poll(20ms);
    }
    return true;
  }

  const std::vector<Stream>& streams() const { return streams_; }
  int Count(const std::function<bool(const Stream&)>& which) const {
    return static_cast<int>(std::count_if(streams_.begin(), streams_.end(), which));
  }
  int Ended() const {
    return Count([](const Stream& s) { return s.ended_at != 0; });
  }
  int WithFirstEvent() const {
    return Count([](const Stream& s) { return s.first_event_at != 0; });
  }
  // The first few failures, for a test's message.
  std::string Failures() const {
    std::string out;
    int shown = 0;
    for (size_t i = 0; i < streams_.size() && shown < 5; ++i) {
      if (streams_[i].state != State::kFailed) continue;
      out += fmt::format("\n  stream {}: {}", i, streams_[i].error);
      ++shown;
    }
    return out;
  }

 private:
  static constexpr int kConnectWindow = 256;

  void StartConnections() {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port_));
    while (connecting_ < kConnectWindow && next_ < streams_.size()) {
      const size_t index = next_++;
      Stream& s = streams_[index];
      s.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (s.fd < 0) {
        End(s, State::kFailed, fmt::format("socket: {}", strerror(errno)));
        continue;
      }
      const int one = 1;
      setsockopt(s.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      // Closed with a reset: no TIME_WAIT left on a thousand local ports for later tests.
      const linger reset{1, 0};
      setsockopt(s.fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
      epoll_event event{};
      event.events = EPOLLOUT;
      event.data.u64 = index;
      epoll_ctl(epoll_, EPOLL_CTL_ADD, s.fd, &event);
      if (connect(s.fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) {
        s.state = State::kSending;  // EPOLLOUT reports it
      } else if (errno == EINPROGRESS) {
        s.state = State::kConnecting;
        ++connecting_;
      } else {
        End(s, State::kFailed, fmt::format("connect: {}", strerror(errno)));
      }
    }
  }

  void SendRequest(Stream& s) {
    while (s.sent < request_.size()) {
      const ssize_t n =
          send(s.fd, request_.data() + s.sent, request_.size() - s.sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // EPOLLOUT again
      if (n < 0) {
        End(s, State::kFailed, fmt::format("send: {}", strerror(errno)));
        return;
      }
      s.sent += static_cast<size_t>(n);
    }
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = static_cast<uint64_t>(&s - streams_.data());
    epoll_ctl(epoll_, EPOLL_CTL_MOD, s.fd, &event);
    s.state = State::kReading;
  }

  void Read(Stream& s) {
    char buffer[16 << 10];
    while (s.state == State::kReading) {
      const ssize_t n = recv(s.fd, buffer, sizeof(buffer), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n < 0) {
        End(s, State::kFailed, fmt::format("recv: {}", strerror(errno)));
        return;
      }
      if (n == 0) {
        End(s, State::kFailed, "the server closed the connection before the last chunk");
        return;
      }
      if (!s.response.Feed(std::string_view(buffer, static_cast<size_t>(n)))) {
        End(s, State::kFailed, "framing: " + s.response.error());
        return;
      }
      if (s.first_event_at == 0 && s.response.body().find("\n\n") != std::string::npos) {
        s.first_event_at = ++clock_;
        if (s.leaves) {
          close(s.fd);  // also leaves the epoll set
          s.fd = -1;
          End(s, State::kLeft, "");
          return;
        }
      }
      if (s.response.complete()) {
        // Kept open (keep-alive) until the end of the test; nothing more is expected on it.
        epoll_ctl(epoll_, EPOLL_CTL_DEL, s.fd, nullptr);
        End(s, State::kComplete, "");
        return;
      }
    }
  }

  void End(Stream& s, State state, std::string error) {
    if (state == State::kFailed && s.fd >= 0) epoll_ctl(epoll_, EPOLL_CTL_DEL, s.fd, nullptr);
    s.state = state;
    s.error = std::move(error);
    s.ended_at = ++clock_;
  }

  const int port_;
  const std::string request_;
  std::vector<Stream> streams_;
  int epoll_ = -1;
  size_t next_ = 0;     // the next stream to connect
  int connecting_ = 0;  // handshakes in progress
  uint64_t clock_ = 0;  // logical time of the last observation
};

// A stream that got everything: a 200 text/event-stream, `events` events, `data: [DONE]`,
// the last chunk. An empty string when so, else what is wrong.
std::string CheckComplete(const StreamClients::Stream& s, int events) {
  if (s.state != StreamClients::State::kComplete) return "not complete: " + s.error;
  if (s.response.status() != 200) return fmt::format("status {}", s.response.status());
  if (s.response.head().find("\r\ncontent-type: text/event-stream") == std::string::npos) {
    return "not text/event-stream: " + s.response.head();
  }
  const std::string& body = s.response.body();
  if (!body.ends_with(kDone)) return "does not end with data: [DONE]: " + body;
  if (Count(body, "data: ") != static_cast<size_t>(events) + 1 ||
      Count(body, "\n\n") != static_cast<size_t>(events) + 1) {
    return fmt::format("{} events, not {} and [DONE]: {}", Count(body, "data: "), events, body);
  }
  for (int i = 0; i < events; ++i) {
    if (body.find(fmt::format("\"text\":\" token{}\"", i)) == std::string::npos) {
      return fmt::format("event {} missing: {}", i, body);
    }
  }
  return "";
}

// --- The fixture --------------------------------------------------------------------------

class ProxyStreamsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ::signal(SIGPIPE, SIG_IGN); }

  void TearDown() override { harness_.Stop(); }

  // Starts the service for model "llama" served by one pod, the upstream on `port`.
  void StartService(int port) {
    ASSERT_NO_FATAL_FAILURE(harness_.Start(kModel, {port}, [](ServiceConfig& config) {
      config.upstream_connect_timeout_ms = 10000;
      // Streams are held (silent after the first event) for as long as a test waits.
      config.upstream_first_byte_timeout_ms = 120000;
      config.upstream_idle_timeout_ms = 120000;
      config.upstream_timeout_ms = 240000;
    }));
    service_ = &harness_.service();
  }

  int TotalRunning() { return harness_.TotalRunning(); }
  double Metric(const std::string& series) { return harness_.Metric(series); }
  // No upstream failure of any kind was counted, and nothing was retried.
  void ExpectNoUpstreamErrors() {
    for (const char* kind : {"connect", "send_reset", "timeout", "reset", "bad_response"}) {
      EXPECT_EQ(
          Metric(fmt::format("aibrix_cache_proxy_upstream_errors_total{{kind=\"{}\"}}", kind)), 0)
          << kind;
    }
    EXPECT_EQ(Metric("aibrix_cache_proxy_retries_total"), 0);
  }

  void ExpectSettled(int requests) { harness_.ExpectSettled(requests, kDeadline); }

  testing::InProcessService harness_;
  Service* service_ = nullptr;  // harness_'s, while started
};

// 1. 1,000 streams open at the same time: the upstream holds each after its first event until
// all 1,000 requests reached it and every client has its head and first event; then it lets
// them run to `data: [DONE]`. Every client gets the whole stream, well framed.
TEST_F(ProxyStreamsTest, AThousandConcurrentStreamsAllComplete) {
  constexpr int kStreams = 1000;
  constexpr int kEvents = 4;
  const absl::Status limit = RaiseFdLimit(
      3 * kStreams + 256, "1,000 client, 1,000 service and 1,000 upstream sockets in one process");
  ASSERT_TRUE(limit.ok()) << limit;

  SseUpstream upstream(SseUpstreamOptions{
      .events = kEvents, .interval = 100ms, .gate_streams = 0, .gate_timeout = kNeverByTimeout});
  const absl::Status upstream_started = upstream.Start();
  ASSERT_TRUE(upstream_started.ok()) << upstream_started;
  ASSERT_NO_FATAL_FAILURE(StartService(upstream.port()));
  StreamClients clients(service_->http_port(), kStreams, StreamingRequest(kEvents), nullptr);

  // All open together: every request reached the upstream and every client has its first event.
  const bool all_open = clients.PollUntil(
      [&] { return upstream.started() == kStreams && clients.WithFirstEvent() == kStreams; },
      kDeadline);
  ASSERT_TRUE(all_open) << "upstream started " << upstream.started() << ", clients with a first "
                        << "event " << clients.WithFirstEvent() << ", ended " << clients.Ended()
                        << clients.Failures();
  EXPECT_EQ(clients.Ended(), 0) << clients.Failures();
  EXPECT_EQ(upstream.finished(), 0);
  EXPECT_EQ(upstream.aborted(), 0);
  EXPECT_EQ(upstream.open_connections(), kStreams);
  EXPECT_EQ(service_->store().InFlightRequests(), static_cast<size_t>(kStreams));
  EXPECT_EQ(TotalRunning(), kStreams);

  upstream.OpenGate();
  const bool all_ended = clients.PollUntil([&] { return clients.Ended() == kStreams; }, kDeadline);
  EXPECT_TRUE(all_ended) << clients.Ended() << " of " << kStreams << " ended" << clients.Failures();

  uint64_t last_first_event = 0;
  uint64_t first_end = std::numeric_limits<uint64_t>::max();
  int correct = 0;
  for (size_t i = 0; i < clients.streams().size(); ++i) {
    const StreamClients::Stream& s = clients.streams()[i];
    const std::string problem = CheckComplete(s, kEvents);
    EXPECT_EQ(problem, "") << "stream " << i;
    if (problem.empty()) ++correct;
    last_first_event = std::max(last_first_event, s.first_event_at);
    if (s.ended_at != 0) first_end = std::min(first_end, s.ended_at);
  }
  EXPECT_EQ(correct, kStreams);
  EXPECT_LT(last_first_event, first_end) << "a stream ended before another one had started";
  EXPECT_EQ(upstream.started(), kStreams);
  EXPECT_EQ(upstream.finished(), kStreams);
  EXPECT_EQ(upstream.aborted(), 0);
  EXPECT_EQ(upstream.peak_streams(), kStreams);
  std::cout << "upstream: " << upstream.accepted() << " connections accepted, "
            << upstream.started() << " streams, at most " << upstream.peak_streams()
            << " at once\n";
  ExpectNoUpstreamErrors();
  ExpectSettled(kStreams);
}

// 2. 200 streams; half of the clients leave after the first event while the upstream holds
// every stream. The service must close those upstream connections (the upstream sees them
// cut mid-response) without any further byte from the upstream, and the other half complete.
TEST_F(ProxyStreamsTest, ClientsLeavingMidStreamCloseTheirUpstreamConnections) {
  constexpr int kStreams = 200;
  constexpr int kLeaving = kStreams / 2;
  constexpr int kEvents = 4;
  const absl::Status limit = RaiseFdLimit(
      3 * kStreams + 256, "200 client, 200 service and 200 upstream sockets in one process");
  ASSERT_TRUE(limit.ok()) << limit;

  SseUpstream upstream(SseUpstreamOptions{
      .events = kEvents, .interval = 100ms, .gate_streams = 0, .gate_timeout = kNeverByTimeout});
  const absl::Status upstream_started = upstream.Start();
  ASSERT_TRUE(upstream_started.ok()) << upstream_started;
  ASSERT_NO_FATAL_FAILURE(StartService(upstream.port()));
  auto leaves = [](int i) { return i % 2 == 1; };
  StreamClients clients(service_->http_port(), kStreams, StreamingRequest(kEvents), leaves);
  auto left = [&] {
    return clients.Count([](const auto& s) { return s.state == StreamClients::State::kLeft; });
  };

  // The leavers are gone, and the upstream saw each of their connections closed.
  const bool closed = clients.PollUntil(
      [&] {
        return upstream.started() == kStreams && clients.WithFirstEvent() == kStreams &&
               upstream.aborted() == kLeaving;
      },
      kDeadline);
  ASSERT_TRUE(closed) << "upstream started " << upstream.started() << ", saw " << upstream.aborted()
                      << " of " << kLeaving << " closed; clients with a "
                      << "first event " << clients.WithFirstEvent() << ", left " << left()
                      << ", ended " << clients.Ended() << clients.Failures();
  EXPECT_EQ(left(), kLeaving);
  EXPECT_EQ(clients.Ended(), kLeaving) << clients.Failures();
  EXPECT_FALSE(upstream.gate_open());
  EXPECT_EQ(upstream.finished(), 0);
  EXPECT_EQ(upstream.open_connections(), kStreams - kLeaving);
  // The leavers' requests are settled; the others still run.
  const bool half_settled = Eventually(
      [&] {
        return service_->store().InFlightRequests() == static_cast<size_t>(kStreams - kLeaving) &&
               TotalRunning() == kStreams - kLeaving;
      },
      kDeadline);
  EXPECT_TRUE(half_settled) << "in flight " << service_->store().InFlightRequests() << ", running "
                            << TotalRunning();

  upstream.OpenGate();
  const bool all_ended = clients.PollUntil([&] { return clients.Ended() == kStreams; }, kDeadline);
  EXPECT_TRUE(all_ended) << clients.Ended() << " of " << kStreams << " ended" << clients.Failures();
  int correct = 0;
  for (size_t i = 0; i < clients.streams().size(); ++i) {
    const StreamClients::Stream& s = clients.streams()[i];
    if (leaves(static_cast<int>(i))) {
      EXPECT_EQ(s.state, StreamClients::State::kLeft) << "stream " << i << ": " << s.error;
      EXPECT_EQ(s.response.status(), 200) << "stream " << i;
      continue;
    }
    const std::string problem = CheckComplete(s, kEvents);
    EXPECT_EQ(problem, "") << "stream " << i;
    if (problem.empty()) ++correct;
  }
  EXPECT_EQ(correct, kStreams - kLeaving);
  EXPECT_EQ(upstream.started(), kStreams);
  EXPECT_EQ(upstream.finished(), kStreams - kLeaving);
  EXPECT_EQ(upstream.aborted(), kLeaving);
  ExpectNoUpstreamErrors();
  ExpectSettled(kStreams);
}

}  // namespace
}  // namespace aibrix
