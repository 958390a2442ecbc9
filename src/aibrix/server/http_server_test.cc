#include "aibrix/server/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aibrix::server {
namespace {

using ::testing::HasSubstr;

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HttpServerOptions options;
    options.port = 0;
    options.max_body_bytes = 1024;
    options.threads = 4;
    server_ = std::make_unique<HttpServer>(options, registry_);
    server_->Post("/echo", "/echo", [](const Request& req, Response& res) {
      auto body = ParseJsonBody(req, res);
      if (!body) return;
      SendJson(res, {{"got", *body}});
    });
    server_->Get("/boom", "/boom",
                 [](const Request&, Response&) { throw std::runtime_error("kaboom"); });
    server_->Get(R"(/items/([^/]+))", "/items/{id}", [](const Request& req, Response& res) {
      SendJson(res, {{"id", req.matches[1].str()}, {"q", req.get_param_value("q")}});
    });
    server_->Get("/stream", "/stream", [](const Request&, Response& res) {
      auto sent = std::make_shared<int>(0);
      res.set_chunked_content_provider(
          "text/event-stream", [sent](size_t, httplib::DataSink& sink) {
            if (*sent == 3) {
              sink.done();
              return true;
            }
            const std::string event = fmt::format("data: {}\n\n", (*sent)++);
            return sink.write(event.data(), event.size());
          });
    });
    ASSERT_TRUE(server_->Start().ok());
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
  }
  void TearDown() override { server_->Stop(); }

  static nlohmann::json Json(const httplib::Result& result) {
    return nlohmann::json::parse(result->body);
  }

  prometheus::Registry registry_;
  std::unique_ptr<HttpServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(HttpServerTest, EchoesJson) {
  auto result = client_->Post("/echo", R"({"a": 1})", "application/json");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(Json(result)["got"]["a"], 1);
}

TEST_F(HttpServerTest, UnknownPathIsJson404) {
  auto result = client_->Get("/nope");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 404);
  auto body = Json(result);
  EXPECT_EQ(body["error"]["code"], 404);
  EXPECT_EQ(body["error"]["type"], "not_found_error");
  EXPECT_THAT(body["error"]["message"].get<std::string>(), HasSubstr("GET /nope"));
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

TEST_F(HttpServerTest, CountsRequestsByRouteAndCode) {
  client_->Post("/echo", "{}", "application/json");
  client_->Get("/nope");
  bool saw_echo = false;
  bool saw_unmatched = false;
  for (const auto& family : registry_.Collect()) {
    if (family.name != "aibrix_cache_http_requests_total") continue;
    for (const auto& metric : family.metric) {
      std::map<std::string, std::string> labels;
      for (const auto& label : metric.label) labels[label.name] = label.value;
      if (labels["route"] == "/echo" && labels["code"] == "200")
        saw_echo = metric.counter.value >= 1;
      if (labels["route"] == "unmatched" && labels["code"] == "404") saw_unmatched = true;
    }
  }
  EXPECT_TRUE(saw_echo);
  EXPECT_TRUE(saw_unmatched);
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
      "POST /echo HTTP/1.1\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
      "POST /echo HTTP/1.1\r\nContent-Length: 7\r\n\r\n{\"a\":2}");
  const std::string out = raw.ReadUntil("}}", 2);
  const size_t first = out.find(R"({"got":{"a":1}})");
  ASSERT_NE(first, std::string::npos) << out;
  EXPECT_NE(out.find(R"({"got":{"a":2}})", first), std::string::npos) << out;
  EXPECT_THAT(out, HasSubstr("Connection: keep-alive"));
}

TEST_F(HttpServerTest, ChunkedUploadWithExpectContinue) {
  RawClient raw(server_->port());
  raw.Send("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
  EXPECT_THAT(raw.ReadUntil("\r\n\r\n"), HasSubstr("HTTP/1.1 100 Continue"));
  raw.Send("3\r\n{\"a\r\n");
  raw.Send("4\r\n\":3}\r\n0\r\n\r\n");
  EXPECT_THAT(raw.ReadUntil("}}"), HasSubstr(R"({"got":{"a":3}})"));
}

TEST_F(HttpServerTest, GarbageIs400AndTheConnectionCloses) {
  for (const char* garbage : {"HELLO\r\n\r\n", "GET / HTTP/9.9\r\n\r\n",
                              "POST /echo HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                              "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"}) {
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
       {"POST /echo HTTP/1.1\r\nContent-Le",
        "POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\n{\"a",
        "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"}) {
    RawClient raw(server_->port());
    raw.Send(truncated);
    raw.ShutdownWrite();  // the client gives up mid-request
    EXPECT_EQ(raw.ReadUntil("}}"), "") << truncated;
  }
  EXPECT_EQ(client_->Post("/echo", "{}", "application/json")->status, 200);
}

TEST_F(HttpServerTest, OversizeHeadIs431AndOversizeChunkedBodyIs413) {
  RawClient big_head(server_->port());
  big_head.Send("GET /echo HTTP/1.1\r\nX: " + std::string(70000, 'a'));
  EXPECT_THAT(big_head.ReadUntil("}}"), HasSubstr("HTTP/1.1 431"));
  RawClient big_body(server_->port());
  big_body.Send("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n");
  EXPECT_THAT(big_body.ReadUntil("}}"), HasSubstr("HTTP/1.1 413"));
}

TEST_F(HttpServerTest, ConnectionCloseIsHonoured) {
  RawClient raw(server_->port());
  raw.Send("POST /echo HTTP/1.1\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}");
  EXPECT_THAT(raw.ReadUntil("}}"), HasSubstr("Connection: close"));
  EXPECT_TRUE(raw.Closed());
}

TEST_F(HttpServerTest, PathGroupsQueryParamsAndChunkedResponses) {
  auto item = client_->Get("/items/a%20b?q=x%2By");
  ASSERT_TRUE(item);
  EXPECT_EQ(Json(item)["id"], "a b");
  EXPECT_EQ(Json(item)["q"], "x+y");
  auto stream = client_->Get("/stream");
  ASSERT_TRUE(stream);
  EXPECT_EQ(stream->status, 200);
  EXPECT_EQ(stream->body, "data: 0\n\ndata: 1\n\ndata: 2\n\n");
  EXPECT_EQ(stream->get_header_value("Content-Type"), "text/event-stream");
}

TEST_F(HttpServerTest, StopClosesIdleKeepAliveConnections) {
  RawClient raw(server_->port());
  raw.Send("POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
  EXPECT_THAT(raw.ReadUntil("}}"), HasSubstr("200 OK"));
  const auto start = std::chrono::steady_clock::now();
  server_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_TRUE(raw.Closed());
}

TEST(HttpServerStartTest, PortInUseIsAnError) {
  prometheus::Registry registry;
  HttpServerOptions options;
  options.port = 0;
  HttpServer first(options, registry);
  ASSERT_TRUE(first.Start().ok());
  options.port = first.port();
  prometheus::Registry registry2;
  HttpServer second(options, registry2);
  EXPECT_FALSE(second.Start().ok());
}

}  // namespace
}  // namespace aibrix::server
