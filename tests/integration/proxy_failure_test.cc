// Failure paths of the OpenAI proxy, in process: an aibrix::server::Service in front of fake
// upstreams that misbehave on purpose (never answer, reset before or after reading the
// request, die mid-stream, answer garbage), clients that go away mid-stream, and a graceful
// stop while streams run. Each test checks what the client gets and the accounting: nothing
// left in flight in the Store, no running count on any pod, every client request admitted and
// finished exactly once in the tracker, and the proxy's Prometheus counters.
//
// Fake upstreams are raw sockets (RawServer) where the misbehaviour must be exact, httplib
// where a plain healthy engine will do. Every port is picked by the kernel (port 0).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "aibrix/server/service.h"
#include "aibrix/store/pod.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/util/in_process_service.h"
#include "tests/util/poll.h"

namespace aibrix {
namespace {

using namespace std::chrono_literals;
using server::Service;
using server::ServiceConfig;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kModel[] = "llama";
constexpr char kCompletion[] = R"({"model":"llama","prompt":"hello there","max_tokens":3})";
// What a healthy engine answers.
constexpr char kCompletionAnswer[] =
    R"({"id":"cmpl-1","object":"text_completion","model":"llama",)"
    R"("choices":[{"index":0,"text":"ok","finish_reason":"stop"}],)"
    R"("usage":{"prompt_tokens":4,"completion_tokens":1,"total_tokens":5}})";
// One SSE event of a streamed completion, and a streamed response head (chunked).
constexpr char kSseEvent[] = "data: {\"choices\":[{\"index\":0,\"text\":\"t\"}]}\n\n";
constexpr char kStreamHead[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
    "Connection: close\r\n\r\n";
// The end of a cleanly finished chunked body.
constexpr char kLastChunk[] = "\r\n0\r\n\r\n";

using aibrix::testing::Eventually;

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

size_t Count(std::string_view haystack, std::string_view needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string_view::npos;
       at = haystack.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

// --- Raw sockets ------------------------------------------------------------------------

bool SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Closes with SO_LINGER 0: the peer gets a RST, not a FIN.
void ResetClose(int fd) {
  linger hard{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
  ::close(fd);
}

enum class ReadEnd { kDone, kEof, kError, kTimeout, kStopped };

std::string_view Name(ReadEnd end) {
  switch (end) {
    case ReadEnd::kDone:
      return "done";
    case ReadEnd::kEof:
      return "eof";
    case ReadEnd::kError:
      return "error";
    case ReadEnd::kTimeout:
      return "timeout";
    case ReadEnd::kStopped:
      return "stopped";
  }
  return "?";
}

// Appends what `fd` delivers to `*out` until `done(*out)` holds (never when `done` is null),
// the peer closes or resets, `timeout` passes, or `*stop` is set.
ReadEnd ReadUntil(int fd, std::string* out, const std::function<bool(const std::string&)>& done,
                  std::chrono::milliseconds timeout, const std::atomic<bool>* stop = nullptr) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buffer[16 << 10];
  while (true) {
    if (done && done(*out)) return ReadEnd::kDone;
    if (stop != nullptr && stop->load()) return ReadEnd::kStopped;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left <= 0ms) return ReadEnd::kTimeout;
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 20)));
    if (ready == 0 || (ready < 0 && errno == EINTR)) continue;
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n == 0) return ReadEnd::kEof;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return ReadEnd::kError;
    }
    out->append(buffer, static_cast<size_t>(n));
  }
}

// A whole HTTP request (head and Content-Length body) is in `s`.
bool HasWholeRequest(const std::string& s) {
  const size_t end = s.find("\r\n\r\n");
  if (end == std::string::npos) return false;
  std::string head = s.substr(0, end);
  for (char& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  size_t length = 0;
  if (const size_t at = head.find("\r\ncontent-length:"); at != std::string::npos) {
    length = std::stoul(head.substr(at + 17));
  }
  return s.size() >= end + 4 + length;
}

// A response head and at least one SSE event are in `s`.
bool HasHeadAndEvent(const std::string& s) {
  const size_t end = s.find("\r\n\r\n");
  return end != std::string::npos && s.find("data: ", end) != std::string::npos;
}

// A TCP server on 127.0.0.1:<kernel's choice> that hands each accepted connection (the
// descriptor, which the handler owns) to `handler`, on a thread of its own or, when
// `inline_handler`, on the accepting thread (as fast as it gets after the accept).
class RawServer {
 public:
  using Handler = std::function<void(int fd, const std::atomic<bool>& stopping)>;

  explicit RawServer(Handler handler, bool inline_handler = false)
      : handler_(std::move(handler)), inline_(inline_handler) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listen_fd_, 128) != 0) {
      ADD_FAILURE() << "cannot listen: " << strerror(errno);
      return;
    }
    socklen_t len = sizeof(addr);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }
  ~RawServer() {
    stopping_.store(true);
    if (acceptor_.joinable()) acceptor_.join();
    for (std::thread& handler : handlers_) handler.join();
    ::close(listen_fd_);
  }
  RawServer(const RawServer&) = delete;
  RawServer& operator=(const RawServer&) = delete;

  int port() const { return port_; }
  int accepted() const { return accepted_.load(); }

 private:
  void AcceptLoop() {
    while (!stopping_.load()) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      accepted_.fetch_add(1);
      if (inline_) {
        handler_(fd, stopping_);
      } else {
        handlers_.emplace_back([this, fd] { handler_(fd, stopping_); });
      }
    }
  }

  const Handler handler_;
  const bool inline_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> accepted_{0};
  std::thread acceptor_;
  std::vector<std::thread> handlers_;  // the accepting thread's, then the destructor's
};

// Reads the request, then waits (up to `timeout`) for the peer to close. True if it did.
bool AwaitPeerClose(int fd, const std::atomic<bool>& stopping, std::chrono::milliseconds timeout) {
  std::string ignored;
  const ReadEnd end = ReadUntil(fd, &ignored, nullptr, timeout, &stopping);
  return end == ReadEnd::kEof || end == ReadEnd::kError;
}

// A TCP port on 127.0.0.1 that refuses connections for as long as this object lives: bound,
// never listening (so no other socket can take it meanwhile).
class RefusingPort {
 public:
  RefusingPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~RefusingPort() { ::close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// A healthy engine: answers every completion with kCompletionAnswer (one request per
// connection, so the proxy pools nothing that outlives the test).
class HealthyUpstream {
 public:
  HealthyUpstream() {
    server_.set_keep_alive_max_count(1);
    server_.Post("/v1/completions", [this](const httplib::Request&, httplib::Response& res) {
      requests_.fetch_add(1);
      res.set_content(kCompletionAnswer, "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    EXPECT_TRUE(Eventually([&] { return server_.is_running(); }, 10s));
  }
  ~HealthyUpstream() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  int requests() const { return requests_.load(); }

 private:
  httplib::Server server_;
  std::atomic<int> requests_{0};
  int port_ = 0;
  std::thread thread_;
};

// A raw client connection to the service.
int ConnectTo(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ADD_FAILURE() << "connect to " << port << ": " << strerror(errno);
  }
  return fd;
}

std::string CompletionRequest(const std::string& body) {
  return fmt::format(
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
      "Content-Length: {}\r\n\r\n{}",
      body.size(), body);
}

std::string StreamBody(int max_tokens) {
  return nlohmann::json{
      {"model", kModel}, {"prompt", "hello there"}, {"stream", true}, {"max_tokens", max_tokens}}
      .dump();
}

std::string Chunk(std::string_view data) {
  return fmt::format("{:x}\r\n{}\r\n", data.size(), data);
}

// The body of a chunked response as received so far, and whether its last chunk came.
struct Dechunked {
  std::string body;
  bool complete = false;
};
Dechunked Dechunk(std::string_view response) {
  Dechunked out;
  const size_t head = response.find("\r\n\r\n");
  if (head == std::string_view::npos) return out;
  std::string_view rest = response.substr(head + 4);
  while (true) {
    const size_t eol = rest.find("\r\n");
    if (eol == std::string_view::npos) return out;
    const size_t size = std::stoul(std::string(rest.substr(0, eol)), nullptr, 16);
    rest.remove_prefix(eol + 2);
    if (size == 0) {
      out.complete = rest.substr(0, 2) == "\r\n";
      return out;
    }
    out.body.append(rest.substr(0, size));
    if (rest.size() < size + 2) return out;
    rest.remove_prefix(size + 2);
  }
}

// --- The fixture --------------------------------------------------------------------------

class ProxyFailureTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ::signal(SIGPIPE, SIG_IGN); }

  void TearDown() override {
    client_.reset();
    harness_.Stop();
  }

  // Starts the service for model "llama" served by one pod per port (in this order), routing
  // with least-request (so Avoid() decides which pod is tried first).
  void StartService(const std::vector<int>& ports,
                    const std::function<void(ServiceConfig&)>& tune = nullptr) {
    ASSERT_NO_FATAL_FAILURE(harness_.Start(kModel, ports, [&](ServiceConfig& config) {
      config.upstream_connect_timeout_ms = 5000;
      config.upstream_first_byte_timeout_ms = 20000;
      config.upstream_idle_timeout_ms = 20000;
      config.upstream_timeout_ms = 60000;
      if (tune) tune(config);
    }));
    service_ = &harness_.service();
    client_ = std::make_unique<httplib::Client>("127.0.0.1", service_->http_port());
    client_->set_connection_timeout(10s);
    client_->set_read_timeout(30s);
  }

  store::PodRef PodOnPort(int port) {
    for (const store::PodRef& pod : service_->store().ListPods()) {
      if (store::PodServingPort(pod->object) == port) return pod;
    }
    ADD_FAILURE() << "no pod on port " << port;
    return nullptr;
  }

  // Makes least-request try every other pod before the one on `port`: an extra running
  // request counted on it (in the Store only, so the tracker does not see it).
  void Avoid(int port) {
    const store::PodRef pod = PodOnPort(port);
    ASSERT_NE(pod, nullptr);
    ASSERT_TRUE(service_->store().AddRequest("test-ballast", pod->key, kModel).ok());
  }
  void StopAvoiding() { ASSERT_TRUE(service_->store().DoneRequest("test-ballast").ok()); }

  int TotalRunning() { return harness_.TotalRunning(); }
  double Metric(const std::string& series) { return harness_.Metric(series); }
  double UpstreamErrors(const std::string& kind) {
    return Metric(fmt::format("aibrix_cache_proxy_upstream_errors_total{{kind=\"{}\"}}", kind));
  }
  double Retries() { return Metric("aibrix_cache_proxy_retries_total"); }

  void ExpectSettled(int requests) { harness_.ExpectSettled(requests, 10s); }

  // Posts kCompletion and expects an OpenAI-shaped error with `status`.
  void ExpectErrorAnswer(int status, const std::string& needle) {
    auto res = client_->Post("/v1/completions", kCompletion, "application/json");
    ASSERT_TRUE(res) << httplib::to_string(res.error());
    EXPECT_EQ(res->status, status) << res->body;
    EXPECT_THAT(res->get_header_value("Content-Type"), HasSubstr("application/json"));
    const nlohmann::json body = nlohmann::json::parse(res->body, nullptr, false);
    ASSERT_TRUE(body.is_object()) << res->body;
    EXPECT_EQ(body["error"]["code"], status) << res->body;
    EXPECT_THAT(body["error"]["message"].get<std::string>(), HasSubstr(needle));
  }

  testing::InProcessService harness_;
  Service* service_ = nullptr;  // harness_'s, while started
  std::unique_ptr<httplib::Client> client_;
};

// 1. An engine that accepts and never answers: 504 once the first-byte deadline passes, the
// upstream connection is closed, nothing retried (the healthy pod never sees the request).
TEST_F(ProxyFailureTest, SilentUpstreamIs504AndNotRetried) {
  std::atomic<int> closed_by_proxy{0};
  RawServer silent([&](int fd, const std::atomic<bool>& stopping) {
    std::string request;
    ReadUntil(fd, &request, HasWholeRequest, 10s, &stopping);
    if (AwaitPeerClose(fd, stopping, 30s)) closed_by_proxy.fetch_add(1);
    ::close(fd);
  });
  HealthyUpstream healthy;
  StartService({silent.port(), healthy.port()},
               [](ServiceConfig& c) { c.upstream_first_byte_timeout_ms = 300; });
  Avoid(healthy.port());
  ExpectErrorAnswer(504, "timed out");
  StopAvoiding();

  EXPECT_EQ(silent.accepted(), 1);
  EXPECT_EQ(healthy.requests(), 0);
  EXPECT_TRUE(Eventually([&] { return closed_by_proxy.load() == 1; }, 10s));
  EXPECT_EQ(UpstreamErrors("timeout"), 1);
  EXPECT_EQ(Retries(), 0);
  ExpectSettled(1);
}

// 2a. An engine that resets the connection without reading a byte (accept, then close with
// SO_LINGER 0 at once). When the reset reaches the proxy before its request bytes left (seen
// as a failed connect, or as send_reset), the request provably never reached the engine: it is
// retried on the other pod and succeeds. When the proxy's write went out first, the proxy
// cannot tell this engine from one that read the request and then died (test 3): 502, no
// retry. Which one happens is a race inside TCP, so each request is checked for consistency
// and requests are sent until the retry path was taken (on a 2-core loopback about one
// request in eight is retried, fewer on a loaded machine; the rest are answered 502).
TEST_F(ProxyFailureTest, ResetBeforeReadingIsRetriedOnAnotherPod) {
  RawServer resetting([](int fd, const std::atomic<bool>&) { ResetClose(fd); },
                      /*inline_handler=*/true);
  HealthyUpstream healthy;
  StartService({resetting.port(), healthy.port()});
  const std::string healthy_pod = PodOnPort(healthy.port())->key;
  constexpr int kMaxAttempts = 2000;
  const auto give_up = std::chrono::steady_clock::now() + 60s;
  int sent = 0;
  int retried = 0;
  int not_retried = 0;
  while (retried == 0 && sent < kMaxAttempts && std::chrono::steady_clock::now() < give_up) {
    SCOPED_TRACE(fmt::format("request {}", sent));
    const double never_reached_before = UpstreamErrors("connect") + UpstreamErrors("send_reset");
    const double reset_before = UpstreamErrors("reset");
    const double retries_before = Retries();
    Avoid(healthy.port());
    auto res = client_->Post("/v1/completions", kCompletion, "application/json");
    StopAvoiding();
    ++sent;
    ASSERT_TRUE(res) << httplib::to_string(res.error());
    const double never_reached =
        UpstreamErrors("connect") + UpstreamErrors("send_reset") - never_reached_before;
    const double reset = UpstreamErrors("reset") - reset_before;
    ASSERT_EQ(resetting.accepted(), sent);
    ASSERT_EQ(never_reached + reset, 1) << "one upstream failure per request";
    if (never_reached == 1) {
      ++retried;
      EXPECT_EQ(res->status, 200) << res->body;
      EXPECT_EQ(res->get_header_value("x-aibrix-target-pod"), healthy_pod);
      EXPECT_EQ(nlohmann::json::parse(res->body)["usage"]["completion_tokens"], 1);
      EXPECT_EQ(Retries() - retries_before, 1);
    } else {
      ++not_retried;
      EXPECT_EQ(res->status, 502) << res->body;
      EXPECT_EQ(Retries() - retries_before, 0);
    }
  }
  std::cout << "reset before reading: " << retried << " retried, " << not_retried
            << " answered 502 (the proxy's write went out before the reset)\n";
  EXPECT_EQ(retried, 1) << "no request was retried in " << sent << " attempts";
  EXPECT_EQ(healthy.requests(), retried);
  EXPECT_EQ(Retries(), retried);
  ExpectSettled(sent);
}

// 2b. A pod whose port refuses connections: retried on the other pod.
TEST_F(ProxyFailureTest, ConnectionRefusedIsRetriedOnAnotherPod) {
  RefusingPort refusing;
  HealthyUpstream healthy;
  StartService({refusing.port(), healthy.port()});
  Avoid(healthy.port());
  auto res = client_->Post("/v1/completions", kCompletion, "application/json");
  StopAvoiding();
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(res->get_header_value("x-aibrix-target-pod"), PodOnPort(healthy.port())->key);
  EXPECT_EQ(nlohmann::json::parse(res->body)["usage"]["completion_tokens"], 1);
  EXPECT_EQ(healthy.requests(), 1);
  EXPECT_EQ(Retries(), 1);
  EXPECT_EQ(UpstreamErrors("connect"), 1);
  ExpectSettled(1);
}

// 2c. The only pod refuses: nothing to retry on, so the answer is the upstream's 502 (not a
// routing error), and no retry is counted.
TEST_F(ProxyFailureTest, ARefusingOnlyPodIs502WithoutARetry) {
  RefusingPort refusing;
  StartService({refusing.port()});
  ExpectErrorAnswer(502, "failed");
  EXPECT_EQ(Retries(), 0);
  EXPECT_EQ(UpstreamErrors("connect"), 1);
  ExpectSettled(1);
}

// The routing API's other lifecycle: /cache/route with a request_id counts the request on
// its pod until /cache/done; without /cache/done it is settled after route_ttl_ms by the
// housekeeping sweep, and counted.
TEST_F(ProxyFailureTest, RouteLeasesWithoutDoneExpire) {
  HealthyUpstream healthy;
  StartService({healthy.port()}, [](ServiceConfig& config) { config.route_ttl_ms = 200; });
  for (const char* id : {"lease-1", "lease-2"}) {
    auto res = client_->Post(
        "/cache/route",
        fmt::format(R"({{"model":"{}","prompt":"hello","request_id":"{}"}})", kModel, id),
        "application/json");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
  }
  EXPECT_EQ(TotalRunning(), 2);
  auto done = client_->Post("/cache/done", R"({"request_id":"lease-1","output_tokens":3})",
                            "application/json");
  ASSERT_TRUE(done);
  EXPECT_EQ(done->status, 200) << done->body;
  EXPECT_TRUE(Eventually([&] { return TotalRunning() == 0; }, 10s));
  // The sweep counts the expired leases after it has released them.
  EXPECT_TRUE(Eventually([&] { return Metric("aibrix_cache_route_expired_total") == 1; }));
  auto late = client_->Post("/cache/done", R"({"request_id":"lease-2"})", "application/json");
  ASSERT_TRUE(late);
  EXPECT_EQ(late->status, 404);  // already settled by the sweep
  EXPECT_EQ(service_->store().InFlightRequests(), 0u);
}

// 3. An engine that reads the request and resets before answering: it may have started the
// work, so 502 and no retry.
TEST_F(ProxyFailureTest, ResetAfterReadingIs502AndNotRetried) {
  std::atomic<int> read_whole{0};
  RawServer resetting([&](int fd, const std::atomic<bool>& stopping) {
    std::string request;
    if (ReadUntil(fd, &request, HasWholeRequest, 10s, &stopping) == ReadEnd::kDone) {
      read_whole.fetch_add(1);
    }
    ResetClose(fd);
  });
  HealthyUpstream healthy;
  StartService({resetting.port(), healthy.port()});
  Avoid(healthy.port());
  ExpectErrorAnswer(502, "failed");
  StopAvoiding();

  EXPECT_EQ(read_whole.load(), 1);
  EXPECT_EQ(healthy.requests(), 0);
  EXPECT_EQ(Retries(), 0);
  EXPECT_EQ(UpstreamErrors("reset"), 1);
  EXPECT_EQ(UpstreamErrors("send_reset"), 0);
  ExpectSettled(1);
}

// 4. An engine that sends the head and part of an SSE stream, then dies — reset (SO_LINGER 0)
// or a plain close, as when its process is killed: the client's transfer is cut, it never
// sees the terminating chunk; counted as kind "reset".
class ProxyFailureMidStreamTest : public ProxyFailureTest,
                                  public ::testing::WithParamInterface<bool> {};

INSTANTIATE_TEST_SUITE_P(ResetOrClose, ProxyFailureMidStreamTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return std::string(info.param ? "Reset" : "Close");
                         });

TEST_P(ProxyFailureMidStreamTest, UpstreamDyingMidStreamAbortsTheClientTransfer) {
  const bool reset = GetParam();
  std::atomic<bool> release{false};
  std::atomic<int> died{0};
  RawServer dying([&](int fd, const std::atomic<bool>& stopping) {
    std::string request;
    ReadUntil(fd, &request, HasWholeRequest, 10s, &stopping);
    SendAll(fd, std::string(kStreamHead) + Chunk(kSseEvent));
    // Dies once the client has seen the first event.
    Eventually([&] { return release.load() || stopping.load(); }, 30s, 2ms);
    if (reset) {
      ResetClose(fd);
    } else {
      ::close(fd);
    }
    died.fetch_add(1);
  });
  StartService({dying.port()});

  const int client = ConnectTo(service_->http_port());
  ASSERT_TRUE(SendAll(client, CompletionRequest(StreamBody(50))));
  std::string got;
  ASSERT_EQ(ReadUntil(client, &got, HasHeadAndEvent, 10s), ReadEnd::kDone) << got;
  release.store(true);
  const ReadEnd end = ReadUntil(client, &got, nullptr, 20s);
  ::close(client);

  EXPECT_TRUE(end == ReadEnd::kEof || end == ReadEnd::kError) << Name(end);
  EXPECT_TRUE(Eventually([&] { return died.load() == 1; }, 10s));
  EXPECT_THAT(got, ::testing::StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(got, HasSubstr("Transfer-Encoding: chunked"));
  EXPECT_THAT(got, HasSubstr("text/event-stream"));
  const Dechunked body = Dechunk(got);
  EXPECT_THAT(body.body, HasSubstr(kSseEvent));
  EXPECT_FALSE(body.complete) << "a cut stream must not end cleanly: " << got;
  EXPECT_THAT(got, Not(HasSubstr(kLastChunk)));
  EXPECT_EQ(UpstreamErrors("reset"), 1);
  EXPECT_EQ(Retries(), 0);
  ExpectSettled(1);
}

// 5. A client that goes away mid-stream: the service closes the upstream connection at once
// (the engine stops generating), and the request is settled.
TEST_F(ProxyFailureTest, ClientGoneMidStreamClosesTheUpstream) {
  std::atomic<int> events_sent{0};
  std::atomic<bool> upstream_noticed{false};
  RawServer streaming([&](int fd, const std::atomic<bool>& stopping) {
    std::string request;
    ReadUntil(fd, &request, HasWholeRequest, 10s, &stopping);
    bool ok = SendAll(fd, kStreamHead);
    // An endless stream (bounded at 60 s) until the proxy goes away.
    const auto give_up = std::chrono::steady_clock::now() + 60s;
    while (ok && !stopping.load() && std::chrono::steady_clock::now() < give_up) {
      ok = SendAll(fd, Chunk(kSseEvent));
      if (ok) events_sent.fetch_add(1);
      std::string ignored;
      const ReadEnd end = ReadUntil(fd, &ignored, nullptr, 20ms);
      if (end == ReadEnd::kEof || end == ReadEnd::kError) ok = false;
    }
    if (!ok) upstream_noticed.store(true);
    ::close(fd);
  });
  StartService({streaming.port()});

  const int client = ConnectTo(service_->http_port());
  ASSERT_TRUE(SendAll(client, CompletionRequest(StreamBody(100000))));
  std::string got;
  ASSERT_EQ(ReadUntil(client, &got, HasHeadAndEvent, 10s), ReadEnd::kDone) << got;
  EXPECT_THAT(got, ::testing::StartsWith("HTTP/1.1 200"));
  ::close(client);

  EXPECT_TRUE(Eventually([&] { return upstream_noticed.load(); }, 10s))
      << "the upstream connection stayed open after the client left; events sent "
      << events_sent.load();
  EXPECT_EQ(Retries(), 0);
  EXPECT_EQ(UpstreamErrors("reset"), 0);
  EXPECT_EQ(UpstreamErrors("timeout"), 0);
  ExpectSettled(1);
}

// 5a. The request's prompt tokens count as prefill queued on its pod (kv-aware's queue term)
// until the engine's first body bytes, not until its head (an engine sends its head before
// the prefill) nor until the end.
TEST_F(ProxyFailureTest, PrefillTokensCountOnThePodUntilTheFirstBodyBytes) {
  std::atomic<bool> send_head{false};
  std::atomic<bool> send_first{false};
  std::atomic<bool> send_rest{false};
  const auto wait_for = [](const std::atomic<bool>& flag, const std::atomic<bool>& stopping) {
    const auto give_up = std::chrono::steady_clock::now() + 30s;
    while (!flag.load() && !stopping.load() && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(2ms);
    }
  };
  RawServer engine([&](int fd, const std::atomic<bool>& stopping) {
    std::string request;
    ReadUntil(fd, &request, HasWholeRequest, 10s, &stopping);
    wait_for(send_head, stopping);
    SendAll(fd, kStreamHead);
    wait_for(send_first, stopping);
    SendAll(fd, Chunk(kSseEvent));
    wait_for(send_rest, stopping);
    SendAll(fd, Chunk("data: [DONE]\n\n") + "0\r\n\r\n");
    AwaitPeerClose(fd, stopping, 30s);
    ::close(fd);
  });
  StartService({engine.port()});
  const store::PodRef pod = PodOnPort(engine.port());
  ASSERT_NE(pod, nullptr);
  const auto prefill = [&] { return pod->state->pending_prefill_tokens(); };

  const int client = ConnectTo(service_->http_port());
  ASSERT_TRUE(SendAll(client, CompletionRequest(StreamBody(3))));
  ASSERT_TRUE(Eventually([&] { return engine.accepted() == 1 && prefill() > 0; }, 10s));
  const int64_t tokens = prefill();  // the whole prompt: least-request matches no blocks
  send_head.store(true);
  std::string got;
  const auto has_head = [](const std::string& s) {
    return s.find("\r\n\r\n") != std::string::npos;
  };
  ASSERT_EQ(ReadUntil(client, &got, has_head, 10s), ReadEnd::kDone) << got;
  EXPECT_EQ(prefill(), tokens) << "released by the head";
  send_first.store(true);
  ASSERT_EQ(ReadUntil(client, &got, HasHeadAndEvent, 10s), ReadEnd::kDone) << got;
  EXPECT_TRUE(Eventually([&] { return prefill() == 0; }, 10s));
  EXPECT_EQ(pod->state->running(), 1);  // still in flight
  send_rest.store(true);
  std::string rest;
  ReadUntil(
      client, &rest, [](const std::string& s) { return s.find("0\r\n\r\n") != std::string::npos; },
      10s);
  ::close(client);
  ExpectSettled(1);
  EXPECT_EQ(prefill(), 0);
}

// 5b. The same before the engine's head: a client that leaves while the proxy still waits
// for the first byte cancels the upstream call (the engine's connection is closed) long before
// any upstream deadline, and nothing is counted as an upstream error.
TEST_F(ProxyFailureTest, ClientGoneBeforeTheHeadClosesTheUpstream) {
  std::atomic<int> requests_read{0};
  std::atomic<int> closed_by_proxy{0};
  RawServer silent([&](int fd, const std::atomic<bool>& stopping) {
    std::string request;
    if (ReadUntil(fd, &request, HasWholeRequest, 10s, &stopping) == ReadEnd::kDone) {
      requests_read.fetch_add(1);
    }
    if (AwaitPeerClose(fd, stopping, 60s)) closed_by_proxy.fetch_add(1);
    ::close(fd);
  });
  StartService({silent.port()});  // first-byte deadline 20 s

  const int client = ConnectTo(service_->http_port());
  ASSERT_TRUE(SendAll(client, CompletionRequest(kCompletion)));
  ASSERT_TRUE(Eventually([&] { return requests_read.load() == 1; }, 10s));
  ::close(client);

  EXPECT_TRUE(Eventually([&] { return closed_by_proxy.load() == 1; }, 10s))
      << "the upstream call outlived its client";
  EXPECT_EQ(Retries(), 0);
  EXPECT_EQ(UpstreamErrors("timeout"), 0);
  EXPECT_EQ(UpstreamErrors("reset"), 0);
  ExpectSettled(1);
}

// 6. An engine that answers something that is not HTTP: 502, counted as bad_response, not
// retried.
TEST_F(ProxyFailureTest, GarbageResponseIs502BadResponse) {
  RawServer garbage([](int fd, const std::atomic<bool>& stopping) {
    std::string request;
    ReadUntil(fd, &request, HasWholeRequest, 10s, &stopping);
    SendAll(fd, "SSH-2.0-OpenSSH_9.6\r\nthis is not HTTP at all\r\n\r\n");
    AwaitPeerClose(fd, stopping, 30s);
    ::close(fd);
  });
  HealthyUpstream healthy;
  StartService({garbage.port(), healthy.port()});
  Avoid(healthy.port());
  ExpectErrorAnswer(502, "failed");
  StopAvoiding();

  EXPECT_EQ(garbage.accepted(), 1);
  EXPECT_EQ(healthy.requests(), 0);
  EXPECT_EQ(UpstreamErrors("bad_response"), 1);
  EXPECT_EQ(Retries(), 0);
  ExpectSettled(1);
}

// 7. A graceful stop (what SIGTERM does) while three streams run: /readyz turns 503 at once,
// the two streams that end within the grace period end cleanly, the one that would outlast
// it is cut, and nothing stays in flight.
TEST_F(ProxyFailureTest, GracefulStopFinishesShortStreamsAndCutsLongOnes) {
  constexpr int kShortEvents = 5;
  constexpr int kLongEvents = 300;  // 30 s at one event per 100 ms: far past the grace
  std::atomic<int> upstreams_closed_early{0};
  RawServer streaming([&](int fd, const std::atomic<bool>& stopping) {
    std::string request;
    ReadUntil(fd, &request, HasWholeRequest, 10s, &stopping);
    const size_t body = request.find("\r\n\r\n");
    const nlohmann::json json = nlohmann::json::parse(
        request.substr(body == std::string::npos ? 0 : body + 4), nullptr, false);
    const int events = json.is_object() ? json.value("max_tokens", 1) : 1;
    bool ok = SendAll(fd, kStreamHead);
    for (int i = 0; ok && i < events && !stopping.load(); ++i) {
      ok = SendAll(fd, Chunk(kSseEvent));
      std::string ignored;
      const ReadEnd end = ReadUntil(fd, &ignored, nullptr, 100ms);
      if (end == ReadEnd::kEof || end == ReadEnd::kError) ok = false;
    }
    if (ok) {
      SendAll(fd, Chunk("data: [DONE]\n\n") + "0\r\n\r\n");
      AwaitPeerClose(fd, stopping, 30s);
    } else {
      upstreams_closed_early.fetch_add(1);
    }
    ::close(fd);
  });
  StartService({streaming.port()}, [](ServiceConfig& c) {
    c.shutdown_delay_ms = 100;
    c.shutdown_grace_ms = 2000;
  });
  client_->set_keep_alive(true);
  ASSERT_TRUE(client_->Get("/healthz"));  // the connection /readyz is asked on
  ASSERT_EQ(client_->Get("/readyz")->status, 200);

  const std::vector<int> events = {kShortEvents, kShortEvents, kLongEvents};
  std::vector<int> clients;
  std::vector<std::string> got(events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    clients.push_back(ConnectTo(service_->http_port()));
    ASSERT_TRUE(SendAll(clients[i], CompletionRequest(StreamBody(events[i]))));
  }
  for (size_t i = 0; i < events.size(); ++i) {
    ASSERT_EQ(ReadUntil(clients[i], &got[i], HasHeadAndEvent, 10s), ReadEnd::kDone) << got[i];
  }
  ASSERT_EQ(service_->store().InFlightRequests(), 3u);

  std::thread stopper([&] { service_->Stop(Service::StopMode::kGraceful); });
  // Right after Drain, within the shutdown delay (accepting still goes on).
  EXPECT_TRUE(Eventually([&] { return !service_->ready(); }, 10s, 1ms));
  auto readyz = client_->Get("/readyz");
  ASSERT_TRUE(readyz) << httplib::to_string(readyz.error());
  EXPECT_EQ(readyz->status, 503) << readyz->body;
  EXPECT_EQ(nlohmann::json::parse(readyz->body)["error"]["code"], 503);

  std::vector<ReadEnd> ends;
  for (size_t i = 0; i < events.size(); ++i) {
    ends.push_back(ReadUntil(
        clients[i], &got[i], [](const std::string& s) { return Dechunk(s).complete; }, 30s));
    // The server closes every connection on its way out: read on to the end.
    if (ends.back() == ReadEnd::kDone) ends.back() = ReadUntil(clients[i], &got[i], nullptr, 30s);
    ::close(clients[i]);
  }
  stopper.join();

  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(fmt::format("short stream {}", i));
    EXPECT_TRUE(ends[i] == ReadEnd::kEof || ends[i] == ReadEnd::kError) << Name(ends[i]);
    const Dechunked body = Dechunk(got[i]);
    EXPECT_TRUE(body.complete) << got[i];
    EXPECT_TRUE(EndsWith(got[i], kLastChunk)) << got[i];
    EXPECT_EQ(Count(body.body, kSseEvent), static_cast<size_t>(kShortEvents)) << got[i];
    EXPECT_TRUE(EndsWith(body.body, "data: [DONE]\n\n")) << got[i];
  }
  EXPECT_TRUE(ends[2] == ReadEnd::kEof || ends[2] == ReadEnd::kError) << Name(ends[2]);
  const Dechunked cut = Dechunk(got[2]);
  EXPECT_FALSE(cut.complete) << "the long stream must be cut, not ended: " << got[2];
  EXPECT_THAT(got[2], Not(HasSubstr(kLastChunk)));
  EXPECT_THAT(cut.body, Not(HasSubstr("data: [DONE]")));
  EXPECT_GE(Count(cut.body, kSseEvent), 1u);
  EXPECT_LT(Count(cut.body, kSseEvent), static_cast<size_t>(kLongEvents));
  // The cut stream's upstream call was cancelled: its connection closed.
  EXPECT_TRUE(Eventually([&] { return upstreams_closed_early.load() == 1; }, 10s));
  EXPECT_EQ(service_->store().InFlightRequests(), 0u);
  ExpectSettled(3);
}

}  // namespace
}  // namespace aibrix
