// Starts the real aibrix-cache binary (on port 0: it prints the port it got) and checks its
// HTTP surface.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "aibrix/common/huge_pages.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/util/subprocess.h"
#include "tests/util/temp_dir.h"

namespace aibrix {
namespace {

using testing::BinaryPath;
using ::testing::HasSubstr;
using testing::Subprocess;

class ServiceTest : public ::testing::Test {
 protected:
  // Writes a config file in this test's own directory; returns its path.
  std::string WriteConfig(const std::string& name, const std::string& text) {
    return temp_dir_.Write(name, text);
  }

  void StartService(const std::string& config, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {
        BinaryPath("aibrix-cache"), "--http-addr", "127.0.0.1:0", "--extproc-addr", "",
        "--static-config",          config};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto process = Subprocess::Start(argv);
    ASSERT_TRUE(process.ok()) << process.status();
    process_ = std::move(*process);
    auto port = process_->WaitForListeningPort(std::chrono::seconds(20));
    ASSERT_TRUE(port.ok()) << port.status();
    port_ = *port;
    client_ = std::make_unique<httplib::Client>("127.0.0.1", port_);
    ASSERT_TRUE(process_->WaitForLine("ready:", std::chrono::seconds(20)).ok());
  }

  testing::TempDir temp_dir_{"service"};
  std::unique_ptr<Subprocess> process_;
  std::unique_ptr<httplib::Client> client_;
  int port_ = 0;
};

TEST_F(ServiceTest, ServesHealthPodsModelsAndMetrics) {
  StartService(WriteConfig("svc.yaml", R"(
models:
  - name: llama
    engine: vllm
    endpoints: ["127.0.0.1:18001", {address: "127.0.0.1:18002", kv_events: true}]
  - name: qwen
    endpoints: ["127.0.0.2:18003"]
)"));
  auto health = client_->Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto ready = client_->Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);

  auto pods = client_->Get("/cache/pods");
  ASSERT_TRUE(pods);
  ASSERT_EQ(pods->status, 200);
  auto pods_json = nlohmann::json::parse(pods->body)["pods"];
  ASSERT_EQ(pods_json.size(), 3u);
  EXPECT_EQ(pods_json[0]["key"], "standalone/llama-127-0-0-1-0");
  EXPECT_EQ(pods_json[0]["ready"], true);
  EXPECT_EQ(pods_json[0]["port"], 18001);
  EXPECT_EQ(pods_json[1]["kv_events_enabled"], true);
  EXPECT_EQ(pods_json[2]["model"], "qwen");

  auto one = client_->Get("/cache/pods/standalone/qwen-127-0-0-2-2");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->status, 200);
  EXPECT_EQ(nlohmann::json::parse(one->body)["ip"], "127.0.0.2");
  auto missing = client_->Get("/cache/pods/standalone/nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_THAT(nlohmann::json::parse(missing->body)["error"]["message"].get<std::string>(),
              HasSubstr("standalone/nope"));

  auto models = client_->Get("/cache/models");
  ASSERT_TRUE(models);
  auto models_json = nlohmann::json::parse(models->body)["models"];
  ASSERT_EQ(models_json.size(), 2u);
  EXPECT_EQ(models_json[0]["name"], "llama");
  EXPECT_EQ(models_json[0]["ready_pods"].size(), 2u);

  auto metrics = client_->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_THAT(metrics->body, HasSubstr("aibrix_cache_pods{state=\"ready\"} 3"));
  EXPECT_THAT(metrics->body, HasSubstr("aibrix_cache_models 2"));
  EXPECT_THAT(metrics->body,
              HasSubstr("aibrix_cache_http_requests_total{code=\"200\",route=\"/readyz\"} 1"));

  auto unknown = client_->Get("/no/such/path");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  EXPECT_EQ(nlohmann::json::parse(unknown->body)["error"]["code"], 404);

  auto exit_code = process_->Stop(SIGTERM, std::chrono::seconds(10));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0);
  EXPECT_THAT(process_->Output(), HasSubstr("shutting down"));
}

TEST_F(ServiceTest, BadConfigStopsStartupWithFieldAndLine) {
  const std::string config =
      WriteConfig("bad.yaml", "models:\n  - name: m\n    endpoints: [\"h:0\"]\n");
  auto process = Subprocess::Start({BinaryPath("aibrix-cache"), "--http-addr", "127.0.0.1:0",
                                    "--extproc-addr", "", "--static-config", config});
  ASSERT_TRUE(process.ok());
  auto exit_code = (*process)->Wait(std::chrono::seconds(20));
  ASSERT_TRUE(exit_code.ok());
  EXPECT_EQ(*exit_code, 1);
  EXPECT_THAT((*process)->Output(), HasSubstr("bad.yaml:3: field 'models[0].endpoints[0]'"));
}

// What /proc says of a running process: its name and one environment variable.
std::string ProcName(pid_t pid) {
  std::string name;
  std::getline(std::ifstream("/proc/" + std::to_string(pid) + "/comm"), name);
  return name;
}
std::string ProcEnv(pid_t pid, const std::string& var) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ");
  for (std::string entry; std::getline(in, entry, '\0');) {
    if (entry.rfind(var + "=", 0) == 0) return entry.substr(var.size() + 1);
  }
  return "";
}
TEST_F(ServiceTest, UsesHugePagesForMallocUnlessOptedOut) {
  const char* inherited = std::getenv("GLIBC_TUNABLES");
  const std::string before = inherited != nullptr ? inherited : "";
  if (before.find("glibc.malloc.hugetlb") != std::string::npos) {
    GTEST_SKIP() << "GLIBC_TUNABLES already chooses: " << before;
  }
  const std::string config =
      WriteConfig("thp.yaml", "models:\n  - name: m\n    endpoints: [\"127.0.0.1:1\"]\n");
  StartService(config);
  // Re-executed in place: same pid (the test started it), same name.
  EXPECT_EQ(ProcName(process_->pid()), "aibrix-cache");
  if (common::TransparentHugePageMode() == "madvise") {
    EXPECT_THAT(ProcEnv(process_->pid(), "GLIBC_TUNABLES"), HasSubstr("glibc.malloc.hugetlb=1"));
  } else {
    EXPECT_EQ(ProcEnv(process_->pid(), "GLIBC_TUNABLES"), before);
  }

  auto opted_out = Subprocess::Start({BinaryPath("aibrix-cache"), "--http-addr", "127.0.0.1:0",
                                      "--extproc-addr", "", "--static-config", config},
                                     {"AIBRIX_HUGEPAGES=0"});
  ASSERT_TRUE(opted_out.ok()) << opted_out.status();
  ASSERT_TRUE((*opted_out)->WaitForLine("ready:", std::chrono::seconds(20)).ok());
  EXPECT_EQ(ProcEnv((*opted_out)->pid(), "GLIBC_TUNABLES"), before);
}

TEST_F(ServiceTest, SigintStopsGracefully) {
  StartService(WriteConfig("int.yaml", "models:\n  - name: m\n    endpoints: [\"127.0.0.1:1\"]\n"));
  auto exit_code = process_->Stop(SIGINT, std::chrono::seconds(10));
  ASSERT_TRUE(exit_code.ok());
  EXPECT_EQ(*exit_code, 0);
}

TEST_F(ServiceTest, SigtermTurnsReadyzTo503ThenExitsZero) {
  StartService(WriteConfig("term.yaml", "models:\n  - name: m\n    endpoints: [\"127.0.0.1:1\"]\n"),
               {"--shutdown-delay-ms", "1500", "--shutdown-grace", "1000"});
  ASSERT_EQ(client_->Get("/readyz")->status, 200);
  ASSERT_EQ(kill(process_->pid(), SIGTERM), 0);
  // Draining: not ready at once, still serving until accepting stops.
  int readyz = 200;
  for (int i = 0; i < 200 && readyz == 200; ++i) {
    auto res = client_->Get("/readyz");
    ASSERT_TRUE(res);
    readyz = res->status;
    if (readyz == 200) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(readyz, 503);
  auto exit_code = process_->Wait(std::chrono::seconds(20));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0);
}

TEST_F(ServiceTest, AHugePathIs414AndTheServiceStaysUp) {
  StartService(
      WriteConfig("path.yaml", "models:\n  - name: m\n    endpoints: [\"127.0.0.1:1\"]\n"));
  auto res = client_->Get("/cache/pods/default/" + std::string(40000, 'a'));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 414);
  auto pod = client_->Get("/cache/pods/default/" + std::string(4000, 'a'));
  ASSERT_TRUE(pod);
  EXPECT_EQ(pod->status, 404);
  EXPECT_EQ(client_->Get("/healthz")->status, 200);
}

// Resident memory of `pid`, in bytes.
int64_t RssBytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return -1;
}

TEST_F(ServiceTest, RssReturnsToIdleAfterABurstOfLargeBodies) {
#ifdef AIBRIX_SANITIZED
  GTEST_SKIP() << "a sanitizer's allocator keeps freed memory (quarantine): RSS says nothing";
#endif
  StartService(WriteConfig("rss.yaml", "models:\n  - name: m\n    endpoints: [\"127.0.0.1:1\"]\n"));
  const std::string body(8 << 20, ' ');  // 8 MiB of whitespace: read whole, then a 400
  ASSERT_EQ(client_->Post("/cache/route", body, "application/json")->status, 400);
  const int64_t idle = RssBytes(process_->pid());
  ASSERT_GT(idle, 0);
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&] {
      httplib::Client client("127.0.0.1", port_);
      for (int i = 0; i < 32; ++i) {
        auto res = client.Post("/cache/route", body, "application/json");
        ASSERT_TRUE(res);
        EXPECT_EQ(res->status, 400);
      }
    });
  }
  for (auto& c : clients) c.join();
  // 128 bodies of 8 MiB went through; what the server keeps afterwards is bounded.
  int64_t after = RssBytes(process_->pid());
  for (int i = 0; i < 100 && after > idle + (24 << 20); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    after = RssBytes(process_->pid());
  }
  EXPECT_LE(after, idle + (24 << 20)) << "idle " << idle << " after " << after;
}

// A raw keep-alive connection to 127.0.0.1:`port` (blocking, 10 s receive timeout).
int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  const timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  // Closed with a reset: thousands of TIME_WAIT ports would make later tests that bind
  // chosen ports (data-parallel ranks on port + 1) fail.
  const linger reset{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
  return fd;
}

// Sends GET /healthz on `fd` and reads the answer; true for a 200.
bool Healthz(int fd) {
  const std::string request = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    return false;
  }
  std::string answer;
  char buf[1024];
  while (answer.find("\"ok\"}") == std::string::npos) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return false;
    answer.append(buf, static_cast<size_t>(n));
  }
  return answer.rfind("HTTP/1.1 200", 0) == 0;
}

TEST_F(ServiceTest, HealthAnswersWhileThousandsOfConnectionsAreIdleOrSlow) {
  // Raise the soft descriptor limit to the hard one.
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  limit.rlim_cur = limit.rlim_max;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &limit), 0);
  // Each process holds one descriptor per connection (the service inherits the limit).
  const int slow_count = 2000;
  const int idle_count =
      static_cast<int>(std::min<rlim_t>(10000, limit.rlim_cur - slow_count - 1000));
  if (idle_count < 2000) {
    GTEST_SKIP() << "the hard descriptor limit (" << limit.rlim_max
                 << ") is too low for thousands of connections; raise it (ulimit -Hn)";
  }
  StartService(
      WriteConfig("load.yaml", "models:\n  - name: m\n    endpoints: [\"127.0.0.1:1\"]\n"));

  std::vector<int> fds;
  for (int i = 0; i < idle_count; ++i) {  // keep-alive connections, idle after one request
    const int fd = Connect(port_);
    ASSERT_GE(fd, 0) << "connection " << i;
    ASSERT_TRUE(Healthz(fd)) << "connection " << i;
    fds.push_back(fd);
  }
  for (int i = 0; i < slow_count; ++i) {  // slowloris: a head that never ends
    const int fd = Connect(port_);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(send(fd, "GET /healthz HTTP/1.1\r\nX-Slow: ", 31, MSG_NOSIGNAL), 31);
    fds.push_back(fd);
  }
  const int probe = Connect(port_);
  ASSERT_GE(probe, 0);
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(Healthz(probe)) << "probe " << i;
    if (i % 10 == 0) {  // the slow clients trickle on
      for (int j = idle_count; j < static_cast<int>(fds.size()); ++j) {
        (void)send(fds[j], "a", 1, MSG_NOSIGNAL);
      }
    }
  }
  auto metrics = client_->Get("/metrics");
  ASSERT_TRUE(metrics);
  const std::string gauge = "\naibrix_cache_http_connections ";
  const size_t at = metrics->body.find(gauge);
  ASSERT_NE(at, std::string::npos);
  EXPECT_GE(std::stod(metrics->body.substr(at + gauge.size())), idle_count + slow_count);
  // Every idle connection still serves.
  for (int i = 0; i < idle_count; i += 997) EXPECT_TRUE(Healthz(fds[i])) << "connection " << i;
  for (int fd : fds) close(fd);
  close(probe);
}

}  // namespace
}  // namespace aibrix
