#include "aibrix/discovery/kube_config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "absl/strings/escaping.h"
#include "aibrix/common/strings.h"
#include "aibrix/discovery/kube_client.h"
#include "httplib.h"
#include "tests/util/temp_dir.h"

namespace aibrix::discovery {
namespace {

using aibrix::testing::TempDir;

std::string TestData(const std::string& name) {
  return std::string(AIBRIX_TESTDATA_DIR) + "/" + name;
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string Base64(const std::string& text) { return absl::Base64Escape(common::AsAbsl(text)); }

TEST(KubeConfigTest, InClusterReadsTheServiceAccount) {
  TempDir dir("incluster");
  dir.Write("token", "tok\n");
  dir.Write("ca.crt", "ca");
  auto config = InClusterConfig("10.96.0.1", "443", dir.path());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->ServerUrl(), "https://10.96.0.1:443");
  EXPECT_EQ(config->token_file, dir.path() + "/token");
  EXPECT_EQ(config->ca_file, dir.path() + "/ca.crt");
  EXPECT_EQ(config->origin, "in-cluster");

  auto v6 = InClusterConfig("fd00::1", "6443", dir.path());
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->host, "fd00::1");
  EXPECT_EQ(v6->ServerUrl(), "https://[fd00::1]:6443");

  EXPECT_EQ(InClusterConfig("", "443", dir.path()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  TempDir empty("incluster-empty");
  EXPECT_EQ(InClusterConfig("10.96.0.1", "443", empty.path()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(InClusterConfig("10.96.0.1", "port", dir.path()).ok());
}

constexpr char kKubeconfig[] = R"(apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: other
  cluster: {server: "https://other:1"}
- name: kind
  cluster:
    server: https://127.0.0.1:6443/prefix/
    certificate-authority: certs/ca.pem
    insecure-skip-tls-verify: false
contexts:
- name: dev
  context: {cluster: kind, user: admin, namespace: ml}
users:
- name: admin
  user:
    token: static-token
    tokenFile: tokens/t
    client-certificate-data: {CERT}
    client-key: /abs/key.pem
)";

std::string WithCert(std::string text, const std::string& cert) {
  text.replace(text.find("{CERT}"), 6, cert);
  return text;
}

TEST(KubeConfigTest, CurrentContextClusterAndUser) {
  auto config = ParseKubeConfig(WithCert(kKubeconfig, Base64("PEM")), "/home/me/.kube", "kc");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->https);
  EXPECT_EQ(config->host, "127.0.0.1");
  EXPECT_EQ(config->port, 6443);
  EXPECT_EQ(config->path_prefix, "/prefix");
  EXPECT_EQ(config->ca_file, "/home/me/.kube/certs/ca.pem");
  EXPECT_FALSE(config->insecure_skip_tls_verify);
  EXPECT_EQ(config->token, "static-token");
  EXPECT_EQ(config->token_file, "/home/me/.kube/tokens/t");
  EXPECT_EQ(config->client_cert_pem, "PEM");
  EXPECT_EQ(config->client_key_file, "/abs/key.pem");
  EXPECT_EQ(config->origin, "kc");
}

TEST(KubeConfigTest, PlainHttpServerAndNoUser) {
  auto config = ParseKubeConfig(R"(current-context: c
contexts: [{name: c, context: {cluster: k}}]
clusters: [{name: k, cluster: {server: "http://localhost:8001", insecure-skip-tls-verify: true}}]
)",
                                "/", "kc");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->https);
  EXPECT_EQ(config->port, 8001);
  EXPECT_TRUE(config->insecure_skip_tls_verify);
  EXPECT_TRUE(config->token.empty());
  auto tls = MakeTlsContext(*config);
  ASSERT_TRUE(tls.ok());
  EXPECT_EQ(*tls, nullptr);  // http: no TLS
}

TEST(KubeConfigTest, ErrorsNameTheFileAndField) {
  const auto error = [](const std::string& yaml) {
    return std::string(common::AsStd(ParseKubeConfig(yaml, "/", "kc.yaml").status().message()));
  };
  EXPECT_NE(error("a: [").find("kc.yaml:"), std::string::npos);
  EXPECT_NE(error("clusters: []").find("current-context: not set"), std::string::npos);
  EXPECT_NE(error("current-context: x\ncontexts: []").find("no entry named 'x'"),
            std::string::npos);
  EXPECT_NE(error("current-context: x").find("no entry named 'x'"), std::string::npos);
  EXPECT_NE(error("current-context: x\ncontexts: 3").find("contexts: not a list"),
            std::string::npos);
  const std::string base = R"(current-context: c
contexts: [{name: c, context: {cluster: k, user: u}}]
)";
  EXPECT_NE(error(base + "clusters: [{name: k, cluster: {server: 'ftp://h'}}]\nusers: []")
                .find("cluster.server"),
            std::string::npos);
  const std::string cluster = "clusters: [{name: k, cluster: {server: 'https://h'}}]\n";
  EXPECT_NE(error(base + cluster + "users: []").find("no entry named 'u'"), std::string::npos);
  EXPECT_NE(error(base + cluster + "users: [{name: u, user: {client-key-data: '!!'}}]")
                .find("user.client-key-data: not valid base64"),
            std::string::npos);
  EXPECT_NE(
      error(base + cluster + "users: [{name: u, user: {client-key: k.pem}}]").find("needs its key"),
      std::string::npos);
  EXPECT_NE(error(base + cluster + "users: [{name: u, user: {exec: {command: aws}}}]")
                .find("user.exec: not supported"),
            std::string::npos);
  EXPECT_NE(error(base + "clusters: [{name: k, cluster: {server: 'https://h', "
                         "insecure-skip-tls-verify: maybe}}]\nusers: [{name: u, user: {}}]")
                .find("not a boolean"),
            std::string::npos);
  // An exec user that also has a token uses the token.
  EXPECT_TRUE(
      ParseKubeConfig(base + cluster + "users: [{name: u, user: {token: t, exec: {command: aws}}}]",
                      "/", "kc")
          .ok());
}

TEST(KubeConfigTest, LoadResolvesPathsNextToTheFile) {
  TempDir dir("kubeconfig");
  const std::string path = dir.Write("config", WithCert(kKubeconfig, Base64("PEM")));
  auto config = LoadKubeConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->ca_file, dir.path() + "/certs/ca.pem");
  EXPECT_FALSE(LoadKubeConfig(dir.File("missing")).ok());
}

TEST(KubeConfigTest, TlsMaterialThatCannotBeLoadedIsAnError) {
  KubeConfig config;
  config.ca_file = "/nonexistent/ca.pem";
  EXPECT_NE(std::string(MakeTlsContext(config).status().message()).find("/nonexistent/ca.pem"),
            std::string::npos);
  config.ca_file.clear();
  config.ca_pem = "not a certificate";
  EXPECT_FALSE(MakeTlsContext(config).ok());
  config.ca_pem = ReadText(TestData("tls/cert.pem"));
  EXPECT_TRUE(MakeTlsContext(config).ok());
  config.client_key_pem = "garbage";
  EXPECT_FALSE(MakeTlsContext(config).ok());
}

TEST(TokenSourceTest, RereadWhenTheFileChangesOrAMinutePassed) {
  TempDir dir("token");
  const std::string file = dir.Write("token", "first\n");
  common::FakeClock clock;
  TokenSource source("", file, clock);
  EXPECT_EQ(source.Get(), "first");
  EXPECT_EQ(source.Get(), "first");
  EXPECT_EQ(source.reads(), 1);
  // A rotated token (kubelet swaps the file): a new inode or size or time.
  const std::string next = dir.Write("token.new", "second-token");
  ASSERT_EQ(::rename(next.c_str(), file.c_str()), 0);
  EXPECT_EQ(source.Get(), "second-token");
  EXPECT_EQ(source.reads(), 2);
  // Unchanged file: read again once the minute has passed.
  clock.Advance(std::chrono::seconds(59));
  source.Get();
  EXPECT_EQ(source.reads(), 2);
  clock.Advance(std::chrono::seconds(2));
  source.Get();
  EXPECT_EQ(source.reads(), 3);
  // The file going away keeps the last token.
  ASSERT_EQ(::unlink(file.c_str()), 0);
  EXPECT_EQ(source.Get(), "second-token");
  // A fixed token without a file.
  TokenSource fixed("abc", "", clock);
  EXPECT_EQ(fixed.Get(), "abc");
}

// An https API server stand-in requiring a client certificate signed by the test CA.
class TlsApiServer {
 public:
  TlsApiServer()
      : server_(TestData("tls/cert.pem").c_str(), TestData("tls/key.pem").c_str(),
                TestData("tls/cert.pem").c_str()) {
    server_.Get("/api/v1/pods", [this](const httplib::Request& req, httplib::Response& res) {
      {
        std::lock_guard lock(mu_);
        authorization_ = req.get_header_value("Authorization");
        query_ = req.get_param_value("labelSelector");
      }
      res.set_content(R"({"kind":"PodList","metadata":{"resourceVersion":"7"},"items":[]})",
                      "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~TlsApiServer() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  std::string authorization() {
    std::lock_guard lock(mu_);
    return authorization_;
  }
  std::string query() {
    std::lock_guard lock(mu_);
    return query_;
  }

 private:
  httplib::SSLServer server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::string authorization_;
  std::string query_;
};

struct Response {
  http::ClientError error = http::ClientError::kNone;
  int status = 0;
  std::string body;
};

class Collector : public http::ResponseObserver {
 public:
  void OnHead(int status, const http::Headers&) override { response_.status = status; }
  void OnBody(std::string_view data) override {
    response_.body.append(data);
    call->ReadMore();
  }
  void OnEnd(http::ClientError error, std::string_view) override {
    response_.error = error;
    done_.set_value(response_);
  }
  std::shared_ptr<http::ClientCall> call;
  std::future<Response> future() { return done_.get_future(); }

 private:
  Response response_;
  std::promise<Response> done_;
};

Response Get(KubeClient& client, const std::string& target) {
  boost::asio::io_context io;
  auto collector = std::make_shared<Collector>();
  auto future = collector->future();
  boost::asio::post(io,
                    [&] { collector->call = client.Get(io, target, CallKind::kList, collector); });
  io.run();
  return future.get();
}

KubeConfig TlsConfig(int port) {
  KubeConfig config;
  config.origin = "test";
  config.host = "127.0.0.1";
  config.port = static_cast<uint16_t>(port);
  config.ca_file = TestData("tls/cert.pem");
  config.client_cert_file = TestData("tls/cert.pem");
  config.client_key_pem = ReadText(TestData("tls/key.pem"));
  config.token = "secret";
  return config;
}

TEST(KubeClientTest, TlsWithClientCertificateAndBearerToken) {
  TlsApiServer server;
  common::FakeClock clock;
  auto client = KubeClient::Create(TlsConfig(server.port()), {}, clock);
  ASSERT_TRUE(client.ok()) << client.status();
  Response response = Get(**client, "/api/v1/pods?labelSelector=" + QueryEscape("a=b,c!=d"));
  EXPECT_EQ(response.error, http::ClientError::kNone);
  EXPECT_EQ(response.status, 200);
  EXPECT_NE(response.body.find("PodList"), std::string::npos);
  EXPECT_EQ(server.authorization(), "Bearer secret");
  EXPECT_EQ(server.query(), "a=b,c!=d");
}

TEST(KubeClientTest, UntrustedServerOrMissingClientCertificateFail) {
  TlsApiServer server;
  common::FakeClock clock;
  KubeConfig untrusted = TlsConfig(server.port());
  untrusted.ca_file.clear();
  untrusted.ca_pem = "";  // the system's trust store does not know the test certificate
  auto client = KubeClient::Create(untrusted, {}, clock);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ(Get(**client, "/api/v1/pods").error, http::ClientError::kConnect);

  // insecure-skip-tls-verify accepts it.
  untrusted.insecure_skip_tls_verify = true;
  client = KubeClient::Create(untrusted, {}, clock);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ(Get(**client, "/api/v1/pods").status, 200);

  // No client certificate: the server refuses the handshake.
  KubeConfig anonymous = TlsConfig(server.port());
  anonymous.client_cert_file.clear();
  anonymous.client_key_pem.clear();
  client = KubeClient::Create(anonymous, {}, clock);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_NE(Get(**client, "/api/v1/pods").status, 200);
}

TEST(KubeClientTest, CollectionPathsAndEscaping) {
  EXPECT_EQ(CollectionPath(Resource::kPods, ""), "/api/v1/pods");
  EXPECT_EQ(CollectionPath(Resource::kPods, "ml"), "/api/v1/namespaces/ml/pods");
  EXPECT_EQ(CollectionPath(Resource::kModelAdapters, ""),
            "/apis/model.aibrix.ai/v1alpha1/modeladapters");
  EXPECT_EQ(CollectionPath(Resource::kModelAdapters, "ml"),
            "/apis/model.aibrix.ai/v1alpha1/namespaces/ml/modeladapters");
  EXPECT_EQ(QueryEscape("a=b, c/d+e~_.-"), "a%3Db%2C%20c%2Fd%2Be~_.-");
}

}  // namespace
}  // namespace aibrix::discovery
