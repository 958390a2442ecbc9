#include "aibrix/http/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "prometheus/registry.h"
#include "tests/util/poll.h"

namespace aibrix::http {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

ServerOptions TestOptions() {
  ServerOptions options;
  options.port = 0;
  options.io_threads = 2;
  options.max_body_bytes = 1024;
  return options;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(); }
  void Start(ServerOptions options = TestOptions()) {
    server_ = std::make_unique<Server>(options, registry_);
    server_->Route("POST", "/echo", [](const Request& req, Response& res) {
      auto body = nlohmann::json::parse(req.body, nullptr, false);
      if (body.is_discarded() || !body.is_object()) {
        SendError(res, 400, "request body must be a JSON object");
        return;
      }
      SendJson(res, {{"got", body}});
    });
    server_->Route("GET", "/boom",
                   [](const Request&, Response&) { throw std::runtime_error("kaboom"); });
    server_->Route("GET", "/items/{id}", [](const Request& req, Response& res) {
      SendJson(res, {{"id", req.params[0]},
                     {"query", req.query},
                     {"q", req.QueryParam("q").value_or("<absent>")},
                     {"flag", req.QueryParam("flag").value_or("<absent>")},
                     {"none", req.QueryParam("none").value_or("<absent>")}});
    });
    server_->RouteAsync("GET", "/stream", [this](std::shared_ptr<Exchange> exchange) {
      Headers headers;
      headers.Set("Content-Type", "text/event-stream");
      auto writer = exchange->Stream(200, headers, std::nullopt);
      exchange->OnCancel([this] { cancelled_.fetch_add(1); });
      for (int i = 0; i < 3; ++i) writer->Write(fmt::format("data: {}\n\n", i), nullptr);
      writer->Finish();
    });
    server_->RouteAsync("GET", "/hang", [this](std::shared_ptr<Exchange> exchange) {
      exchange->OnCancel([this, exchange] { cancelled_.fetch_add(1); });
      exchange->Run([this, exchange] { hanging_ = exchange; });
    });
    server_->RouteAsync("GET", "/later", [](std::shared_ptr<Exchange> exchange) {
      std::thread([exchange] {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        Response res;
        res.SetBody("late", "text/plain");
        exchange->Respond(std::move(res));
      }).detach();
    });
    ASSERT_TRUE(server_->Start().ok());
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
  }
  void TearDown() override {
    hanging_.reset();
    server_->Stop();
  }

  static nlohmann::json Json(const httplib::Result& result) {
    return nlohmann::json::parse(result->body);
  }

  prometheus::Registry registry_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<httplib::Client> client_;
  std::atomic<int> cancelled_{0};
  std::shared_ptr<Exchange> hanging_;
};

TEST_F(HttpServerTest, EchoesJson) {
  auto result = client_->Post("/echo", R"({"a": 1})", "application/json");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(Json(result)["got"]["a"], 1);
  EXPECT_FALSE(result->get_header_value("Date").empty());
}

TEST_F(HttpServerTest, UnknownPathIsJson404AndWrongMethod405) {
  auto result = client_->Get("/nope");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 404);
  auto body = Json(result);
  EXPECT_EQ(body["error"]["code"], 404);
  EXPECT_EQ(body["error"]["type"], "not_found_error");
  EXPECT_THAT(body["error"]["message"].get<std::string>(), HasSubstr("GET /nope"));
  EXPECT_EQ(client_->Get("/echo")->status, 405);
}

TEST_F(HttpServerTest, MalformedJsonIs400WithMessage) {
  for (const char* bad : {"{", "[1,2]", "", "\xff\xfe", "{\"a\": }"}) {
    auto result = client_->Post("/echo", bad, "application/json");
    ASSERT_TRUE(result);
    EXPECT_EQ(result->status, 400) << bad;
    EXPECT_FALSE(Json(result)["error"]["message"].get<std::string>().empty());
  }
}

TEST_F(HttpServerTest, OversizeBodyIs413) {
  auto result = client_->Post("/echo", std::string(4096, ' '), "application/json");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 413);
  EXPECT_THAT(Json(result)["error"]["message"].get<std::string>(), HasSubstr("1024 bytes"));
}

TEST_F(HttpServerTest, HandlerExceptionIs500AndServerStaysUp) {
  auto result = client_->Get("/boom");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 500);
  EXPECT_THAT(Json(result)["error"]["message"].get<std::string>(), HasSubstr("kaboom"));
  EXPECT_EQ(client_->Post("/echo", "{}", "application/json")->status, 200);
}

TEST_F(HttpServerTest, AnswersLaterFromAnotherThread) {
  auto result = client_->Get("/later");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->body, "late");
}

TEST_F(HttpServerTest, CountsRequestsByRouteAndCode) {
  client_->Post("/echo", "{}", "application/json");
  client_->Get("/nope");
  bool saw_echo = false;
  bool saw_unmatched = false;
  // A request is counted once its answer is written, which may be just after the client
  // has read it.
  EXPECT_TRUE(testing::Eventually([&] {
    for (const auto& family : registry_.Collect()) {
      if (family.name != "aibrix_cache_http_requests_total") continue;
      for (const auto& metric : family.metric) {
        std::map<std::string, std::string> labels;
        for (const auto& label : metric.label) labels[label.name] = label.value;
        if (labels["route"] == "/echo" && labels["code"] == "200") {
          saw_echo = metric.counter.value >= 1;
        }
        if (labels["route"] == "unmatched" && labels["code"] == "404") saw_unmatched = true;
      }
    }
    return saw_echo && saw_unmatched;
  }));
}

// A raw client: what httplib::Client never sends (pipelining, chunked uploads, Expect,
// garbage), read back as one string.
class RawClient {
 public:
  explicit RawClient(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    const timeval timeout{5, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  }
  ~RawClient() { close(fd_); }
  void Send(std::string_view data) {
    EXPECT_EQ(send(fd_, data.data(), data.size(), MSG_NOSIGNAL), static_cast<ssize_t>(data.size()));
  }
  // Reads until `count` occurrences of `marker` arrived, or the peer closed / timed out.
  std::string ReadUntil(std::string_view marker, int count = 1) {
    std::string out;
    char buf[4096];
    while (Count(out, marker) < count) {
      const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }
  void ShutdownWrite() { shutdown(fd_, SHUT_WR); }
  // True when the server closed the connection (recv returns 0).
  bool Closed() {
    char c;
    return recv(fd_, &c, 1, 0) == 0;
  }

 private:
  static int Count(const std::string& s, std::string_view marker) {
    int n = 0;
    for (size_t at = s.find(marker); at != std::string::npos; at = s.find(marker, at + 1)) ++n;
    return n;
  }
  int fd_;
};

TEST_F(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  RawClient raw(server_->port());
  raw.Send(
      "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
      "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n\r\n{\"a\":2}");
  const std::string out = raw.ReadUntil("}}", 2);
  const size_t first = out.find(R"({"got":{"a":1}})");
  ASSERT_NE(first, std::string::npos) << out;
  EXPECT_NE(out.find(R"({"got":{"a":2}})", first), std::string::npos) << out;
  EXPECT_THAT(out, HasSubstr("Connection: keep-alive"));
}

TEST_F(HttpServerTest, ChunkedUploadWithExpectContinue) {
  RawClient raw(server_->port());
  raw.Send(
      "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nExpect: "
      "100-continue\r\n\r\n");
  EXPECT_THAT(raw.ReadUntil("\r\n\r\n"), HasSubstr("HTTP/1.1 100 Continue"));
  raw.Send("3\r\n{\"a\r\n");
  raw.Send("4\r\n\":3}\r\n0\r\n\r\n");
  EXPECT_THAT(raw.ReadUntil("}}"), HasSubstr(R"({"got":{"a":3}})"));
}

TEST_F(HttpServerTest, GarbageIs400AndTheConnectionCloses) {
  for (const char* garbage :
       {"HELLO\r\n\r\n", "GET / HTTP/9.9\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"}) {
    RawClient raw(server_->port());
    raw.Send(garbage);
    const std::string out = raw.ReadUntil("}}");
    EXPECT_THAT(out, HasSubstr("HTTP/1.1 400 Bad Request")) << garbage;
    EXPECT_THAT(out, HasSubstr("malformed HTTP request")) << garbage;
    EXPECT_TRUE(raw.Closed()) << garbage;
  }
  EXPECT_EQ(client_->Post("/echo", "{}", "application/json")->status, 200);
}

TEST_F(HttpServerTest, TruncatedRequestsCloseQuietlyAndTheServerStaysUp) {
  for (const char* truncated :
       {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Le",
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n{\"a",
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"}) {
    RawClient raw(server_->port());
    raw.Send(truncated);
    raw.ShutdownWrite();  // the client gives up mid-request
    EXPECT_EQ(raw.ReadUntil("}}"), "") << truncated;
  }
  EXPECT_EQ(client_->Post("/echo", "{}", "application/json")->status, 200);
}

TEST_F(HttpServerTest, OversizeHeadIs431AndOversizeChunkedBodyIs413) {
  RawClient big_head(server_->port());
  big_head.Send("GET /echo HTTP/1.1\r\nHost: t\r\nX: " + std::string(70000, 'a'));
  EXPECT_THAT(big_head.ReadUntil("}}"), HasSubstr("HTTP/1.1 431"));
  RawClient big_body(server_->port());
  big_body.Send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n");
  EXPECT_THAT(big_body.ReadUntil("}}"), HasSubstr("HTTP/1.1 413"));
}

TEST_F(HttpServerTest, ConnectionCloseIsHonoured) {
  RawClient raw(server_->port());
  raw.Send("POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}");
  EXPECT_THAT(raw.ReadUntil("}}"), HasSubstr("Connection: close"));
  EXPECT_TRUE(raw.Closed());
}

TEST(RequestTest, QueryParamIsFormDecoded) {
  Request req;
  req.query = "flag&q=a+b%20c%2B&q=second&empty=&x%5By%5D=1";
  EXPECT_EQ(req.QueryParam("q"), "a b c+");  // '+' is a space, %2B a plus
  EXPECT_EQ(req.QueryParam("flag"), "");
  EXPECT_EQ(req.QueryParam("empty"), "");
  EXPECT_EQ(req.QueryParam("x[y]"), "1");
  EXPECT_EQ(req.QueryParam("none"), std::nullopt);
  req.query = "";
  EXPECT_EQ(req.QueryParam("q"), std::nullopt);
}

TEST_F(HttpServerTest, PathGroupsQueryAndChunkedResponses) {
  auto item = client_->Get("/items/a%20b?q=x%2By");
  ASSERT_TRUE(item);
  EXPECT_EQ(Json(item)["id"], "a b");
  EXPECT_EQ(Json(item)["query"], "q=x%2By");  // the query is kept as sent
  EXPECT_EQ(Json(item)["q"], "x+y");
  auto form = client_->Get("/items/a?flag&q=a%20c&q=second");
  ASSERT_TRUE(form);
  EXPECT_EQ(Json(form)["q"], "a c");  // the first value wins
  EXPECT_EQ(Json(form)["flag"], "");
  EXPECT_EQ(Json(form)["none"], "<absent>");
  auto stream = client_->Get("/stream");
  ASSERT_TRUE(stream);
  EXPECT_EQ(stream->status, 200);
  EXPECT_EQ(stream->body, "data: 0\n\ndata: 1\n\ndata: 2\n\n");
  EXPECT_EQ(stream->get_header_value("Content-Type"), "text/event-stream");
}

TEST_F(HttpServerTest, StopClosesIdleKeepAliveConnections) {
  RawClient raw(server_->port());
  raw.Send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}");
  EXPECT_THAT(raw.ReadUntil("}}"), HasSubstr("200 OK"));
  server_->Stop();
  EXPECT_TRUE(raw.Closed());
}

TEST(HttpServerStartTest, PortInUseIsAnError) {
  prometheus::Registry registry;
  ServerOptions options = TestOptions();
  Server first(options, registry);
  ASSERT_TRUE(first.Start().ok());
  options.port = first.port();
  prometheus::Registry registry2;
  Server second(options, registry2);
  EXPECT_FALSE(second.Start().ok());
}

TEST_F(HttpServerTest, HugeTargetIs414AndLongParametersAreMatchedLinearly) {
  RawClient raw(server_->port());
  raw.Send("GET /items/" + std::string(40000, 'a') + " HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_THAT(raw.ReadUntil("}}"), HasSubstr("HTTP/1.1 414"));
  EXPECT_TRUE(raw.Closed());
  server_->Stop();
  ServerOptions options = TestOptions();
  options.max_target_bytes = 1 << 20;
  options.max_head_bytes = 1 << 20;
  Start(options);
  auto item = client_->Get("/items/" + std::string(40000, 'a'));
  ASSERT_TRUE(item);
  EXPECT_EQ(Json(item)["id"].get<std::string>().size(), 40000u);
}

TEST_F(HttpServerTest, Http11WithoutHostIs400AndLeadingEmptyLinesAreSkipped) {
  RawClient raw(server_->port());
  raw.Send("GET /items/x HTTP/1.1\r\n\r\n");
  EXPECT_THAT(raw.ReadUntil("}}"), HasSubstr("without Host"));
  RawClient blank(server_->port());
  blank.Send("\r\n\r\nGET /items/x HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_THAT(blank.ReadUntil("\"q\":\"\"}"), StartsWith("HTTP/1.1 200 OK"));
}

TEST_F(HttpServerTest, SlowHeadGets408AndSlowBody408) {
  server_->Stop();
  ServerOptions options = TestOptions();
  options.head_timeout = std::chrono::milliseconds(300);
  options.body_timeout = std::chrono::milliseconds(300);
  Start(options);
  // One byte at a time, each well inside any per-read timeout: the whole-head deadline fires.
  RawClient slow(server_->port());
  const std::string head = "GET /items/x HTTP/1.1\r\nHost: t\r\n";
  for (char c : head) {
    slow.Send(std::string(1, c));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_THAT(slow.ReadUntil("}}"), HasSubstr("HTTP/1.1 408"));
  EXPECT_TRUE(slow.Closed());
  RawClient stalled(server_->port());
  stalled.Send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n{");
  EXPECT_THAT(stalled.ReadUntil("}}"), HasSubstr("HTTP/1.1 408"));
}

TEST_F(HttpServerTest, IdleKeepAliveConnectionsAreClosed) {
  server_->Stop();
  ServerOptions options = TestOptions();
  options.idle_timeout = std::chrono::milliseconds(200);
  Start(options);
  RawClient raw(server_->port());
  raw.Send("GET /items/x HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_THAT(raw.ReadUntil("\"q\":\"\"}"), HasSubstr("200 OK"));
  EXPECT_TRUE(raw.Closed());
}

TEST_F(HttpServerTest, PastMaxConnectionsNewOnesGet503) {
  server_->Stop();
  ServerOptions options = TestOptions();
  options.max_connections = 2;
  Start(options);
  RawClient a(server_->port()), b(server_->port());
  a.Send("GET /items/x HTTP/1.1\r\nHost: t\r\n\r\n");
  b.Send("GET /items/x HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_THAT(a.ReadUntil("\"q\":\"\"}"), HasSubstr("200 OK"));
  EXPECT_THAT(b.ReadUntil("\"q\":\"\"}"), HasSubstr("200 OK"));
  RawClient c(server_->port());
  EXPECT_THAT(c.ReadUntil("}}"), HasSubstr("HTTP/1.1 503"));
  EXPECT_TRUE(c.Closed());
}

TEST_F(HttpServerTest, A413IsReadByAClientStillSending) {
  RawClient raw(server_->port());
  const std::string body(512 << 10, 'x');
  raw.Send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\n\r\n");
  raw.Send(body);  // the server answers 413 early and keeps reading what follows
  EXPECT_THAT(raw.ReadUntil("}}"), HasSubstr("HTTP/1.1 413"));
}

TEST_F(HttpServerTest, ClientGoingAwayCancelsTheExchange) {
  {
    RawClient raw(server_->port());
    raw.Send("GET /hang HTTP/1.1\r\nHost: t\r\n\r\n");
    while (server_->in_flight() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  while (cancelled_.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  while (server_->in_flight() != 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(cancelled_.load(), 1);
}

TEST_F(HttpServerTest, StopWaitsForInFlightThenCutsTheRest) {
  std::thread later([&] {
    auto result = httplib::Client("127.0.0.1", server_->port()).Get("/later");
    ASSERT_TRUE(result);
    EXPECT_EQ(result->body, "late");
  });
  RawClient hang(server_->port());
  hang.Send("GET /hang HTTP/1.1\r\nHost: t\r\n\r\n");
  while (server_->in_flight() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  server_->Stop(std::chrono::milliseconds(1000));  // /later finishes, /hang is cut
  later.join();
  EXPECT_TRUE(hang.Closed());
  EXPECT_EQ(cancelled_.load(), 1);
  EXPECT_EQ(server_->in_flight(), 0u);
}

TEST_F(HttpServerTest, HealthAnswersWhileManyConnectionsAreSlow) {
  std::vector<std::unique_ptr<RawClient>> slow;
  for (int i = 0; i < 200; ++i) {
    slow.push_back(std::make_unique<RawClient>(server_->port()));
    slow.back()->Send("GET /items/x HTTP/1.1\r\nHo");
  }
  for (int i = 0; i < 20; ++i) {
    auto result = client_->Get("/items/ok");
    ASSERT_TRUE(result);
    EXPECT_EQ(result->status, 200);
  }
  EXPECT_GE(server_->open_connections(), 200u);
}

TEST_F(HttpServerTest, ARequestSentWhileThePreviousIsAnsweredIsServed) {
  RawClient raw(server_->port());
  raw.Send("GET /later HTTP/1.1\r\nHost: t\r\n\r\n");
  while (server_->in_flight() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  raw.Send("GET /items/second HTTP/1.1\r\nHost: t\r\n\r\n");  // arrives while /later waits
  const std::string out = raw.ReadUntil("\"q\":\"\"}");
  EXPECT_THAT(out, HasSubstr("late"));
  EXPECT_THAT(out, HasSubstr("second"));
}

TEST_F(HttpServerTest, AClientLeavingAfterExtraBytesStillCancelsTheExchange) {
  {
    RawClient raw(server_->port());
    // A stray CRLF after the request (some clients send one): still a client that can leave.
    raw.Send("GET /hang HTTP/1.1\r\nHost: t\r\n\r\n\r\n");
    while (server_->in_flight() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  while (cancelled_.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(cancelled_.load(), 1);
}

}  // namespace
}  // namespace aibrix::http
