#include "aibrix/http/server.h"

#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <charconv>
#include <cstring>
#include <deque>
#include <iterator>
#include <optional>
#include <unordered_set>

#include "aibrix/common/logging.h"
#include "aibrix/http/parser.h"
#include "fmt/format.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"

namespace aibrix::http {

namespace asio = boost::asio;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

namespace {

constexpr size_t kReadBufferBytes = 64 << 10;
// A connection's leftover buffer (pipelined or partial input) is shrunk back past this.
constexpr size_t kKeepBufferBytes = 16 << 10;
// Reads served for one connection before others get their turn on the thread.
constexpr int kReadsPerTurn = 16;
// Buffers gathered into one write.
constexpr size_t kMaxGather = 64;

// "Date: <IMF-fixdate>\r\n", formatted once per second per thread.
std::string_view DateLine() {
  thread_local time_t cached = 0;
  thread_local char line[64] = "";
  const time_t now = time(nullptr);
  if (now != cached) {
    cached = now;
    tm parts{};
    gmtime_r(&now, &parts);
    strftime(line, sizeof(line), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &parts);
  }
  return line;
}

enum class Framing { kLength, kChunked, kClose };

std::string ResponseHead(int status, const Headers& headers, Framing framing, uint64_t length,
                         bool keep_alive) {
  std::string head;
  head.reserve(192);
  char number[24];
  head += "HTTP/1.1 ";
  head.append(number, static_cast<size_t>(std::to_chars(number, number + 24, status).ptr - number));
  head += ' ';
  head += ReasonPhrase(status);
  head += "\r\n";
  for (const auto& [name, value] : headers.fields()) {
    if (EqualsIgnoreCase(name, "Content-Length") || EqualsIgnoreCase(name, "Connection") ||
        EqualsIgnoreCase(name, "Transfer-Encoding") || EqualsIgnoreCase(name, "Date")) {
      continue;
    }
    head += name;
    head += ": ";
    head += value;
    head += "\r\n";
  }
  head += DateLine();
  if (framing == Framing::kLength) {
    head += "Content-Length: ";
    head.append(number,
                static_cast<size_t>(std::to_chars(number, number + 24, length).ptr - number));
    head += "\r\n";
  } else if (framing == Framing::kChunked) {
    head += "Transfer-Encoding: chunked\r\n";
  }
  head += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  return head;
}

std::string ErrorBody(int status, std::string_view message) {
  Response res;
  SendError(res, status, message);
  return std::move(res.body);
}

}  // namespace

class Connection;

// One I/O thread: its context, its connections and its read buffer.
struct IoThread {
  asio::io_context io{1};
  asio::steady_timer sweep{io};                                 // ticks the connections' deadlines
  std::unordered_set<std::shared_ptr<Connection>> connections;  // owned by this thread
  std::unique_ptr<char[]> buffer = std::make_unique<char[]>(kReadBufferBytes);
  std::thread thread;
};

struct RouteEntry {
  AsyncHandler handler;
  prometheus::Histogram* latency;
  prometheus::Counter* ok;
};

class Server::Impl {
 public:
  Impl(ServerOptions options, prometheus::Registry& registry)
      : options(std::move(options)),
        requests(prometheus::BuildCounter()
                     .Name("aibrix_cache_http_requests_total")
                     .Help("HTTP requests answered, by route and status code")
                     .Register(registry)),
        latency(prometheus::BuildHistogram()
                    .Name("aibrix_cache_http_request_duration_seconds")
                    .Help("HTTP request time from its last byte to its last response byte")
                    .Register(registry)),
        connections_gauge(prometheus::BuildGauge()
                              .Name("aibrix_cache_http_connections")
                              .Help("Open HTTP connections")
                              .Register(registry)
                              .Add({})),
        closed(prometheus::BuildCounter()
                   .Name("aibrix_cache_http_connections_closed_total")
                   .Help("HTTP connections closed by the server before the client, by reason")
                   .Register(registry)) {}

  void Count(const std::string& route, int status) {
    requests.Add({{"route", route}, {"code", std::to_string(status)}}).Increment();
  }
  void CountClosed(const char* reason) { closed.Add({{"reason", reason}}).Increment(); }

  void Accept();
  // Checks `thread`'s connections' deadlines every `tick` until stopped.
  void Sweep(IoThread& thread, std::chrono::milliseconds tick);
  void CloseAll(IoThread& thread);

  const ServerOptions options;
  Router router;
  std::vector<RouteEntry> routes;
  absl::Status route_error;

  std::vector<std::unique_ptr<IoThread>> threads;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  std::optional<tcp::acceptor> acceptor;
  size_t next_thread = 0;  // owned by the accepting thread

  std::atomic<bool> draining{false};
  std::atomic<bool> stopped{false};
  std::atomic<size_t> open{0};
  std::atomic<size_t> in_flight{0};

  prometheus::Family<prometheus::Counter>& requests;
  prometheus::Family<prometheus::Histogram>& latency;
  prometheus::Gauge& connections_gauge;
  prometheus::Family<prometheus::Counter>& closed;
  common::RateLimiter accept_log;
};

class ExchangeImpl;
class StreamWriterImpl;

// One client connection, driven on its I/O thread only (every method below runs there).
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Server::Impl& server, IoThread& thread, tcp::socket socket)
      : server_(server),
        thread_(thread),
        socket_(std::move(socket)),
        write_deadline_(Clock::time_point::max()) {}

  void Start(bool over_capacity);
  // Closes now: cancels the exchange (if any) and drops the connection.
  void Cut(const char* reason);
  bool idle() const { return state_ == State::kIdle && pending_.empty(); }

  // Called by ExchangeImpl / StreamWriterImpl on this thread.
  void Answer(ExchangeImpl& exchange, Response response);
  void BeginStream(ExchangeImpl& exchange, int status, const Headers& headers,
                   std::optional<uint64_t> length);
  void StreamWrite(std::string data, std::function<void(bool)> on_ready);
  void StreamEnd(bool clean);
  asio::io_context& io() { return thread_.io; }

 private:
  enum class State { kIdle, kHead, kBody, kHandling, kResponding, kLinger, kClosed };

  void WaitReadable();
  void OnReadable();
  void Feed(std::string_view data);
  void Advance(std::string_view& in);
  void BeginRequest(RequestHead head, std::string_view& in);
  void Dispatch();
  void Fail(int status, std::string_view message);
  void SetDeadline(std::chrono::milliseconds after, const char* reason);
  void ClearDeadline() { deadline_ = Clock::time_point::max(); }

 public:
  // Called by the thread's deadline sweep: acts on a passed read or write deadline.
  void CheckDeadlines(Clock::time_point now);
  bool Expired(Clock::time_point now) const {
    return deadline_ <= now || (writing_ && write_deadline_ <= now);
  }

 private:
  // Enqueue adds to the write queue; Queue also starts writing it.
  void Enqueue(std::string bytes);
  void Queue(std::string bytes);
  void Flush();
  void OnWritten();
  void FinishExchange(int status);
  void NextRequest();
  void LingerClose();
  void Drain();
  void Close();

  Server::Impl& server_;
  IoThread& thread_;
  tcp::socket socket_;
  // Deadlines are plain times checked by the thread's sweep (no timer per connection: no
  // timer syscalls or heap updates per request).
  Clock::time_point deadline_ = Clock::time_point::max();  // reads: idle, head, body, linger
  const char* deadline_reason_ = "idle";
  Clock::time_point write_deadline_;  // while writing_: a client that takes none of our bytes
  State state_ = State::kIdle;
  bool waiting_read_ = false;
  bool last_read_full_ = false;  // the last read filled its buffer: more may be waiting
  bool keep_alive_ = true;
  std::string pending_;  // received, not yet consumed
  std::string remote_addr_;

  // The request being read.
  std::unique_ptr<Request> request_;
  uint64_t body_length_ = 0;
  uint64_t body_got_ = 0;
  std::optional<ChunkedDecoder> chunked_;
  size_t discard_left_ = 0;  // lingering: bytes still read and dropped

  // The exchange being answered.
  std::shared_ptr<ExchangeImpl> exchange_;
  Clock::time_point started_;
  bool head_only_ = false;  // HEAD: no body bytes
  Framing framing_ = Framing::kLength;
  bool response_done_ = false;  // the whole response is queued
  bool abort_after_ = false;    // close (uncleanly) once the queue is written
  int status_ = 0;

  // The write queue.
  std::deque<std::string> out_;
  size_t out_bytes_ = 0;
  bool writing_ = false;
  std::function<void(bool)> on_ready_;  // a stream writer waiting for room
};

class ExchangeImpl : public Exchange, public std::enable_shared_from_this<ExchangeImpl> {
 public:
  ExchangeImpl(std::shared_ptr<Connection> connection, std::unique_ptr<Request> request,
               size_t route)
      : connection_(std::move(connection)), request_(std::move(request)), route_(route) {}
  const Request& request() const override { return *request_; }
  void Respond(Response response) override {
    if (answered_.exchange(true)) return;
    asio::dispatch(connection_->io(),
                   [self = shared_from_this(), res = std::move(response)]() mutable {
                     self->connection_->Answer(*self, std::move(res));
                   });
  }
  std::shared_ptr<StreamWriter> Stream(int status, Headers headers,
                                       std::optional<uint64_t> content_length) override;
  void OnCancel(std::function<void()> callback) override {
    asio::dispatch(connection_->io(),
                   [self = shared_from_this(), cb = std::move(callback)]() mutable {
                     if (self->cancelled_) {
                       cb();
                     } else {
                       self->on_cancel_ = std::move(cb);
                     }
                   });
  }
  void Run(std::function<void()> task) override {
    asio::dispatch(connection_->io(), std::move(task));
  }
  asio::io_context& io() override { return connection_->io(); }
  // On the I/O thread, once the answer is complete: breaks the owner <-> callback cycle.
  void ClearCancel() { on_cancel_ = nullptr; }

  // On the I/O thread: the client is gone or the server cut the connection.
  void Cancel() {
    if (cancelled_) return;
    cancelled_ = true;
    answered_.store(true);
    if (auto cb = std::move(on_cancel_)) cb();
  }
  size_t route() const { return route_; }
  void MarkAnswered() { answered_.store(true); }

 private:
  std::shared_ptr<Connection> connection_;
  std::unique_ptr<Request> request_;
  const size_t route_;
  std::atomic<bool> answered_{false};
  bool cancelled_ = false;           // I/O thread
  std::function<void()> on_cancel_;  // I/O thread
};

class StreamWriterImpl : public StreamWriter {
 public:
  explicit StreamWriterImpl(std::shared_ptr<Connection> connection)
      : connection_(std::move(connection)) {}
  void Write(std::string data, std::function<void(bool)> on_ready) override {
    asio::dispatch(connection_->io(),
                   [c = connection_, data = std::move(data), cb = std::move(on_ready)]() mutable {
                     c->StreamWrite(std::move(data), std::move(cb));
                   });
  }
  void Finish() override {
    asio::dispatch(connection_->io(), [c = connection_] { c->StreamEnd(true); });
  }
  void Abort() override {
    asio::dispatch(connection_->io(), [c = connection_] { c->StreamEnd(false); });
  }

 private:
  std::shared_ptr<Connection> connection_;
};

std::shared_ptr<StreamWriter> ExchangeImpl::Stream(int status, Headers headers,
                                                   std::optional<uint64_t> content_length) {
  if (answered_.exchange(true)) return nullptr;
  auto writer = std::make_shared<StreamWriterImpl>(connection_);
  asio::dispatch(connection_->io(), [self = shared_from_this(), status, h = std::move(headers),
                                     content_length]() mutable {
    self->connection_->BeginStream(*self, status, h, content_length);
  });
  return writer;
}

// --- Connection -------------------------------------------------------------------------

void Connection::Start(bool over_capacity) {
  error_code ec;
  const auto remote = socket_.remote_endpoint(ec);
  if (!ec) remote_addr_ = remote.address().to_string();
  socket_.set_option(tcp::no_delay(true), ec);
  socket_.non_blocking(true, ec);
  if (over_capacity) {
    server_.CountClosed("over_capacity");
    Fail(503, "the server is at its connection limit; retry later");
    return;
  }
  SetDeadline(server_.options.idle_timeout, "idle");
  WaitReadable();
}

void Connection::WaitReadable() {
  if (waiting_read_ || state_ == State::kClosed) return;
  waiting_read_ = true;
  socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](error_code ec) {
    self->waiting_read_ = false;
    if (ec || self->state_ == State::kClosed) return;
    self->OnReadable();
  });
}

void Connection::OnReadable() {
  if (state_ == State::kHandling || state_ == State::kResponding) {
    // No request is parsed while one is answered; readability means the client closed
    // (cancel the exchange), sent a stray CRLF (dropped, and the watch goes on), or sent its
    // next request (left in the socket and read after this answer; a close after it is
    // then noticed by the next write).
    char peek[64];
    const ssize_t n = ::recv(socket_.native_handle(), peek, sizeof(peek), MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      WaitReadable();
      return;
    }
    if (n <= 0) {
      Cut("client_gone");
      return;
    }
    const size_t blank = LeadingEmptyLines(std::string_view(peek, static_cast<size_t>(n)));
    if (blank == static_cast<size_t>(n)) {
      (void)::recv(socket_.native_handle(), peek, blank, MSG_DONTWAIT);
      WaitReadable();
      return;
    }
    last_read_full_ = true;  // stop watching: the rest is read after this answer
    return;
  }
  if (state_ == State::kLinger) {
    Drain();
    return;
  }
  // Asio's reactor is edge-triggered and an async_wait never reads speculatively: readiness
  // that arrived while no wait was pending is not reported again. So a wait is armed only
  // after a read found the socket empty, and a connection that stops reading early comes
  // back through this function (a read first), never straight to WaitReadable.
  for (int turn = 0; turn < kReadsPerTurn; ++turn) {
    const bool into_body = state_ == State::kBody && !chunked_;
    char* into = thread_.buffer.get();
    size_t room = kReadBufferBytes;
    if (into_body) {
      std::string& body = request_->body;
      if (body_got_ == body.size()) {
        // Grow as bytes arrive, never to Content-Length up front.
        const uint64_t grown = std::max<uint64_t>(body.size() * 2, body_got_ + kReadBufferBytes);
        body.resize(static_cast<size_t>(std::min(body_length_, grown)));
      }
      into = body.data() + body_got_;
      room = body.size() - body_got_;
    }
    error_code ec;
    const size_t n = socket_.read_some(asio::buffer(into, room), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) break;
    last_read_full_ = n == room;
    if (ec || n == 0) {
      // The client closed or reset: between requests that is the normal end.
      Close();
      return;
    }
    if (into_body) {
      body_got_ += n;
      SetDeadline(server_.options.body_timeout, "body");
      if (body_got_ == body_length_) {
        Dispatch();
        return;
      }
    } else {
      Feed(std::string_view(into, n));
      if (state_ != State::kIdle && state_ != State::kHead && state_ != State::kBody) return;
    }
    if (turn + 1 == kReadsPerTurn) {
      // Still readable: let the thread's other connections go first, then read again.
      asio::post(thread_.io, [self = shared_from_this()] {
        if (self->state_ != State::kClosed && !self->waiting_read_) self->OnReadable();
      });
      return;
    }
  }
  WaitReadable();
}

void Connection::Feed(std::string_view data) {
  std::string_view in = data;
  if (!pending_.empty()) {
    pending_.append(data);
    in = pending_;
  }
  Advance(in);
  if (state_ == State::kClosed || state_ == State::kLinger) {
    pending_.clear();  // an answered error: what follows is discarded
    return;
  }
  if (in.empty()) {
    pending_.clear();
  } else if (!pending_.empty() && in.data() >= pending_.data() &&
             in.data() < pending_.data() + pending_.size()) {
    pending_.erase(0, static_cast<size_t>(in.data() - pending_.data()));
  } else {
    pending_.assign(in);
  }
  if (pending_.capacity() > kKeepBufferBytes && pending_.size() <= kKeepBufferBytes) {
    pending_.shrink_to_fit();
  }
}

void Connection::Advance(std::string_view& in) {
  const ServerOptions& options = server_.options;
  while (true) {
    switch (state_) {
      case State::kIdle: {
        in.remove_prefix(LeadingEmptyLines(in));
        if (in.empty()) return;
        state_ = State::kHead;
        SetDeadline(options.head_timeout, "head");  // for the whole head, not per read
        continue;
      }
      case State::kHead: {
        const size_t size = RequestHeadSize(in);
        if (size == 0) {
          if (in.size() > options.max_head_bytes) {
            Fail(431, fmt::format("request head exceeds {} bytes", options.max_head_bytes));
          } else if (in.find('\n') == std::string_view::npos &&
                     in.size() > options.max_target_bytes + 32) {
            Fail(414, fmt::format("request target exceeds {} bytes", options.max_target_bytes));
          }
          return;
        }
        if (size > options.max_head_bytes) {
          Fail(431, fmt::format("request head exceeds {} bytes", options.max_head_bytes));
          return;
        }
        auto head = ParseRequestHead(in.substr(0, size));
        in.remove_prefix(size);
        if (!head.ok()) {
          Fail(400,
               std::string_view(head.status().message().data(), head.status().message().size()));
          return;
        }
        if (head->target.size() > options.max_target_bytes) {
          Fail(414, fmt::format("request target exceeds {} bytes", options.max_target_bytes));
          return;
        }
        BeginRequest(std::move(*head), in);
        if (state_ != State::kBody) return;
        continue;
      }
      case State::kBody: {
        if (chunked_) {
          auto used = chunked_->Feed(in, &request_->body);
          if (!used.ok()) {
            if (used.status().code() == absl::StatusCode::kOutOfRange) {
              Fail(413, fmt::format("request body exceeds the limit of {} bytes",
                                    options.max_body_bytes));
            } else {
              Fail(400, std::string_view(used.status().message().data(),
                                         used.status().message().size()));
            }
            return;
          }
          in.remove_prefix(*used);
          if (chunked_->done()) {
            Dispatch();
          } else {
            SetDeadline(options.body_timeout, "body");
          }
          return;
        }
        const size_t n =
            static_cast<size_t>(std::min<uint64_t>(body_length_ - body_got_, in.size()));
        std::string& body = request_->body;
        if (body.size() < body_got_ + n) body.resize(body_got_ + n);
        std::memcpy(body.data() + body_got_, in.data(), n);
        body_got_ += n;
        in.remove_prefix(n);
        if (body_got_ == body_length_) {
          Dispatch();
        } else {
          SetDeadline(options.body_timeout, "body");
        }
        return;
      }
      default:
        return;
    }
  }
}

void Connection::BeginRequest(RequestHead head, std::string_view& in) {
  const ServerOptions& options = server_.options;
  request_ = std::make_unique<Request>();
  Request& req = *request_;
  req.method = std::move(head.method);
  req.target = std::move(head.target);
  req.minor_version = head.minor_version;
  for (auto& [name, value] : head.headers) req.headers.Add(std::move(name), std::move(value));
  const size_t query = req.target.find('?');
  req.path = PercentDecode(std::string_view(req.target).substr(0, query));
  if (query != std::string::npos) req.query = req.target.substr(query + 1);
  req.remote_addr = remote_addr_;
  keep_alive_ = head.keep_alive && !server_.draining.load(std::memory_order_relaxed);
  body_got_ = 0;
  chunked_.reset();
  if (head.chunked) {
    chunked_.emplace(options.max_body_bytes);
    if (head.expect_continue) Queue("HTTP/1.1 100 Continue\r\n\r\n");
    state_ = State::kBody;
    SetDeadline(options.body_timeout, "body");
    return;
  }
  body_length_ = head.content_length.value_or(0);
  if (body_length_ > options.max_body_bytes) {
    Fail(413, fmt::format("request body exceeds the limit of {} bytes", options.max_body_bytes));
    return;
  }
  if (body_length_ == 0) {
    Dispatch();
    return;
  }
  if (head.expect_continue && in.size() < body_length_) Queue("HTTP/1.1 100 Continue\r\n\r\n");
  state_ = State::kBody;
  SetDeadline(options.body_timeout, "body");
}

void Connection::Dispatch() {
  state_ = State::kHandling;
  ClearDeadline();
  started_ = Clock::now();
  response_done_ = false;
  abort_after_ = false;
  Request& req = *request_;
  head_only_ = req.method == "HEAD";
  Router::Miss miss;
  const size_t query = req.target.find('?');
  auto match =
      server_.router.Find(req.method, std::string_view(req.target).substr(0, query), &miss);
  if (!match) {
    const int status = miss == Router::Miss::kWrongMethod ? 405 : 404;
    exchange_ = std::make_shared<ExchangeImpl>(shared_from_this(), std::move(request_), SIZE_MAX);
    exchange_->MarkAnswered();
    Response res;
    SendError(res, status,
              fmt::format("no route for {} {}", exchange_->request().method,
                          exchange_->request().path.substr(0, 256)));
    server_.in_flight.fetch_add(1);
    Answer(*exchange_, std::move(res));
    return;
  }
  req.params = std::move(match->params);
  exchange_ = std::make_shared<ExchangeImpl>(shared_from_this(), std::move(request_), match->route);
  server_.in_flight.fetch_add(1);
  WaitReadable();  // notices a client that goes away while we answer
  const RouteEntry& route = server_.routes[match->route];
  auto run = [exchange = exchange_, &route] {
    try {
      route.handler(exchange);
    } catch (const std::exception& e) {
      common::Logger("http")->error("{} {} failed: {}", exchange->request().method,
                                    exchange->request().path.substr(0, 256), e.what());
      Response res;
      SendError(res, 500, fmt::format("internal error: {}", e.what()));
      exchange->Respond(std::move(res));
    }
  };
  run();
}

void Connection::Answer(ExchangeImpl& exchange, Response response) {
  if (state_ == State::kClosed || exchange_.get() != &exchange) return;
  status_ = response.status;
  framing_ = Framing::kLength;
  std::string head = ResponseHead(response.status, response.headers, Framing::kLength,
                                  response.body.size(), keep_alive_);
  state_ = State::kResponding;
  response_done_ = true;
  if (head_only_ || response.body.empty()) {
    Queue(std::move(head));
  } else if (response.body.size() <= 4096) {
    head += response.body;
    Queue(std::move(head));
  } else {
    Enqueue(std::move(head));
    Queue(std::move(response.body));
  }
}

void Connection::BeginStream(ExchangeImpl& exchange, int status, const Headers& headers,
                             std::optional<uint64_t> length) {
  if (state_ == State::kClosed || exchange_.get() != &exchange) return;
  status_ = status;
  if (length) {
    framing_ = Framing::kLength;
  } else if (exchange.request().minor_version >= 1) {
    framing_ = Framing::kChunked;
  } else {
    framing_ = Framing::kClose;  // HTTP/1.0: the body ends when the connection does
    keep_alive_ = false;
  }
  state_ = State::kResponding;
  Queue(ResponseHead(status, headers, framing_, length.value_or(0), keep_alive_));
}

void Connection::StreamWrite(std::string data, std::function<void(bool)> on_ready) {
  if (state_ != State::kResponding || response_done_) {
    if (on_ready) on_ready(false);
    return;
  }
  if (!data.empty() && !head_only_) {
    if (framing_ == Framing::kChunked) {
      // Size line, data and CRLF leave in one write (one segment for a small SSE event).
      Enqueue(fmt::format("{:x}\r\n", data.size()));
      data += "\r\n";
    }
    Queue(std::move(data));
  }
  if (!on_ready) return;
  if (out_bytes_ < server_.options.stream_buffer_bytes) {
    on_ready(true);
  } else {
    on_ready_ = std::move(on_ready);
  }
}

void Connection::StreamEnd(bool clean) {
  if (state_ != State::kResponding || response_done_) return;
  response_done_ = true;
  if (!clean) {
    abort_after_ = true;
    keep_alive_ = false;
  } else if (framing_ == Framing::kChunked && !head_only_) {
    Queue("0\r\n\r\n");
  }
  if (!writing_) OnWritten();
}

void Connection::Enqueue(std::string bytes) {
  out_bytes_ += bytes.size();
  out_.push_back(std::move(bytes));
}

void Connection::Queue(std::string bytes) {
  Enqueue(std::move(bytes));
  Flush();
}

void Connection::Flush() {
  if (writing_ || out_.empty() || state_ == State::kClosed) return;
  writing_ = true;
  std::vector<asio::const_buffer> buffers;
  buffers.reserve(std::min(out_.size(), kMaxGather));
  for (size_t i = 0; i < out_.size() && i < kMaxGather; ++i)
    buffers.emplace_back(asio::buffer(out_[i]));
  write_deadline_ = Clock::now() + server_.options.write_timeout;
  asio::async_write(socket_, buffers,
                    [self = shared_from_this(), count = buffers.size()](error_code ec, size_t) {
                      self->writing_ = false;
                      if (self->state_ == State::kClosed) return;
                      if (ec) {
                        self->Cut("write_failed");
                        return;
                      }
                      for (size_t i = 0; i < count; ++i) {
                        self->out_bytes_ -= self->out_.front().size();
                        self->out_.pop_front();
                      }
                      self->OnWritten();
                    });
}

void Connection::OnWritten() {
  if (!out_.empty()) Flush();
  if (on_ready_ && out_bytes_ < server_.options.stream_buffer_bytes) {
    auto ready = std::move(on_ready_);
    on_ready_ = nullptr;
    ready(true);
    if (state_ == State::kClosed) return;
  }
  if (!out_.empty() || writing_) return;
  if (state_ == State::kLinger) {
    LingerClose();
    return;
  }
  if (state_ != State::kResponding || !response_done_) return;
  FinishExchange(status_);
  if (abort_after_) {
    Close();
  } else if (keep_alive_ && framing_ != Framing::kClose) {
    NextRequest();
  } else {
    state_ = State::kLinger;
    discard_left_ = server_.options.max_discard_bytes;
    LingerClose();
  }
}

void Connection::FinishExchange(int status) {
  if (!exchange_) return;
  const size_t route = exchange_->route();
  if (route == SIZE_MAX) {
    server_.Count("unmatched", status);
  } else {
    const RouteEntry& entry = server_.routes[route];
    entry.latency->Observe(std::chrono::duration<double>(Clock::now() - started_).count());
    if (status == 200) {
      entry.ok->Increment();
    } else {
      server_.Count(server_.router.pattern(route), status);
    }
  }
  exchange_->ClearCancel();
  exchange_.reset();
  server_.in_flight.fetch_sub(1);
}

void Connection::NextRequest() {
  state_ = State::kIdle;
  request_.reset();
  if (server_.draining.load(std::memory_order_relaxed) && pending_.empty()) {
    Close();
    return;
  }
  SetDeadline(server_.options.idle_timeout, "idle");
  if (!pending_.empty()) {
    std::string pipelined = std::move(pending_);
    pending_.clear();
    Feed(pipelined);
    if (state_ != State::kIdle && state_ != State::kHead && state_ != State::kBody) return;
  }
  if (waiting_read_ && !last_read_full_) {
    // The wait armed when the request was dispatched has seen nothing since the last read,
    // which emptied the socket: it will report the next request.
    return;
  }
  // The next request may already be in the socket (its readiness seen while answering, or
  // left behind by a read that filled its buffer): read first.
  OnReadable();
}

void Connection::Fail(int status, std::string_view message) {
  server_.Count("unmatched", status);
  keep_alive_ = false;
  state_ = State::kLinger;
  discard_left_ = server_.options.max_discard_bytes;
  request_.reset();
  chunked_.reset();
  pending_.clear();
  pending_.shrink_to_fit();
  const std::string body = ErrorBody(status, message);
  Headers headers;
  headers.Set("Content-Type", "application/json");
  Queue(ResponseHead(status, headers, Framing::kLength, body.size(), false) + body);
  // Keep reading (and dropping) what the client still sends while the answer goes out, so
  // closing does not reset the connection before the client has read it.
  SetDeadline(server_.options.linger_timeout, "linger");
  WaitReadable();
}

void Connection::LingerClose() {
  error_code ec;
  socket_.shutdown(tcp::socket::shutdown_send, ec);
  if (ec) {
    Close();
    return;
  }
  SetDeadline(server_.options.linger_timeout, "linger");
  WaitReadable();
}

void Connection::Drain() {
  while (true) {
    error_code ec;
    const size_t n = socket_.read_some(asio::buffer(thread_.buffer.get(), kReadBufferBytes), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) break;
    if (ec || n == 0 || n >= discard_left_) {
      if (!writing_ && out_.empty()) {
        Close();
      } else {
        discard_left_ = 0;  // the answer is still going out; stop reading
      }
      return;
    }
    discard_left_ -= n;
  }
  WaitReadable();
}

void Connection::SetDeadline(std::chrono::milliseconds after, const char* reason) {
  deadline_ = Clock::now() + after;
  deadline_reason_ = reason;
}

void Connection::CheckDeadlines(Clock::time_point now) {
  if (state_ == State::kClosed) return;
  if (writing_ && write_deadline_ <= now) {
    Cut("write_timeout");
    return;
  }
  if (deadline_ > now) return;
  ClearDeadline();
  switch (state_) {
    case State::kHead:
    case State::kBody:
      server_.CountClosed(deadline_reason_);
      Fail(408, fmt::format("request {} not received in time", deadline_reason_));
      break;
    case State::kIdle:
      server_.CountClosed("idle");
      Close();
      break;
    case State::kLinger:
      Close();
      break;
    default:
      break;
  }
}

void Connection::Cut(const char* reason) {
  if (state_ == State::kClosed) return;
  server_.CountClosed(reason);
  if (exchange_) {
    auto exchange = exchange_;
    exchange->Cancel();  // before FinishExchange drops the callback
    FinishExchange(status_ == 0 ? 499 : status_);
  }
  if (on_ready_) {
    auto ready = std::move(on_ready_);
    on_ready_ = nullptr;
    ready(false);
  }
  Close();
}

void Connection::Close() {
  if (state_ == State::kClosed) return;
  if (exchange_) {
    auto exchange = exchange_;
    exchange->Cancel();
    FinishExchange(status_ == 0 ? 499 : status_);
  }
  state_ = State::kClosed;
  error_code ec;
  ClearDeadline();
  socket_.close(ec);
  out_.clear();
  out_bytes_ = 0;
  server_.open.fetch_sub(1);
  server_.connections_gauge.Decrement();
  thread_.connections.erase(shared_from_this());
}

// --- Server -----------------------------------------------------------------------------

void Server::Impl::Accept() {
  IoThread& target = *threads[next_thread];
  next_thread = (next_thread + 1) % threads.size();
  acceptor->async_accept(target.io, [this, &target](error_code ec, tcp::socket socket) {
    if (stopped.load() || draining.load() || !acceptor->is_open()) return;
    if (ec) {
      common::WarnLimited(accept_log, "http", "accept failed: {}", ec.message());
      // Out of file descriptors: wait a little instead of spinning.
      auto timer =
          std::make_shared<asio::steady_timer>(threads[0]->io, std::chrono::milliseconds(50));
      timer->async_wait([this, timer](error_code) { Accept(); });
      return;
    }
    const bool over = open.fetch_add(1) >= options.max_connections;
    connections_gauge.Increment();
    asio::post(target.io, [this, &target, socket = std::move(socket), over]() mutable {
      auto connection = std::make_shared<Connection>(*this, target, std::move(socket));
      target.connections.insert(connection);
      connection->Start(over);
    });
    Accept();
  });
}

void Server::Impl::Sweep(IoThread& thread, std::chrono::milliseconds tick) {
  thread.sweep.expires_after(tick);
  thread.sweep.async_wait([this, &thread, tick](error_code ec) {
    if (ec || stopped.load()) return;
    const Clock::time_point now = Clock::now();
    std::vector<std::shared_ptr<Connection>> due;
    for (const auto& connection : thread.connections) {
      if (connection->Expired(now)) due.push_back(connection);
    }
    for (const auto& connection : due) connection->CheckDeadlines(now);
    Sweep(thread, tick);
  });
}

void Server::Impl::CloseAll(IoThread& thread) {
  thread.sweep.cancel();
  std::vector<std::shared_ptr<Connection>> all(thread.connections.begin(),
                                               thread.connections.end());
  for (const auto& connection : all) connection->Cut("shutdown");
}

Server::Server(ServerOptions options, prometheus::Registry& registry)
    : impl_(std::make_unique<Impl>(std::move(options), registry)) {}

Server::~Server() { Stop(); }

void Server::Route(std::string_view method, std::string_view pattern, Handler handler) {
  RouteAsync(method, pattern, [handler = std::move(handler)](std::shared_ptr<Exchange> exchange) {
    Response res;
    handler(exchange->request(), res);
    exchange->Respond(std::move(res));
  });
}

void Server::RouteAsync(std::string_view method, std::string_view pattern, AsyncHandler handler) {
  if (auto st = impl_->router.Add(method, pattern); !st.ok()) {
    impl_->route_error.Update(st);
    return;
  }
  static const prometheus::Histogram::BucketBoundaries kBuckets{
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30};
  const std::string route(pattern);
  impl_->routes.push_back(RouteEntry{std::move(handler),
                                     &impl_->latency.Add({{"route", route}}, kBuckets),
                                     &impl_->requests.Add({{"route", route}, {"code", "200"}})});
}

absl::Status Server::Start() {
  Impl& impl = *impl_;
  if (!impl.route_error.ok()) return impl.route_error;
  // Once only: after a failed start the I/O contexts stay (unused) until destruction, as the
  // objects created on them during the attempt are destroyed first.
  if (!impl.threads.empty()) return absl::FailedPreconditionError("Start may be called once");
  const int io_threads = impl.options.io_threads > 0
                             ? impl.options.io_threads
                             : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  for (int i = 0; i < io_threads; ++i) impl.threads.push_back(std::make_unique<IoThread>());
  error_code ec;
  const auto address = asio::ip::make_address(impl.options.host, ec);
  tcp::endpoint endpoint;
  if (ec) {
    tcp::resolver resolver(impl.threads[0]->io);
    auto found = resolver.resolve(impl.options.host, std::to_string(impl.options.port),
                                  tcp::resolver::passive | tcp::resolver::numeric_service, ec);
    if (ec || found.empty()) {
      return absl::UnavailableError(
          fmt::format("cannot resolve listen address {}", impl.options.host));
    }
    endpoint = found.begin()->endpoint();
  } else {
    endpoint = tcp::endpoint(address, static_cast<uint16_t>(impl.options.port));
  }
  tcp::acceptor acceptor(impl.threads[0]->io);
  acceptor.open(endpoint.protocol(), ec);
  // SO_REUSEADDR only: SO_REUSEPORT would let a second process bind the port silently.
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(fmt::format("cannot listen on {}:{}: {}", impl.options.host,
                                              impl.options.port, ec.message()));
  }
  const tcp::endpoint bound = acceptor.local_endpoint(ec);
  if (ec) return absl::UnavailableError(fmt::format("listening socket: {}", ec.message()));
  port_ = bound.port();
  impl.acceptor.emplace(std::move(acceptor));
  // Deadlines are checked at an eighth of the shortest one (10 ms to 250 ms).
  const auto shortest =
      std::min({impl.options.head_timeout, impl.options.body_timeout, impl.options.idle_timeout,
                impl.options.write_timeout, impl.options.linger_timeout});
  const auto tick =
      std::clamp(shortest / 8, std::chrono::milliseconds(10), std::chrono::milliseconds(250));
  for (auto& thread : impl.threads) {
    asio::post(thread->io, [&impl, t = thread.get(), tick] { impl.Sweep(*t, tick); });
    impl.guards.push_back(asio::make_work_guard(thread->io));
    thread->thread = std::thread([io = &thread->io] {
      // A handler that throws must not end the thread (and with it its connections).
      while (true) {
        try {
          io->run();
          return;
        } catch (const std::exception& e) {
          common::Logger("http")->error("I/O thread: uncaught exception: {}", e.what());
        }
      }
    });
  }
  asio::post(impl.threads[0]->io, [&impl] { impl.Accept(); });
  return absl::OkStatus();
}

void Server::BeginShutdown() {
  Impl& impl = *impl_;
  if (!impl.acceptor || impl.draining.exchange(true)) return;
  asio::post(impl.threads[0]->io, [&impl] {
    error_code ec;
    impl.acceptor->close(ec);
  });
  // Idle keep-alive connections are closed now; busy ones after their answer.
  for (auto& thread : impl.threads) {
    asio::post(thread->io, [t = thread.get()] {
      std::vector<std::shared_ptr<Connection>> idle;
      for (const auto& c : t->connections) {
        if (c->idle()) idle.push_back(c);
      }
      for (const auto& c : idle) c->Cut("shutdown_idle");
    });
  }
}

void Server::Stop(std::chrono::milliseconds grace) {
  Impl& impl = *impl_;
  if (!impl.acceptor || impl.stopped.load()) return;
  BeginShutdown();
  const auto until = Clock::now() + grace;
  while (impl.in_flight.load() > 0 && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  impl.stopped.store(true);
  for (auto& thread : impl.threads) {
    asio::post(thread->io, [&impl, t = thread.get()] { impl.CloseAll(*t); });
  }
  // Without work guards each thread returns once the cut connections' callbacks (cancelled
  // upstream calls settling their requests) have run; anything still pending after a bound
  // is stopped.
  impl.guards.clear();
  const auto hard_stop = Clock::now() + std::chrono::seconds(2);
  while (Clock::now() < hard_stop && std::any_of(impl.threads.begin(), impl.threads.end(),
                                                 [](const auto& t) { return !t->io.stopped(); })) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  for (auto& thread : impl.threads) {
    thread->io.stop();
    if (thread->thread.joinable()) thread->thread.join();
  }
}

size_t Server::open_connections() const { return impl_->open.load(); }
size_t Server::in_flight() const { return impl_->in_flight.load(); }

}  // namespace aibrix::http
