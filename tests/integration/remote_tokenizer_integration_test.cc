// The service with --tokenizer remote against an engine that never answers /tokenize: the
// tokenizations in flight wait on timers and sockets, not threads, so the service keeps
// answering everything else at once (/healthz, routing by token ids) while they run, and
// each of them ends with the local fallback once the engine's attempts have timed out.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "fmt/format.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/util/in_process_service.h"

namespace aibrix {
namespace {

using namespace std::chrono_literals;

// A listening socket that never accepts: connects complete in the kernel's backlog, requests
// are written and never answered.
class SilentEngine {
 public:
  SilentEngine() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(fd_, 128) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "cannot listen";
      return;
    }
    port_ = ntohs(addr.sin_port);
  }
  ~SilentEngine() {
    if (fd_ >= 0) ::close(fd_);
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST(RemoteTokenizerIntegrationTest, HungEngineTokenizationsDoNotBlockTheService) {
  SilentEngine engine;
  testing::InProcessService service;
  ASSERT_NO_FATAL_FAILURE(service.Start("llama", {engine.port()}, [](server::ServiceConfig& c) {
    c.tokenizer = "remote";
    c.tokenizer_timeout_ms = 1000;  // 4 attempts (3 retries): ~4.7 s per tokenization
    c.routing_algorithm = "prefix-cache";
  }));
  const int port = service.service().http_port();

  // More remote tokenizations in flight than the service has threads of any kind.
  constexpr int kStuck = 24;
  std::atomic<int> answered{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < kStuck; ++i) {
    clients.emplace_back([&, i] {
      httplib::Client client("127.0.0.1", port);
      client.set_read_timeout(60, 0);
      const std::string path = i % 2 == 0 ? "/cache/route" : "/cache/match";
      auto res =
          client.Post(path, fmt::format(R"({{"model":"llama","prompt":"prompt number {}"}})", i),
                      "application/json");
      if (res && res->status == 200) answered.fetch_add(1);
    });
  }
  std::this_thread::sleep_for(300ms);  // let them all reach the tokenizer
  EXPECT_EQ(answered.load(), 0) << "the engine never answers: nothing can be done yet";

  httplib::Client probe("127.0.0.1", port);
  for (int i = 0; i < 5; ++i) {
    const auto start = std::chrono::steady_clock::now();
    auto health = probe.Get("/healthz");
    ASSERT_TRUE(health);
    EXPECT_EQ(health->status, 200);
    auto routed =
        probe.Post("/cache/route", R"({"model":"llama","token_ids":[1,2,3]})", "application/json");
    ASSERT_TRUE(routed);
    EXPECT_EQ(routed->status, 200) << routed->body;
    EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms) << "probe " << i;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(answered.load(), 0);

  // Every stuck request ends with the local tokenizer once the engine's attempts time out.
  for (auto& t : clients) t.join();
  EXPECT_EQ(answered.load(), kStuck);
}

}  // namespace
}  // namespace aibrix
