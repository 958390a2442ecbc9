// Routing API and proxy under load, on loopback.
//  * /cache/route: 64 pods, 8k-token prompts sent as token ids, prefix-cache algorithm,
//    closed-loop clients with keep-alive for a fixed time: figures route_decisions_per_s and
//    route_p99_ms (the service runs in this process; clients share the same 2 cores).
//  * Proxy overhead: one engine-sim (at a huge time scale, so the engine itself costs ~0),
//    p50 latency of a small non-streaming completion called directly and through the proxy:
//    figure proxy_overhead_p50_us = p50(proxy) - p50(direct).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>

#include "aibrix/common/logging.h"
#include "aibrix/gateway/request_body.h"
#include "aibrix/server/service.h"
#include "fmt/format.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/util/subprocess.h"
#include "tests/util/temp_dir.h"

namespace {

using Clock = std::chrono::steady_clock;

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  size_t index = static_cast<size_t>(p / 100.0 * static_cast<double>(values.size() - 1));
  return values[index];
}

// Token ids are drawn below a Llama-3-sized vocabulary (real ids have at most 6 digits).
constexpr uint32_t kVocabulary = 128256;

// A minimal keep-alive HTTP/1.1 client for the load side: one send per request, the
// response read with large recv calls, nothing parsed but the status and Content-Length.
// The load generator shares the 2 cores with the service, so it must cost little.
class KeepAliveClient {
 public:
  explicit KeepAliveClient(int port) : port_(port) { Connect(); }
  ~KeepAliveClient() { close(fd_); }
  KeepAliveClient(const KeepAliveClient&) = delete;
  KeepAliveClient& operator=(const KeepAliveClient&) = delete;

  // Sends `request` and reads the whole response; returns its status (0 on failure). The
  // server closes a connection after its keep-alive maximum: then once more on a new one.
  int Call(const std::string& request) {
    if (const int status = Exchange(request); status != 0) return status;
    close(fd_);
    Connect();
    return Exchange(request);
  }

 private:
  void Connect() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port_));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      std::perror("route-bench: connect");
      std::exit(1);
    }
  }

  int Exchange(const std::string& request) {
    for (size_t sent = 0; sent < request.size();) {
      const ssize_t n = send(fd_, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return 0;
      sent += static_cast<size_t>(n);
    }
    buffer_.clear();
    size_t header_end = std::string::npos, total = 0;
    while (header_end == std::string::npos || buffer_.size() < total) {
      char chunk[65536];
      const ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
      if (n <= 0) return 0;
      buffer_.append(chunk, static_cast<size_t>(n));
      if (header_end == std::string::npos) {
        header_end = buffer_.find("\r\n\r\n");
        if (header_end == std::string::npos) continue;
        const size_t at = buffer_.find("Content-Length: ");
        if (at == std::string::npos || at > header_end) return 0;
        total = header_end + 4 + std::strtoul(buffer_.c_str() + at + 16, nullptr, 10);
      }
    }
    return buffer_.size() > 12 ? std::atoi(buffer_.c_str() + 9) : 0;
  }

  const int port_;
  int fd_ = -1;
  std::string buffer_;
};

void RouteBenchmark(int threads, std::chrono::seconds duration) {
  std::string yaml = "models:\n  - name: llama\n    endpoints:\n";
  for (int i = 0; i < 64; ++i)
    yaml += fmt::format("      - \"10.0.{}.{}:8000\"\n", i / 250, i % 250 + 1);
  aibrix::server::ServiceConfig config;
  config.http_addr = "127.0.0.1:0";
  config.extproc_addr = "";
  const aibrix::testing::TempDir dir("route-bench");
  config.static_config = dir.Write("config.yaml", yaml);
  config.routing_algorithm = "prefix-cache";
  aibrix::common::SetLogLevel("warn");
  aibrix::server::Service service(config);
  if (auto st = service.Start(); !st.ok()) {
    std::fprintf(stderr, "route-bench: %s\n", st.ToString().c_str());
    std::exit(1);
  }
  // 32 conversations: 8k tokens each, sharing 6k-token system prefixes four by four.
  std::vector<std::string> requests;  // whole HTTP requests, written with one send each
  std::mt19937 rng(42);
  for (int c = 0; c < 32; ++c) {
    nlohmann::json ids = nlohmann::json::array();
    for (int t = 0; t < 8192; ++t) {
      ids.push_back(t < 6144 ? static_cast<uint32_t>((c / 4) * 100000 + t)
                             : static_cast<uint32_t>(rng() % kVocabulary));
    }
    const std::string body = nlohmann::json{{"model", "llama"}, {"token_ids", ids}}.dump();
    requests.push_back(fmt::format(
        "POST /cache/route HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: {}\r\n\r\n{}",
        body.size(), body));
  }
  std::atomic<bool> stop{false};
  std::vector<std::vector<double>> latencies(threads);
  std::atomic<uint64_t> errors{0};
  std::vector<std::thread> clients;
  const auto start = Clock::now();
  for (int t = 0; t < threads; ++t) {
    clients.emplace_back([&, t] {
      KeepAliveClient client(service.http_port());
      size_t i = static_cast<size_t>(t);
      while (!stop.load(std::memory_order_relaxed)) {
        const auto begin = Clock::now();
        if (client.Call(requests[i++ % requests.size()]) != 200) {
          errors.fetch_add(1);
          continue;
        }
        latencies[t].push_back(
            std::chrono::duration<double, std::milli>(Clock::now() - begin).count());
      }
    });
  }
  std::this_thread::sleep_for(duration);
  stop = true;
  for (auto& client : clients) client.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  service.Stop();
  std::printf("route: %zu decisions in %.1f s with %d client threads, %llu errors, p50 %.3f ms\n",
              all.size(), seconds, threads, static_cast<unsigned long long>(errors.load()),
              Percentile(all, 50));
  std::printf("figure route_decisions_per_s %.0f decisions/s\n",
              static_cast<double>(all.size()) / seconds);
  std::printf("figure route_p99_ms %.3f ms\n", Percentile(all, 99));
}

// p50 latency in µs of `n` small completions on `client`.
double CompletionP50(httplib::Client& client, int n) {
  const std::string body = R"({"model":"llama","prompt":"hello world","max_tokens":1})";
  std::vector<double> latencies;
  for (int i = 0; i < n; ++i) {
    const auto begin = Clock::now();
    auto res = client.Post("/v1/completions", body, "application/json");
    if (!res || res->status != 200) {
      std::fprintf(stderr, "proxy-bench: request failed\n");
      std::exit(1);
    }
    latencies.push_back(std::chrono::duration<double, std::micro>(Clock::now() - begin).count());
  }
  return Percentile(latencies, 50);
}

void ProxyBenchmark(int requests) {
  // engine-sim binds port 0 and prints the port it got.
  auto engine = aibrix::testing::Subprocess::Start(
      {aibrix::testing::BinaryPath("engine-sim"), "--port", "0", "--model", "llama", "--time-scale",
       "1000000", "--log-level", "warn"});
  absl::StatusOr<std::string> port_text =
      engine.ok() ? (*engine)->WaitForLine(R"(engine-sim listening on http://127\.0\.0\.1:(\d+))",
                                           std::chrono::seconds(20))
                  : engine.status();
  if (!port_text.ok()) {
    std::fprintf(stderr, "proxy-bench: engine-sim did not start: %s\n",
                 port_text.status().ToString().c_str());
    std::exit(1);
  }
  const int engine_port = std::stoi(*port_text);
  aibrix::server::ServiceConfig config;
  config.http_addr = "127.0.0.1:0";
  config.extproc_addr = "";
  const aibrix::testing::TempDir dir("proxy-bench");
  config.static_config = dir.Write(
      "config.yaml",
      fmt::format("models:\n  - name: llama\n    endpoints: [\"127.0.0.1:{}\"]\n", engine_port));
  config.routing_algorithm = "least-request";
  aibrix::server::Service service(config);
  if (auto st = service.Start(); !st.ok()) std::exit(1);
  httplib::Client direct("127.0.0.1", engine_port);
  httplib::Client proxied("127.0.0.1", service.http_port());
  for (auto* client : {&direct, &proxied}) {
    client->set_keep_alive(true);
    client->set_tcp_nodelay(true);
  }
  CompletionP50(direct, 200);  // warm up both paths
  CompletionP50(proxied, 200);
  double direct_p50 = 0;
  double proxied_p50 = 0;
  for (int round = 0; round < 3; ++round) {  // interleave to share the machine's noise
    direct_p50 += CompletionP50(direct, requests) / 3;
    proxied_p50 += CompletionP50(proxied, requests) / 3;
  }
  service.Stop();
  std::printf("proxy: p50 direct %.1f us, through the proxy %.1f us\n", direct_p50, proxied_p50);
  std::printf("figure proxy_overhead_p50_us %.1f us\n", proxied_p50 - direct_p50);
}

}  // namespace

// Parsing one 8k-token routing body (the largest single cost of a decision), in the two
// layouts clients send: compact "1,2" and Python's default "1, 2"; then a 128k-token one
// (long context, issue 17), compact.
void ParseBenchmark() {
  std::mt19937 rng(7);
  for (const auto& [tokens, separator] :
       {std::pair<int, const char*>{8192, ","}, {8192, ", "}, {131072, ","}}) {
    std::string body = R"({"model":"llama","token_ids":[)";
    for (int t = 0; t < tokens; ++t) {
      if (t > 0) body += separator;
      body += std::to_string(rng() % kVocabulary);
    }
    body += "]}";
    const int rounds = 3000 * 8192 / tokens;
    size_t ids = 0;
    const auto start = Clock::now();
    for (int i = 0; i < rounds; ++i)
      ids += aibrix::gateway::ParseRequestBody(body)->token_ids->size();
    const double us =
        std::chrono::duration<double, std::micro>(Clock::now() - start).count() / rounds;
    std::printf("parse: %zu ids per body (%zu bytes), separator \"%s\": %.1f us (%.2f GB/s)\n",
                ids / rounds, body.size(), separator, us, body.size() / us / 1e3);
    if (tokens == 8192 && std::string_view(separator) == ",") {
      std::printf("figure route_body_parse_us %.1f us\n", us);
    } else if (tokens == 131072) {
      std::printf("figure route_body_parse_128k_us %.1f us\n", us);
    }
  }
}

int main(int argc, char** argv) {
  aibrix::server::ApplyProcessSettings(argv);  // as aibrix-cache does
  int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  ParseBenchmark();
  RouteBenchmark(threads, std::chrono::seconds(5));
  ProxyBenchmark(1000);
  return 0;
}
