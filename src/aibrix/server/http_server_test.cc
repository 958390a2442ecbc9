#include "aibrix/server/http_server.h"

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
