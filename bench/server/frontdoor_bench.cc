// The HTTP front door of the real aibrix-cache binary, run as a separate process (so its RSS
// and CPU time are its own), on loopback, one phase after the other:
//  * idle: --idle N (default 10,000) keep-alive connections each send one GET /healthz, read
//    the answer and then stay silent. Figures: idle_connections_held (the server's own gauge
//    aibrix_cache_http_connections, read from /metrics, minus the probe's connection),
//    healthz_p99_ms_under_idle (--probes sequential GET /healthz on a fresh keep-alive
//    connection meanwhile, one every --probe-gap-us at most, so ~2 s) and
//    service_rss_mb_10k_idle (VmRSS of the service, MiB).
//  * slowloris: --slowloris N (default 2,000) connections trickle a request head, one byte
//    per connection every --slow-byte-ms (500), never finishing it; the same /healthz probe.
//    Figures: slowloris_connections (connections still trickling, neither answered nor
//    closed by the server, before and after the probe) and healthz_p99_ms_under_slowloris.
//  * sse: --sse N (default 1,000) streaming POST /v1/completions ("stream": true) through the
//    proxy to an SSE upstream in this process (tests/util/sse_upstream.h). It sends each
//    stream's first event at once and the others only after all N requests reached it (so the
//    N streams are open together), then one event per stream every --sse-interval-ms,
//    --sse-events events and `data: [DONE]`. Figures: sse_streams_concurrent (streams whose first
//    byte came before any stream ended and that ended with a well-framed `data: [DONE]` after every
//    event) and sse_relay_cpu_us_per_chunk (the service's utime+stime over the phase, connection
//    set-up included, divided by the SSE events the clients received).
// The soft RLIMIT_NOFILE is raised to the hard limit first (the service inherits it); the run
// stops with an error when that is fewer descriptors than the phases need.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench/common/figures.h"
#include "fmt/format.h"
#include "tests/util/sse_upstream.h"
#include "tests/util/subprocess.h"
#include "tests/util/temp_dir.h"

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

struct Options {
  int idle = 10000;
  int slowloris = 2000;
  int sse = 1000;
  int probes = 1000;
  int probe_gap_us = 2000;
  int slow_byte_ms = 500;
  int sse_events = 16;
  int sse_interval_ms = 250;
};

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "frontdoor-bench: %s\n", message.c_str());
  std::exit(1);
}

std::string Errno() { return std::strerror(errno); }

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t index = static_cast<size_t>(p / 100.0 * static_cast<double>(values.size() - 1));
  return values[index];
}

Options ParseOptions(int argc, char** argv) {
  Options options;
  const std::vector<std::pair<std::string, int*>> flags = {
      {"--idle", &options.idle},
      {"--slowloris", &options.slowloris},
      {"--sse", &options.sse},
      {"--probes", &options.probes},
      {"--probe-gap-us", &options.probe_gap_us},
      {"--slow-byte-ms", &options.slow_byte_ms},
      {"--sse-events", &options.sse_events},
      {"--sse-interval-ms", &options.sse_interval_ms}};
  for (int i = 1; i < argc; i += 2) {  // flag, value
    const std::string arg = argv[i];
    auto flag =
        std::find_if(flags.begin(), flags.end(), [&](const auto& f) { return f.first == arg; });
    char* end = nullptr;
    const long value = i + 1 < argc ? std::strtol(argv[i + 1], &end, 10) : 0;
    if (flag == flags.end() || i + 1 >= argc || *end != '\0' || value < 1 || value > 1000000) {
      std::string usage = "usage: frontdoor-bench";
      for (const auto& f : flags) usage += fmt::format(" [{} N]", f.first);
      Die(fmt::format("bad argument '{}'\n{}", arg, usage));
    }
    *flag->second = static_cast<int>(value);
  }
  return options;
}

// Raises the soft descriptor limit to the hard one; children started later inherit it.
void RaiseFdLimit(rlim_t needed, const Options& options) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) Die("getrlimit(RLIMIT_NOFILE): " + Errno());
  const rlim_t soft = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) Die("setrlimit(RLIMIT_NOFILE): " + Errno());
  std::printf("fd limit: soft %llu -> %llu (hard), %llu needed per process\n",
              static_cast<unsigned long long>(soft),
              static_cast<unsigned long long>(limit.rlim_cur),
              static_cast<unsigned long long>(needed));
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < needed) {
    Die(fmt::format(
        "RLIMIT_NOFILE hard limit is {} but this run needs {} descriptors in this process and "
        "in the service (--idle {}, --slowloris {}, --sse {} x2); raise the hard limit (ulimit "
        "-Hn as root, /etc/security/limits.conf, docker run --ulimit nofile=N:N) or pass "
        "smaller counts",
        limit.rlim_max, needed, options.idle, options.slowloris, options.sse));
  }
}

sockaddr_in Loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

int NewSocket(bool blocking) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (blocking ? 0 : SOCK_NONBLOCK), 0);
  if (fd < 0) Die("socket: " + Errno());
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Incremental reader of one HTTP/1.1 response with a Content-Length or chunked body (decoded).
class ResponseReader {
 public:
  // Takes received bytes; false on a framing error.
  bool Feed(std::string_view data) {
    raw_.append(data);
    if (!head_done_) {
      const size_t end = raw_.find("\r\n\r\n");
      if (end == std::string::npos) return raw_.size() < (64 << 10);
      const std::string head = Lower(std::string_view(raw_).substr(0, end + 2));
      if (!head.starts_with("http/1.1 ") || head.size() < 12) return false;
      status_ = std::atoi(head.c_str() + 9);
      chunked_ = head.find("\r\ntransfer-encoding: chunked\r\n") != std::string::npos;
      if (!chunked_) {
        const size_t at = head.find("\r\ncontent-length: ");
        if (at == std::string::npos) return false;
        length_ = std::strtoull(head.c_str() + at + 18, nullptr, 10);
      }
      raw_.erase(0, end + 4);
      head_done_ = true;
    }
    if (!chunked_) {
      const size_t n = std::min<size_t>(length_ - body_.size(), raw_.size());
      body_.append(raw_, 0, n);
      raw_.erase(0, n);
      done_ = body_.size() == length_;
      return true;
    }
    size_t pos = 0;
    bool ok = true;
    while (!done_) {
      const size_t line = raw_.find("\r\n", pos);
      if (line == std::string::npos) break;
      char* end = nullptr;
      const unsigned long long size = std::strtoull(raw_.c_str() + pos, &end, 16);
      if (end == raw_.c_str() + pos) {
        ok = false;
        break;
      }
      if (size == 0) {  // the last chunk; no trailers are sent
        if (raw_.size() < line + 4) break;
        ok = raw_.compare(line + 2, 2, "\r\n") == 0;
        done_ = ok;
        pos = line + 4;
        break;
      }
      if (raw_.size() < line + 2 + size + 2) break;
      body_.append(raw_, line + 2, size);
      if (raw_.compare(line + 2 + size, 2, "\r\n") != 0) {
        ok = false;
        break;
      }
      pos = line + 2 + size + 2;
    }
    raw_.erase(0, pos);
    return ok;
  }
  bool done() const { return done_; }
  int status() const { return status_; }
  const std::string& body() const { return body_; }

 private:
  std::string raw_;
  std::string body_;
  bool head_done_ = false;
  bool chunked_ = false;
  bool done_ = false;
  int status_ = 0;
  uint64_t length_ = 0;
};

// Opens `n` connections to 127.0.0.1:port, at most 256 handshakes at a time (the listen
// backlog is finite); returns the connected non-blocking sockets. Exits unless all connect
// before `deadline`.
std::vector<int> ConnectAll(int port, int n, Clock::time_point deadline) {
  constexpr int kWindow = 256;
  const int epoll = epoll_create1(EPOLL_CLOEXEC);
  const sockaddr_in addr = Loopback(port);
  std::vector<int> connected;
  connected.reserve(static_cast<size_t>(n));
  int started = 0;
  int pending = 0;
  while (static_cast<int>(connected.size()) < n) {
    if (Clock::now() > deadline) {
      Die(fmt::format("only {} of {} connections were established in time", connected.size(), n));
    }
    while (pending < kWindow && started < n) {
      const int fd = NewSocket(false);
      ++started;
      if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) {
        connected.push_back(fd);
        continue;
      }
      if (errno != EINPROGRESS) Die(fmt::format("connect #{}: {}", started, Errno()));
      epoll_event event{};
      event.events = EPOLLOUT;
      event.data.fd = fd;
      epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
      ++pending;
    }
    epoll_event events[256];
    const int k = epoll_wait(epoll, events, 256, 100);
    for (int i = 0; i < k; ++i) {
      const int fd = events[i].data.fd;
      epoll_ctl(epoll, EPOLL_CTL_DEL, fd, nullptr);
      --pending;
      int error = 0;
      socklen_t len = sizeof(error);
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len);
      if (error != 0) Die(fmt::format("connect: {}", std::strerror(error)));
      connected.push_back(fd);
    }
  }
  close(epoll);
  return connected;
}

void CloseAll(std::vector<int>& fds) {
  for (const int fd : fds) close(fd);
  fds.clear();
}

// One client connection with one request and its response.
struct ClientStream {
  int fd = -1;
  ResponseReader reader;
  Clock::time_point first_byte{};
  Clock::time_point done{};
  bool failed = false;
};

// Sends `request` on every stream's socket, then reads a response on each until all are
// complete or failed, or `deadline` passes (the rest fail). Sockets stay open.
void RunExchanges(std::vector<ClientStream>& streams, const std::string& request,
                  Clock::time_point deadline) {
  const int epoll = epoll_create1(EPOLL_CLOEXEC);
  size_t active = 0;
  for (size_t i = 0; i < streams.size(); ++i) {
    ClientStream& s = streams[i];
    const ssize_t n = send(s.fd, request.data(), request.size(), MSG_NOSIGNAL);
    if (n != static_cast<ssize_t>(request.size())) {
      s.failed = true;
      continue;
    }
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = i;
    epoll_ctl(epoll, EPOLL_CTL_ADD, s.fd, &event);
    ++active;
  }
  std::vector<char> buffer(64 << 10);
  epoll_event events[512];
  while (active > 0 && Clock::now() < deadline) {
    const int k = epoll_wait(epoll, events, 512, 50);
    const auto now = Clock::now();
    for (int i = 0; i < k; ++i) {
      ClientStream& s = streams[events[i].data.u64];
      while (true) {
        const ssize_t n = recv(s.fd, buffer.data(), buffer.size(), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n <= 0 || !s.reader.Feed(std::string_view(buffer.data(), static_cast<size_t>(n)))) {
          s.failed = true;
          break;
        }
        if (s.first_byte == Clock::time_point{}) s.first_byte = now;
        if (s.reader.done()) {
          s.done = now;
          break;
        }
      }
      if (s.failed || s.reader.done()) {
        epoll_ctl(epoll, EPOLL_CTL_DEL, s.fd, nullptr);
        --active;
      }
    }
  }
  for (ClientStream& s : streams) {
    if (!s.reader.done()) s.failed = true;
  }
  close(epoll);
}

// Sockets on which the server has sent nothing (more) and which it has not closed: peeks,
// consumes nothing.
int CountSilentOpen(const std::vector<int>& fds) {
  int open = 0;
  for (const int fd : fds) {
    char byte;
    const ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) ++open;
  }
  return open;
}

// A blocking keep-alive client for probes: one request at a time.
class ProbeClient {
 public:
  explicit ProbeClient(int port) : fd_(NewSocket(true)) {
    const sockaddr_in addr = Loopback(port);
    if (connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
      Die("probe connect: " + Errno());
    }
  }
  ~ProbeClient() { close(fd_); }
  ProbeClient(const ProbeClient&) = delete;
  ProbeClient& operator=(const ProbeClient&) = delete;

  // GET `target`; the status (0 on failure) and the body.
  int Get(std::string_view target, std::string* body = nullptr) {
    const std::string request = fmt::format("GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", target);
    if (send(fd_, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
      return 0;
    }
    ResponseReader reader;
    char buffer[16384];
    while (!reader.done()) {
      const ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0 || !reader.Feed(std::string_view(buffer, static_cast<size_t>(n)))) return 0;
    }
    if (body != nullptr) *body = reader.body();
    return reader.status();
  }

 private:
  const int fd_;
};

struct ProbeResult {
  double p50_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
  int errors = 0;
};

// `n` sequential GET /healthz on one fresh keep-alive connection, after 20 unmeasured ones,
// one every `gap` at most (so the probe spans the load's periods instead of a short burst).
ProbeResult ProbeHealthz(int port, int n, std::chrono::microseconds gap) {
  ProbeClient client(port);
  for (int i = 0; i < 20; ++i) client.Get("/healthz");
  std::vector<double> latencies;
  latencies.reserve(static_cast<size_t>(n));
  ProbeResult result;
  auto next = Clock::now();
  for (int i = 0; i < n; ++i) {
    std::this_thread::sleep_until(next);
    next += gap;
    const auto begin = Clock::now();
    if (client.Get("/healthz") != 200) {
      ++result.errors;
      continue;
    }
    latencies.push_back(Ms(Clock::now() - begin));
  }
  result.p50_ms = Percentile(latencies, 50);
  result.p99_ms = Percentile(latencies, 99);
  result.max_ms = latencies.empty() ? 0 : *std::max_element(latencies.begin(), latencies.end());
  return result;
}

// The server's gauge aibrix_cache_http_connections (the scraping connection included); -1
// when it cannot be read.
double OpenConnectionsGauge(ProbeClient& client) {
  std::string body;
  if (client.Get("/metrics", &body) != 200) return -1;
  std::istringstream lines(body);
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with("aibrix_cache_http_connections ")) {
      return std::strtod(line.c_str() + std::strlen("aibrix_cache_http_connections "), nullptr);
    }
  }
  return -1;
}

// Waits until the server holds no connection but the scraping one (the previous phase's
// sockets were closed by this side), up to `timeout`; returns the last gauge read.
double WaitForNoConnections(int port, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  double open = -1;
  while (Clock::now() < deadline) {
    ProbeClient client(port);
    open = OpenConnectionsGauge(client);
    if (open >= 0 && open <= 1) break;
    std::this_thread::sleep_for(milliseconds(100));
  }
  return open;
}

double RssMb(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("VmRSS:")) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;
  }
  Die(fmt::format("no VmRSS in /proc/{}/status", pid));
}

// utime + stime of a process, in seconds.
double CpuSeconds(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) Die(fmt::format("cannot read /proc/{}/stat", pid));
  std::istringstream fields(stat.substr(paren + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  // After the name: state is field 3; utime and stime are fields 14 and 15.
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// --- Phases -----------------------------------------------------------------------------

const std::string kHealthz = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

void IdlePhase(const Options& options, int port, pid_t pid) {
  const double rss_before = RssMb(pid);
  const auto start = Clock::now();
  std::vector<int> fds = ConnectAll(port, options.idle, start + std::chrono::seconds(30));
  std::vector<ClientStream> streams(fds.size());
  for (size_t i = 0; i < fds.size(); ++i) streams[i].fd = fds[i];
  RunExchanges(streams, kHealthz, Clock::now() + std::chrono::seconds(30));
  const auto answered = std::count_if(streams.begin(), streams.end(), [](const ClientStream& s) {
    return !s.failed && s.reader.status() == 200;
  });
  std::printf("idle: %zu connections open, %zd answered GET /healthz 200, in %.1f s\n", fds.size(),
              answered, Seconds(Clock::now() - start));
  std::this_thread::sleep_for(std::chrono::seconds(1));  // nothing moves; the server must hold

  const ProbeResult probe =
      ProbeHealthz(port, options.probes, std::chrono::microseconds(options.probe_gap_us));
  ProbeClient client(port);
  const double gauge = OpenConnectionsGauge(client);
  const int client_side = CountSilentOpen(fds);
  const double rss = RssMb(pid);
  std::printf(
      "idle: server gauge %.0f open (this scrape's connection included), %d still open and "
      "silent seen from the client side; healthz p50 %.3f ms, p99 %.3f ms, max %.3f ms, %d "
      "errors; service RSS %.1f MiB before, %.1f MiB holding them (%.2f KiB per connection)\n",
      gauge, client_side, probe.p50_ms, probe.p99_ms, probe.max_ms, probe.errors, rss_before, rss,
      (rss - rss_before) * 1024.0 / std::max<double>(1, static_cast<double>(client_side)));
  const double held = gauge >= 1 ? gauge - 1 : client_side;
  aibrix::bench::PrintFigure("idle_connections_held", held, "connections", 0);
  aibrix::bench::PrintFigure("healthz_p99_ms_under_idle", probe.p99_ms, "ms", 3);
  aibrix::bench::PrintFigure("service_rss_mb_10k_idle", rss, "MB", 1);
  CloseAll(fds);
}

void SlowlorisPhase(const Options& options, int port) {
  const auto start = Clock::now();
  std::vector<int> fds = ConnectAll(port, options.slowloris, start + std::chrono::seconds(30));
  // One byte per connection every slow_byte_ms, the connections spread over 10 ms steps.
  const std::string head = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
  std::atomic<bool> stop{false};
  std::atomic<int> send_failures{0};
  std::atomic<uint64_t> bytes_sent{0};
  std::jthread trickle([&] {
    const int steps = std::max(1, options.slow_byte_ms / 10);
    const size_t per_step =
        (fds.size() + static_cast<size_t>(steps) - 1) / static_cast<size_t>(steps);
    std::vector<size_t> position(fds.size(), 0);
    std::vector<bool> alive(fds.size(), true);
    auto next = Clock::now();
    for (int step = 0; !stop.load(); step = (step + 1) % steps) {
      for (size_t i = static_cast<size_t>(step) * per_step;
           i < std::min(fds.size(), static_cast<size_t>(step + 1) * per_step); ++i) {
        if (!alive[i]) continue;
        const char byte = position[i] < head.size() ? head[position[i]] : 'a';
        if (send(fds[i], &byte, 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1) {
          alive[i] = false;
          send_failures.fetch_add(1);
          continue;
        }
        ++position[i];
        bytes_sent.fetch_add(1, std::memory_order_relaxed);
      }
      next += milliseconds(10);
      std::this_thread::sleep_until(next);
    }
  });
  // Every connection has sent a few bytes (its head deadline runs) before the probe.
  std::this_thread::sleep_for(milliseconds(3 * options.slow_byte_ms + 200));
  const int open_before = CountSilentOpen(fds);
  const auto probe_start = Clock::now();
  const ProbeResult probe =
      ProbeHealthz(port, options.probes, std::chrono::microseconds(options.probe_gap_us));
  const double probe_s = Seconds(Clock::now() - probe_start);
  ProbeClient client(port);
  const double gauge = OpenConnectionsGauge(client);
  const int open_after = CountSilentOpen(fds) - send_failures.load();
  stop = true;
  trickle.join();
  std::printf(
      "slowloris: %zu connections, %d then %d trickling unanswered around the probe (%.2f s, "
      "%.1f s after the first byte), %llu bytes trickled, server gauge %.0f; healthz p50 "
      "%.3f ms, p99 %.3f ms, max %.3f ms, %d errors\n",
      fds.size(), open_before, open_after, probe_s, Seconds(Clock::now() - start),
      static_cast<unsigned long long>(bytes_sent.load()), gauge, probe.p50_ms, probe.p99_ms,
      probe.max_ms, probe.errors);
  aibrix::bench::PrintFigure("slowloris_connections", std::min(open_before, open_after),
                             "connections", 0);
  aibrix::bench::PrintFigure("healthz_p99_ms_under_slowloris", probe.p99_ms, "ms", 3);
  CloseAll(fds);
}

void SsePhase(const Options& options, int port, pid_t pid,
              const aibrix::testing::SseUpstream& upstream) {
  const std::string body = fmt::format(
      R"({{"model":"llama","prompt":"Say hello to the front door","max_tokens":{},"stream":true}})",
      options.sse_events);
  const std::string request = fmt::format(
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
      "Accept: text/event-stream\r\nContent-Length: {}\r\n\r\n{}",
      body.size(), body);
  const double cpu_before = CpuSeconds(pid);
  const auto start = Clock::now();
  std::vector<int> fds = ConnectAll(port, options.sse, start + std::chrono::seconds(30));
  std::vector<ClientStream> streams(fds.size());
  for (size_t i = 0; i < fds.size(); ++i) streams[i].fd = fds[i];
  const auto deadline = Clock::now() + std::chrono::seconds(40) +
                        milliseconds(options.sse_events * options.sse_interval_ms);
  RunExchanges(streams, request, deadline);
  const double cpu = CpuSeconds(pid) - cpu_before;
  const double seconds = Seconds(Clock::now() - start);

  Clock::time_point first_end = Clock::time_point::max();
  for (const ClientStream& s : streams) {
    if (s.reader.done()) first_end = std::min(first_end, s.done);
  }
  const std::string done_event = "data: [DONE]\n\n";
  uint64_t events = 0;
  int complete = 0;
  int concurrent = 0;
  for (const ClientStream& s : streams) {
    const std::string& b = s.reader.body();
    int count = 0;
    for (size_t at = b.find("data: "); at != std::string::npos; at = b.find("data: ", at + 6)) {
      ++count;
    }
    events += static_cast<uint64_t>(count);
    const bool correct = !s.failed && s.reader.done() && s.reader.status() == 200 &&
                         b.ends_with(done_event) && count == options.sse_events + 1;
    if (!correct) continue;
    ++complete;
    if (s.first_byte < first_end) ++concurrent;
  }
  std::printf(
      "sse: %zu streams, %d complete and correct, %d of them open together; upstream started "
      "%d, finished %d, saw %d aborted; %llu events relayed in %.1f s; service CPU %.3f s\n",
      streams.size(), complete, concurrent, upstream.started(), upstream.finished(),
      upstream.aborted(), static_cast<unsigned long long>(events), seconds, cpu);
  aibrix::bench::PrintFigure("sse_streams_concurrent", concurrent, "streams", 0);
  aibrix::bench::PrintFigure("sse_relay_cpu_us_per_chunk",
                             events > 0 ? cpu * 1e6 / static_cast<double>(events) : 0, "us", 2);
  CloseAll(fds);
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = ParseOptions(argc, argv);
  std::signal(SIGPIPE, SIG_IGN);
  const rlim_t needed =
      static_cast<rlim_t>(std::max({options.idle, options.slowloris, 2 * options.sse}) + 256);
  RaiseFdLimit(needed, options);
  const auto start = Clock::now();

  aibrix::testing::SseUpstream upstream({.events = options.sse_events,
                                         .interval = milliseconds(options.sse_interval_ms),
                                         .gate_streams = options.sse,
                                         .gate_timeout = std::chrono::seconds(20),
                                         .id = "cmpl-frontdoor"});
  if (const auto started = upstream.Start(); !started.ok()) Die(started.ToString());
  const aibrix::testing::TempDir dir("frontdoor-bench");
  const std::string config = dir.Write(
      "config.yaml", fmt::format("models:\n  - name: llama\n    endpoints: [\"127.0.0.1:{}\"]\n",
                                 upstream.port()));
  auto service = aibrix::testing::Subprocess::Start(
      {aibrix::testing::BinaryPath("aibrix-cache"), "--http-addr", "127.0.0.1:0", "--extproc-addr",
       "", "--static-config", config, "--shutdown-delay-ms", "0", "--shutdown-grace", "2000"});
  if (!service.ok()) Die(service.status().ToString());
  auto port_text = (*service)->WaitForLine(R"(listening on http://127\.0\.0\.1:(\d+))",
                                           std::chrono::seconds(20));
  if (!port_text.ok()) Die(port_text.status().ToString());
  if (auto ready = (*service)->WaitForLine("ready:", std::chrono::seconds(20)); !ready.ok()) {
    Die(ready.status().ToString());
  }
  const int port = std::stoi(*port_text);
  const pid_t pid = (*service)->pid();
  std::string load;
  std::getline(std::ifstream("/proc/loadavg"), load);
  std::printf("service: aibrix-cache pid %d on port %d, upstream on port %d; load average %s\n",
              pid, port, upstream.port(), load.c_str());

  IdlePhase(options, port, pid);
  WaitForNoConnections(port, std::chrono::seconds(10));
  SlowlorisPhase(options, port);
  WaitForNoConnections(port, std::chrono::seconds(10));
  SsePhase(options, port, pid, upstream);

  auto exit_code = (*service)->Stop(SIGTERM, std::chrono::seconds(10));
  std::printf("service: stopped (%s); whole run %.1f s\n",
              exit_code.ok() ? fmt::format("exit {}", *exit_code).c_str() : "did not exit in time",
              Seconds(Clock::now() - start));
  std::remove(config.c_str());
  return 0;
}
