#include "aibrix/server/http_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <initializer_list>
#include <iterator>

#include "aibrix/common/logging.h"
#include "aibrix/server/http_parser.h"
#include "fmt/format.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"

namespace aibrix::server {
namespace {

constexpr size_t kMaxHeadBytes = 64 << 10;
constexpr size_t kReadChunk = 64 << 10;
// A request must arrive within this time once started; an idle keep-alive connection is
// closed after it; a blocked write fails after it.
constexpr int kTimeoutMs = 5000;

std::string_view ErrorType(int status) {
  switch (status) {
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 503:
      return "service_unavailable";
    default:
      return status >= 500 ? "internal_error" : "invalid_request_error";
  }
}

bool IsPlainPattern(const std::string& pattern) {
  return pattern.find_first_of("()[]{}.*+?^$|\\") == std::string::npos;
}

// One connection's socket and read buffer.
class Connection {
 public:
  Connection(int fd, size_t max_body) : fd_(fd), max_body_(max_body) {}

  // Outcome of reading a request: a request, a clean end (peer closed or idle timeout
  // between requests), or an error answered with `status` before closing.
  struct Outcome {
    bool request = false;
    int status = 0;  // 0: close silently
    std::string message;
  };

  Outcome Next(Request& req, bool* keep_alive) {
    size_t head_size = 0;
    while ((head_size = RequestHeadSize(Buffered())) == 0) {
      if (Buffered().size() > kMaxHeadBytes) {
        return {false, 431, "request head exceeds 64 KiB"};
      }
      const bool idle = Buffered().empty();
      if (!Fill()) {
        if (idle) return {};
        return {false, timed_out_ ? 408 : 0, "request incomplete"};
      }
    }
    auto head = ParseRequestHead(Buffered().substr(0, head_size));
    Consume(head_size);
    if (!head.ok()) return {false, 400, std::string(head.status().message())};
    *keep_alive = head->keep_alive;
    req.method = std::move(head->method);
    req.target = std::move(head->target);
    req.version = fmt::format("HTTP/1.{}", head->minor_version);
    for (auto& [name, value] : head->headers)
      req.headers.emplace(std::move(name), std::move(value));
    const size_t query = req.target.find('?');
    req.path = httplib::detail::decode_url(req.target.substr(0, query), false);
    if (query != std::string::npos) {
      httplib::detail::parse_query_text(req.target.substr(query + 1), req.params);
    }
    if (head->chunked) return ReadChunked(req, head->expect_continue);
    const uint64_t length = head->content_length.value_or(0);
    if (length > max_body_) {
      return {false, 413, fmt::format("request body exceeds the limit of {} bytes", max_body_)};
    }
    if (length > Buffered().size() && head->expect_continue)
      Write({"HTTP/1.1 100 Continue\r\n\r\n"});
    // Buffered bytes first, then large reads straight into the body.
    req.body.resize(length);
    const size_t have = std::min<size_t>(length, Buffered().size());
    std::memcpy(req.body.data(), Buffered().data(), have);
    Consume(have);
    for (size_t got = have; got < length;) {
      const ssize_t n = Recv(req.body.data() + got, length - got);
      if (n <= 0) return {false, timed_out_ ? 408 : 0, "request body incomplete"};
      got += static_cast<size_t>(n);
    }
    return {true, 0, ""};
  }

  // Writes `parts` in order, with one system call when the socket takes them all.
  bool Write(std::initializer_list<std::string_view> parts) {
    iovec iov[4];
    size_t count = 0;
    for (std::string_view part : parts) {
      if (!part.empty() && count < std::size(iov)) {
        iov[count++] = {const_cast<char*>(part.data()), part.size()};
      }
    }
    for (size_t first = 0; first < count;) {
      msghdr msg{};
      msg.msg_iov = iov + first;
      msg.msg_iovlen = count - first;
      const ssize_t n = sendmsg(fd_, &msg, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      for (size_t left = static_cast<size_t>(n); left > 0;) {  // skip what was sent
        const size_t step = std::min(left, iov[first].iov_len);
        iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + step;
        iov[first].iov_len -= step;
        left -= step;
        if (iov[first].iov_len == 0) ++first;
      }
    }
    return true;
  }

  // False once the peer closed or reset the connection.
  bool PeerAlive() const {
    pollfd p{fd_, POLLRDHUP, 0};
    return poll(&p, 1, 0) == 0 || (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) == 0;
  }

 private:
  std::string_view Buffered() const { return std::string_view(buf_).substr(begin_); }
  void Consume(size_t n) {
    begin_ += n;
    if (begin_ == buf_.size()) {
      buf_.clear();
      begin_ = 0;
    }
  }

  // Waits (bounded) until readable, then reads once.
  ssize_t Recv(char* data, size_t size) {
    timed_out_ = false;
    pollfd p{fd_, POLLIN, 0};
    int ready;
    while ((ready = poll(&p, 1, kTimeoutMs)) < 0 && errno == EINTR) {
    }
    if (ready == 0) {
      timed_out_ = true;
      return -1;
    }
    ssize_t n;
    while ((n = recv(fd_, data, size, 0)) < 0 && errno == EINTR) {
    }
    return n;
  }

  // Appends one read to the buffer; false on close, error or timeout.
  bool Fill() {
    if (begin_ > 0) {
      buf_.erase(0, begin_);
      begin_ = 0;
    }
    const size_t old = buf_.size();
    buf_.resize(old + kReadChunk);
    const ssize_t n = Recv(buf_.data() + old, kReadChunk);
    buf_.resize(old + static_cast<size_t>(std::max<ssize_t>(n, 0)));
    return n > 0;
  }

  Outcome ReadChunked(Request& req, bool expect_continue) {
    if (expect_continue) Write({"HTTP/1.1 100 Continue\r\n\r\n"});
    ChunkedDecoder decoder(max_body_);
    while (true) {
      auto used = decoder.Feed(Buffered(), &req.body);
      if (!used.ok()) {
        if (used.status().code() == absl::StatusCode::kOutOfRange) {
          return {false, 413, fmt::format("request body exceeds the limit of {} bytes", max_body_)};
        }
        return {false, 400, std::string(used.status().message())};
      }
      Consume(*used);
      if (decoder.done()) return {true, 0, ""};
      if (!Fill()) return {false, timed_out_ ? 408 : 0, "chunked body incomplete"};
    }
  }

  const int fd_;
  const size_t max_body_;
  std::string buf_;
  size_t begin_ = 0;
  bool timed_out_ = false;
};

std::string ResponseHead(const Response& res, bool keep_alive, bool chunked, size_t length) {
  std::string head = fmt::format("HTTP/1.1 {} {}\r\n", res.status, ReasonPhrase(res.status));
  for (const auto& [name, value] : res.headers) {
    if (name == "Content-Length" || name == "Connection" || name == "Transfer-Encoding") continue;
    fmt::format_to(std::back_inserter(head), "{}: {}\r\n", name, value);
  }
  if (chunked) {
    head += "Transfer-Encoding: chunked\r\n";
  } else {
    fmt::format_to(std::back_inserter(head), "Content-Length: {}\r\n", length);
  }
  head += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  return head;
}

// Streams a chunked content provider; true when it completed.
bool WriteChunked(Connection& conn, Response& res) {
  bool ok = true, done = false;
  size_t offset = 0;
  httplib::DataSink sink;
  sink.write = [&](const char* data, size_t size) {
    if (!ok) return false;
    if (size == 0) return true;
    const std::string frame = fmt::format("{:x}\r\n", size);
    ok = conn.Write({frame, std::string_view(data, size), "\r\n"});
    offset += size;
    return ok;
  };
  sink.done = [&] {
    if (ok && !done) ok = conn.Write({"0\r\n\r\n"});
    done = true;
  };
  sink.is_writable = [&] { return ok && conn.PeerAlive(); };
  while (ok && !done) {
    if (!conn.PeerAlive() || !res.content_provider_(offset, 0, sink)) ok = false;
  }
  return ok && done;
}

}  // namespace

void SendError(Response& res, int status, std::string_view message, std::string_view type) {
  nlohmann::json body = {{"error", {{"message", message}, {"type", type}, {"code", status}}}};
  SendJson(res, body, status);
}

void SendJson(Response& res, const nlohmann::json& body, int status) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                  "application/json");
}

std::optional<nlohmann::json> ParseJsonBody(const Request& req, Response& res) {
  nlohmann::json body = nlohmann::json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    SendError(res, 400, "malformed JSON in request body");
    return std::nullopt;
  }
  if (!body.is_object()) {
    SendError(res, 400, "request body must be a JSON object");
    return std::nullopt;
  }
  return body;
}

HttpServer::HttpServer(HttpServerOptions options, prometheus::Registry& registry)
    : options_(std::move(options)),
      requests_(prometheus::BuildCounter()
                    .Name("aibrix_cache_http_requests_total")
                    .Help("HTTP requests served, by route and status code")
                    .Register(registry)),
      latency_(prometheus::BuildHistogram()
                   .Name("aibrix_cache_http_request_duration_seconds")
                   .Help("HTTP request handling time, by route")
                   .Register(registry)) {}

HttpServer::~HttpServer() { Stop(); }

Handler HttpServer::Instrument(const std::string& route, Handler handler) {
  auto& histogram =
      latency_.Add({{"route", route}}, prometheus::Histogram::BucketBoundaries{
                                           0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                           0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30});
  return
      [this, route, &histogram, handler = std::move(handler)](const Request& req, Response& res) {
        const auto start = std::chrono::steady_clock::now();
        handler(req, res);
        histogram.Observe(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        requests_.Add({{"route", route}, {"code", std::to_string(res.status)}}).Increment();
      };
}

void HttpServer::Add(const std::string& method, const std::string& pattern,
                     const std::string& route, Handler handler) {
  RouteEntry entry{method, pattern, std::nullopt, Instrument(route, std::move(handler))};
  if (!IsPlainPattern(pattern)) entry.pattern.emplace(pattern);
  routes_.push_back(std::move(entry));
}

void HttpServer::Get(const std::string& pattern, const std::string& route, Handler handler) {
  Add("GET", pattern, route, std::move(handler));
}

void HttpServer::Post(const std::string& pattern, const std::string& route, Handler handler) {
  Add("POST", pattern, route, std::move(handler));
}

absl::Status HttpServer::Start() {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(options_.port);
  if (getaddrinfo(options_.host.c_str(), port.c_str(), &hints, &found) != 0 || found == nullptr) {
    return absl::UnavailableError(fmt::format("cannot resolve listen address {}", options_.host));
  }
  const int fd = socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int yes = 1;
  // SO_REUSEADDR only: SO_REUSEPORT would let a second process bind the port silently.
  if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  const bool bound =
      fd >= 0 && bind(fd, found->ai_addr, found->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0;
  freeaddrinfo(found);
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (!bound || getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string why = std::strerror(errno);
    if (fd >= 0) close(fd);
    return absl::UnavailableError(
        fmt::format("cannot listen on {}:{}: {}", options_.host, options_.port, why));
  }
  port_ = ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  listen_fd_ = fd;
  stopping_.store(false);
  for (int i = 0; i < std::max(1, options_.threads); ++i)
    workers_.emplace_back([this] { WorkerLoop(); });
  acceptor_ = std::thread([this] { AcceptLoop(); });
  return absl::OkStatus();
}

void HttpServer::Stop() {
  if (listen_fd_ < 0) return;
  stopping_.store(true);
  shutdown(listen_fd_, SHUT_RDWR);  // wakes accept()
  if (acceptor_.joinable()) acceptor_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : open_fds_) shutdown(fd, SHUT_RDWR);  // wakes reads and writes
    for (const Pending& p : pending_) close(p.fd);
    pending_.clear();
  }
  cv_.notify_all();
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
  close(listen_fd_);
  listen_fd_ = -1;
}

void HttpServer::AcceptLoop() {
  while (!stopping_.load()) {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    const int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (!stopping_.load()) {
        common::Logger("http")->error("accept failed: {}", std::strerror(errno));
        std::this_thread::sleep_for(std::chrono::milliseconds(10));  // e.g. out of fds
        continue;
      }
      return;
    }
    const int yes = 1;
    // Without TCP_NODELAY, Nagle plus delayed ACKs stall each keep-alive response ~40 ms.
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof(yes));
    const timeval send_timeout{kTimeoutMs / 1000, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout));
    char host[INET6_ADDRSTRLEN] = "";
    if (addr.ss_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&addr)->sin_addr, host, sizeof(host));
    } else if (addr.ss_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&addr)->sin6_addr, host, sizeof(host));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_.push_back({fd, host});
    }
    cv_.notify_one();
  }
}

void HttpServer::WorkerLoop() {
  while (true) {
    Pending next;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_.load() || !pending_.empty(); });
      if (stopping_.load()) return;
      next = std::move(pending_.front());
      pending_.pop_front();
      open_fds_.insert(next.fd);
    }
    Serve(next.fd, next.remote_addr);
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_fds_.erase(next.fd);
    }
    close(next.fd);
  }
}

void HttpServer::Serve(int fd, const std::string& remote_addr) {
  Connection conn(fd, options_.max_body_bytes);
  bool keep_alive = true;
  while (keep_alive && !stopping_.load()) {
    Request req;
    req.remote_addr = remote_addr;
    Response res;
    const Connection::Outcome in = conn.Next(req, &keep_alive);
    if (!in.request) {
      if (in.status != 0) {
        SendError(res, in.status, in.message, ErrorType(in.status));
        requests_.Add({{"route", "unmatched"}, {"code", std::to_string(in.status)}}).Increment();
        conn.Write({ResponseHead(res, false, false, res.body.size()), res.body});
      }
      return;
    }
    Dispatch(req, res);
    const bool chunked = res.content_provider_ != nullptr;
    if (!conn.Write({ResponseHead(res, keep_alive, chunked, res.body.size()),
                     chunked || req.method == "HEAD" ? std::string_view() : res.body})) {
      return;
    }
    if (chunked) {
      res.content_provider_success_ = WriteChunked(conn, res);
      if (!res.content_provider_success_) return;
    }
  }
}

void HttpServer::Dispatch(Request& req, Response& res) {
  const RouteEntry* match = nullptr;
  for (const RouteEntry& route : routes_) {
    if (route.method != req.method) continue;
    if (route.pattern ? std::regex_match(req.path, req.matches, *route.pattern)
                      : route.path == req.path) {
      match = &route;
      break;
    }
  }
  if (match == nullptr) {
    SendError(res, 404, fmt::format("no route for {} {}", req.method, req.path), ErrorType(404));
    requests_.Add({{"route", "unmatched"}, {"code", "404"}}).Increment();
    return;
  }
  try {
    match->handler(req, res);
  } catch (const std::exception& e) {
    common::Logger("http")->error("{} {} failed: {}", req.method, req.path, e.what());
    res = Response();
    SendError(res, 500, fmt::format("internal error: {}", e.what()), "internal_error");
    return;
  }
  if (res.status == -1) res.status = 200;
  if (res.status >= 400 && res.body.empty() && res.content_provider_ == nullptr) {
    SendError(res, res.status, fmt::format("HTTP {}", res.status), ErrorType(res.status));
  }
}

}  // namespace aibrix::server
