#include "tests/util/sse_upstream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fmt/format.h"

namespace aibrix::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string Chunk(std::string_view data) {
  return fmt::format("{:x}\r\n{}\r\n", data.size(), data);
}

}  // namespace

SseUpstream::SseUpstream(SseUpstreamOptions options) : options_(std::move(options)) {}

SseUpstream::~SseUpstream() { Stop(); }

absl::Status SseUpstream::Start() {
  if (listen_fd_ >= 0) return absl::FailedPreconditionError("SSE upstream already started");
  auto fail = [this](std::string_view what) {
    const absl::Status status =
        absl::InternalError(fmt::format("SSE upstream: {}: {}", what, std::strerror(errno)));
    if (epoll_ >= 0) close(epoll_);
    if (listen_fd_ >= 0) close(listen_fd_);
    epoll_ = -1;
    listen_fd_ = -1;
    return status;
  };
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return fail("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listen_fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return fail("bind 127.0.0.1:0");
  }
  if (listen(listen_fd_, 4096) != 0) return fail("listen");
  socklen_t len = sizeof(addr);
  if (getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return fail("getsockname");
  }
  epoll_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_ < 0) return fail("epoll_create1");
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = listen_fd_;
  if (epoll_ctl(epoll_, EPOLL_CTL_ADD, listen_fd_, &event) != 0) return fail("epoll_ctl");
  port_ = ntohs(addr.sin_port);
  thread_ = std::jthread([this](std::stop_token stop) { Loop(stop); });
  return absl::OkStatus();
}

void SseUpstream::Stop() {
  if (thread_.joinable()) {
    thread_.request_stop();
    thread_.join();
  }
  for (auto& [fd, conn] : conns_) close(fd);
  conns_.clear();
  open_connections_.store(0);
  if (epoll_ >= 0) close(epoll_);
  if (listen_fd_ >= 0) close(listen_fd_);
  epoll_ = -1;
  listen_fd_ = -1;
}

void SseUpstream::Loop(std::stop_token stop) {
  const milliseconds tick = std::max(milliseconds(1), options_.interval / kSlots);
  auto next_tick = Clock::now() + tick;
  uint64_t tick_count = 0;
  epoll_event events[512];
  while (!stop.stop_requested()) {
    const auto wait = std::chrono::duration_cast<milliseconds>(next_tick - Clock::now());
    const int k =
        epoll_wait(epoll_, events, 512, static_cast<int>(std::max<int64_t>(0, wait.count())));
    for (int i = 0; i < k; ++i) {
      const int fd = events[i].data.fd;
      if (fd == listen_fd_) {
        Accept();
        continue;
      }
      auto it = conns_.find(fd);
      if (it == conns_.end()) continue;
      Conn& conn = *it->second;
      if ((events[i].events & EPOLLOUT) && !Flush(conn)) continue;
      if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) OnReadable(conn);
    }
    if (Clock::now() >= next_tick) {
      next_tick += tick;
      Tick(static_cast<int>(tick_count++ % kSlots));
    }
  }
}

void SseUpstream::Accept() {
  while (true) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = fd;
    epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &event);
    auto conn = std::make_unique<Conn>();
    conn->fd = fd;
    conns_.emplace(fd, std::move(conn));
    accepted_.fetch_add(1);
    open_connections_.fetch_add(1);
  }
}

void SseUpstream::OnReadable(Conn& conn) {
  char buffer[16384];
  while (true) {
    const ssize_t n = recv(conn.fd, buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) {
      Drop(conn);
      return;
    }
    conn.in.append(buffer, static_cast<size_t>(n));
  }
  if (conn.sent >= 0) return;  // a pipelined request waits for this response's end
  const size_t end = conn.in.find("\r\n\r\n");
  if (end == std::string::npos) return;
  const std::string head = Lower(std::string_view(conn.in).substr(0, end + 2));
  const size_t at = head.find("\r\ncontent-length: ");
  const size_t length =
      at == std::string::npos ? 0 : std::strtoull(head.c_str() + at + 18, nullptr, 10);
  if (conn.in.size() < end + 4 + length) return;
  conn.in.erase(0, end + 4 + length);
  conn.sent = 1;
  conn.slot = started_.load() % kSlots;
  if (started_.fetch_add(1) == 0) gate_deadline_ = Clock::now() + options_.gate_timeout;
  const int streaming = started_.load() - finished_.load() - aborted_.load();
  if (streaming > peak_streams_.load()) peak_streams_.store(streaming);
  // Last: a failed write drops (destroys) the connection.
  Send(conn,
       "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
       "Transfer-Encoding: chunked\r\n\r\n" +
           Chunk(Event(0)));
}

bool SseUpstream::GateOpen() {
  if (gate_open_.load()) return true;
  const int started = started_.load();
  const bool open =
      open_gate_requested_.load() ||
      (started > 0 && ((options_.gate_streams > 0 && started >= options_.gate_streams) ||
                       Clock::now() >= gate_deadline_));
  if (open) gate_open_.store(true);
  return open;
}

void SseUpstream::Tick(int slot) {
  if (started_.load() == 0 || !GateOpen()) return;
  std::vector<Conn*> due;
  for (auto& [fd, conn] : conns_) {
    if (conn->sent >= 1 && conn->slot == slot) due.push_back(conn.get());
  }
  for (Conn* conn : due) {
    // The state is updated first: a failed write drops (destroys) the connection.
    if (conn->sent < options_.events) {
      const int index = conn->sent++;
      Send(*conn, Chunk(Event(index)));
    } else {
      conn->sent = -1;  // the next request may come on this connection
      finished_.fetch_add(1);
      Send(*conn, Chunk("data: [DONE]\n\n") + "0\r\n\r\n");
    }
  }
}

std::string SseUpstream::Event(int index) const {
  const bool last = index == options_.events - 1;
  return fmt::format(
      "data: {{\"id\":\"{}\",\"object\":\"text_completion\",\"created\":1700000000,"
      "\"model\":\"{}\",\"choices\":[{{\"index\":0,\"text\":\" token{}\",\"logprobs\":null,"
      "\"finish_reason\":{}}}]}}\n\n",
      options_.id, options_.model, index, last ? "\"length\"" : "null");
}

void SseUpstream::Send(Conn& conn, std::string bytes) {
  conn.out += bytes;
  Flush(conn);
}

bool SseUpstream::Flush(Conn& conn) {
  while (!conn.out.empty()) {
    const ssize_t n = send(conn.fd, conn.out.data(), conn.out.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) {
      Drop(conn);
      return false;
    }
    conn.out.erase(0, static_cast<size_t>(n));
  }
  const bool want_write = !conn.out.empty();
  if (want_write != conn.want_write) {
    conn.want_write = want_write;
    epoll_event event{};
    event.events = want_write ? EPOLLIN | EPOLLOUT : EPOLLIN;
    event.data.fd = conn.fd;
    epoll_ctl(epoll_, EPOLL_CTL_MOD, conn.fd, &event);
  }
  return true;
}

void SseUpstream::Drop(Conn& conn) {
  if (conn.sent >= 0) aborted_.fetch_add(1);
  const int fd = conn.fd;
  epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
  close(fd);
  open_connections_.fetch_sub(1);
  conns_.erase(fd);  // destroys `conn`
}

}  // namespace aibrix::testing
