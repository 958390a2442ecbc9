#include "aibrix/http/client.h"

#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <type_traits>
#include <vector>

#include "aibrix/common/net.h"
#include "fmt/format.h"

namespace aibrix::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

// A Beast body that appends whatever the parser decodes to a string: the call's own, which it
// drains after every read, so a body of any size streams through in bounded memory (and
// nothing is reserved from Content-Length), or the observer's BodyTarget.
struct SinkBody {
  struct value_type {
    std::string own;
    std::string* target = nullptr;  // the observer's string, else `own`
    size_t appended = 0;            // bytes appended since the call last looked
  };
  class reader {
   public:
    template <bool isRequest, class Fields>
    reader(beast::http::header<isRequest, Fields>&, value_type& body) : body_(body) {}
    void init(const boost::optional<std::uint64_t>&, error_code& ec) { ec = {}; }
    template <class ConstBufferSequence>
    std::size_t put(const ConstBufferSequence& buffers, error_code& ec) {
      std::string& out = body_.target != nullptr ? *body_.target : body_.own;
      size_t n = 0;
      for (const auto buffer : beast::buffers_range_ref(buffers)) {
        out.append(static_cast<const char*>(buffer.data()), buffer.size());
        n += buffer.size();
      }
      body_.appended += n;
      ec = {};
      return n;
    }
    void finish(error_code& ec) { ec = {}; }

   private:
    value_type& body_;
  };
};

using ResponseParser = beast::http::response_parser<SinkBody>;

// A pooled connection keeps a read buffer of up to this size (or read_buffer_bytes).
constexpr size_t kPooledBufferBytes = 16 << 10;

}  // namespace

std::string_view ClientErrorName(ClientError error) {
  switch (error) {
    case ClientError::kNone:
      return "none";
    case ClientError::kConnect:
      return "connect";
    case ClientError::kSendReset:
      return "send_reset";
    case ClientError::kTimeout:
      return "timeout";
    case ClientError::kReset:
      return "reset";
    case ClientError::kBadResponse:
      return "bad_response";
    case ClientError::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

using Socket = beast::tcp_stream::socket_type;

// Idle keep-alive connections per (I/O thread, address), each with its call's read buffer
// (empty; its memory serves the next call on the connection). The sockets stay registered
// with their io_context's reactor, so reusing one costs no system call; they are therefore
// closed only on that io_context's thread (Take and Put run there; Sweep and the destructor
// post the closing to it) or while it shuts down: a Guard service of each io_context the pool
// holds connections of drops them then, before the reactor goes.
class Client::Pool {
 public:
  struct Idle {
    Socket socket;
    beast::flat_buffer buffer;
    std::chrono::steady_clock::time_point since{};
  };
  explicit Pool(size_t max_per_key) : max_per_key_(max_per_key) {}
  ~Pool();
  // A pooled connection the peer has not closed, if any. On `io`'s thread.
  std::optional<Idle> Take(asio::io_context& io, const std::string& address);
  // Pools `idle` (or closes it when the address has max_per_key). On `io`'s thread.
  void Put(asio::io_context& io, const std::string& address, Idle idle);
  // Closes connections idle since before `cutoff`; returns how many. Any thread.
  size_t CloseIdleSince(std::chrono::steady_clock::time_point cutoff);

 private:
  class Guard;
  // `io` shuts down: its connections are closed now.
  void Drop(asio::io_context* io);
  // Closes `idle` on `io`'s thread (or as `io` shuts down, if it no longer runs).
  static void CloseOn(asio::io_context& io, std::vector<Idle> idle) {
    asio::post(io, [idle = std::move(idle)]() mutable { idle.clear(); });
  }

  const size_t max_per_key_;
  common::Mutex mu_;
  std::map<std::pair<asio::io_context*, std::string>, std::vector<Idle>> idle_ ABSL_GUARDED_BY(mu_);
  std::vector<asio::io_context*> guarded_ ABSL_GUARDED_BY(mu_);  // whose Guard knows the pool
};

// An io_context's service (shut down before its reactor): drops the io_context's pooled
// connections of every pool that holds some.
class Client::Pool::Guard : public asio::execution_context::service {
 public:
  inline static asio::execution_context::id id;
  explicit Guard(asio::execution_context& context) : service(context) {}
  void Add(Pool* pool) {
    common::MutexLock lock(&mu_);
    pools_.push_back(pool);
  }
  void Remove(Pool* pool) {
    common::MutexLock lock(&mu_);
    std::erase(pools_, pool);
  }

 private:
  void shutdown() override {
    std::vector<Pool*> pools;
    {
      common::MutexLock lock(&mu_);
      pools.swap(pools_);
    }
    // Only io_contexts use this service.
    auto* io = static_cast<asio::io_context*>(&context());
    for (Pool* pool : pools) pool->Drop(io);
  }

  common::Mutex mu_;
  std::vector<Pool*> pools_ ABSL_GUARDED_BY(mu_);
};

Client::Pool::~Pool() {
  std::map<std::pair<asio::io_context*, std::string>, std::vector<Idle>> idle;
  std::vector<asio::io_context*> guarded;
  {
    common::MutexLock lock(&mu_);
    idle.swap(idle_);
    guarded.swap(guarded_);
  }
  for (asio::io_context* io : guarded) {
    asio::use_service<Guard>(static_cast<asio::execution_context&>(*io)).Remove(this);
  }
  for (auto& [key, list] : idle) CloseOn(*key.first, std::move(list));
}

std::optional<Client::Pool::Idle> Client::Pool::Take(asio::io_context& io,
                                                     const std::string& address) {
  common::MutexLock lock(&mu_);
  auto it = idle_.find({&io, address});
  while (it != idle_.end() && !it->second.empty()) {
    Idle idle = std::move(it->second.back());
    it->second.pop_back();
    char byte;
    const ssize_t n = ::recv(idle.socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return idle;
    // Closed, reset, or unexpected bytes: stale (closed as `idle` goes, on this thread).
  }
  return std::nullopt;
}

void Client::Pool::Put(asio::io_context& io, const std::string& address, Idle idle) {
  idle.since = std::chrono::steady_clock::now();
  bool first = false;
  {
    common::MutexLock lock(&mu_);
    auto& list = idle_[{&io, address}];
    if (list.size() >= max_per_key_) return;  // closed as `idle` goes, on this thread
    list.push_back(std::move(idle));
    if (std::find(guarded_.begin(), guarded_.end(), &io) == guarded_.end()) {
      guarded_.push_back(&io);
      first = true;
    }
  }
  // `io` runs this: it cannot be shutting down meanwhile.
  if (first) asio::use_service<Guard>(static_cast<asio::execution_context&>(io)).Add(this);
}

size_t Client::Pool::CloseIdleSince(std::chrono::steady_clock::time_point cutoff) {
  size_t closed = 0;
  std::vector<std::pair<asio::io_context*, std::vector<Idle>>> old;
  {
    common::MutexLock lock(&mu_);
    for (auto it = idle_.begin(); it != idle_.end();) {
      auto& list = it->second;  // the oldest are at the front
      const auto keep = std::find_if(list.begin(), list.end(),
                                     [&](const Idle& idle) { return idle.since >= cutoff; });
      if (keep != list.begin()) {
        old.emplace_back(it->first.first, std::vector<Idle>());
        std::move(list.begin(), keep, std::back_inserter(old.back().second));
        closed += static_cast<size_t>(keep - list.begin());
        list.erase(list.begin(), keep);
      }
      it = list.empty() ? idle_.erase(it) : std::next(it);
    }
  }
  for (auto& [io, list] : old) CloseOn(*io, std::move(list));
  return closed;
}

void Client::Pool::Drop(asio::io_context* io) {
  std::vector<Idle> dropped;  // closed as it goes, before the reactor shuts down
  common::MutexLock lock(&mu_);
  std::erase(guarded_, io);
  for (auto it = idle_.begin(); it != idle_.end();) {
    if (it->first.first != io) {
      ++it;
      continue;
    }
    std::move(it->second.begin(), it->second.end(), std::back_inserter(dropped));
    it = idle_.erase(it);
  }
}

namespace {

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// One call over a plain TCP stream (pooled) or a TLS stream (not pooled).
template <class Stream>
class Call : public ClientCall, public std::enable_shared_from_this<Call<Stream>> {
 public:
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

  Call(asio::io_context& io, Client::Pool& pool, const ClientOptions& options,
       ClientRequest request, std::shared_ptr<ResponseObserver> observer)
      : io_(io),
        pool_(pool),
        options_(options),
        request_(std::move(request)),
        observer_(std::move(observer)),
        stream_(MakeStream(io, request_)),
        total_(io),
        address_(common::FormatHostPort(request_.host, request_.port)) {}

  void Begin() {
    if (ended_) return;  // cancelled before the posted start ran: nothing to undo
    body_target_ = observer_->BodyTarget();
    total_.expires_after(options_.total_timeout);
    total_.async_wait([self = this->shared_from_this()](error_code ec) {
      if (!ec) self->End(ClientError::kTimeout, "no complete response within the deadline");
    });
    if constexpr (!kTls) {
      if (auto idle = pool_.Take(io_, address_)) {
        tcp_stream().socket() = std::move(idle->socket);
        buffer_ = std::move(idle->buffer);
        Send();
        return;
      }
    }
    error_code ec;
    const auto address = asio::ip::make_address(request_.host, ec);
    if (!ec) {
      Connect(tcp::endpoint(address, request_.port));
      return;
    }
    auto resolver = std::make_shared<tcp::resolver>(io_);
    tcp_stream().expires_after(options_.connect_timeout);
    resolver->async_resolve(
        request_.host, std::to_string(request_.port),
        [self = this->shared_from_this(), resolver](error_code ec,
                                                    const tcp::resolver::results_type& found) {
          if (self->ended_) return;
          if (ec || found.empty()) {
            self->End(ClientError::kConnect,
                      fmt::format("cannot resolve {}: {}", self->request_.host, ec.message()));
            return;
          }
          self->Connect(found.begin()->endpoint());
        });
  }

  void ReadMore() override {
    if (ended_ || reading_) return;
    reading_ = true;
    tcp_stream().expires_after(options_.idle_timeout);
    beast::http::async_read_some(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](error_code ec, size_t) { self->OnBody(ec); });
  }

  void Cancel() override { End(ClientError::kCancelled, "cancelled"); }

 private:
  static Stream MakeStream(asio::io_context& io, const ClientRequest& request) {
    if constexpr (kTls) {
      return Stream(io, *request.tls);
    } else {
      return Stream(io);
    }
  }

  beast::tcp_stream& tcp_stream() { return beast::get_lowest_layer(stream_); }

  void Connect(const tcp::endpoint& endpoint) {
    tcp_stream().expires_after(options_.connect_timeout);
    tcp_stream().async_connect(endpoint, [self = this->shared_from_this()](error_code ec) {
      if (self->ended_) return;
      if (ec) {
        self->End(ec == beast::error::timeout ? ClientError::kTimeout : ClientError::kConnect,
                  fmt::format("connect to {}: {}", self->address_, ec.message()));
        return;
      }
      error_code ignored;
      self->tcp_stream().socket().set_option(tcp::no_delay(true), ignored);
      if constexpr (kTls) {
        self->Handshake();
      } else {
        self->Send();
      }
    });
  }

  // TLS only: SNI for a host name, the certificate checked against the host (name or IP
  // address) when the context verifies peers, then the handshake within the connect deadline.
  void Handshake() {
    error_code ec;
    asio::ip::make_address(request_.host, ec);
    if (ec && !SSL_set_tlsext_host_name(stream_.native_handle(), request_.host.c_str())) {
      End(ClientError::kConnect, fmt::format("TLS to {}: cannot set the server name", address_));
      return;
    }
    stream_.set_verify_callback(asio::ssl::host_name_verification(request_.host), ec);
    if (ec) {
      End(ClientError::kConnect, fmt::format("TLS to {}: {}", address_, ec.message()));
      return;
    }
    stream_.async_handshake(
        asio::ssl::stream_base::client, [self = this->shared_from_this()](error_code ec) {
          if (self->ended_) return;
          if (ec) {
            self->End(ec == beast::error::timeout ? ClientError::kTimeout : ClientError::kConnect,
                      fmt::format("TLS handshake with {}: {}", self->address_, ec.message()));
            return;
          }
          self->Send();
        });
  }

  void Send() {
    head_ =
        fmt::format("{} {} HTTP/1.1\r\nHost: {}\r\n", request_.method, request_.target, address_);
    for (const auto& [name, value] : request_.headers.fields()) {
      if (EqualsIgnoreCase(name, "Host") || EqualsIgnoreCase(name, "Content-Length") ||
          EqualsIgnoreCase(name, "Connection") || EqualsIgnoreCase(name, "Transfer-Encoding")) {
        continue;
      }
      fmt::format_to(std::back_inserter(head_), "{}: {}\r\n", name, value);
    }
    fmt::format_to(std::back_inserter(head_),
                   "Content-Length: {}\r\nConnection: keep-alive\r\n\r\n", request_.body.size());
    buffer_.reserve(options_.read_buffer_bytes);  // no-op for a pooled connection's buffer
    parser_.emplace();
    parser_->get().body().target = body_target_;
    parser_->header_limit(static_cast<uint32_t>(options_.max_header_bytes));
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());  // streamed, not held
    tcp_stream().expires_after(options_.first_byte_timeout);
    const std::array<asio::const_buffer, 2> buffers{asio::buffer(head_),
                                                    asio::buffer(request_.body)};
    asio::async_write(stream_, buffers, [self = this->shared_from_this()](error_code ec, size_t n) {
      if (self->ended_) return;
      if (ec) {
        if (ec == beast::error::timeout) {
          self->End(ClientError::kTimeout, "timed out sending the request");
        } else {
          self->End(n == 0 ? ClientError::kSendReset : ClientError::kReset,
                    fmt::format("sending to {}: {}", self->address_, ec.message()));
        }
        return;
      }
      self->ReadHead();
    });
  }

  void ReadHead() {
    // The first-byte deadline set before the write still runs.
    beast::http::async_read_header(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](error_code ec, size_t) { self->OnHead(ec); });
  }

  ClientError Classify(const error_code& ec) const {
    if (ec == beast::error::timeout) return ClientError::kTimeout;
    if (ec.category() ==
            beast::http::make_error_code(beast::http::error::end_of_stream).category() &&
        ec != beast::http::error::end_of_stream && ec != beast::http::error::partial_message) {
      return ClientError::kBadResponse;
    }
    return ClientError::kReset;
  }

  void OnHead(const error_code& ec) {
    if (ended_) return;
    if (ec) {
      End(Classify(ec),
          fmt::format("reading the response head from {}: {}", address_, ec.message()));
      return;
    }
    Headers headers;
    for (const auto& field : parser_->get()) {
      headers.Add(std::string(field.name_string()), std::string(field.value()));
    }
    observer_->OnHead(static_cast<int>(parser_->get().result_int()), headers);
    if (ended_) return;
    if (parser_->is_done()) {
      Complete();
      return;
    }
    reading_ = false;
    ReadMore();
  }

  void OnBody(const error_code& ec) {
    reading_ = false;
    if (ended_) return;
    if (ec) {
      End(Classify(ec),
          fmt::format("reading the response body from {}: {}", address_, ec.message()));
      return;
    }
    auto& body = parser_->get().body();
    if (body.appended > 0) {
      std::string_view data;
      if (body.target != nullptr) {
        data = std::string_view(*body.target).substr(body.target->size() - body.appended);
      } else {
        chunk_.clear();
        chunk_.swap(body.own);  // both keep their capacity for the next reads
        data = chunk_;
      }
      body.appended = 0;
      observer_->OnBody(data);
      if (ended_) return;
      if (parser_->is_done()) Complete();
      return;  // the observer asks for more
    }
    if (parser_->is_done()) {
      Complete();
    } else {
      ReadMore();  // only framing arrived
    }
  }

  void Complete() {
    if constexpr (!kTls) {
      auto& socket = tcp_stream().socket();
      if (parser_->keep_alive() && buffer_.size() == 0 && socket.is_open()) {
        // A read the observer asked for after the last bytes must not go with the connection
        // (it would take the next call's response): it ends now, aborted.
        error_code ec;
        socket.cancel(ec);
        // The buffer goes with the connection unless a large response grew it.
        if (buffer_.capacity() > std::max<size_t>(options_.read_buffer_bytes, kPooledBufferBytes)) {
          buffer_.shrink_to_fit();
        }
        if (!ec) pool_.Put(io_, address_, {std::move(socket), std::move(buffer_)});
      }
    }
    End(ClientError::kNone, "");
  }

  void End(ClientError error, std::string_view detail) {
    if (ended_) return;
    ended_ = true;
    total_.cancel();
    // A read already completed may still be parsed: not into the observer's string.
    if (parser_) parser_->get().body().target = nullptr;
    if (error != ClientError::kNone || tcp_stream().socket().is_open()) {
      error_code ec;
      tcp_stream().socket().close(ec);
    }
    auto observer = std::move(observer_);
    observer->OnEnd(error, detail);
  }

  asio::io_context& io_;
  Client::Pool& pool_;
  const ClientOptions& options_;
  ClientRequest request_;
  std::shared_ptr<ResponseObserver> observer_;
  Stream stream_;
  asio::steady_timer total_;
  const std::string address_;
  beast::flat_buffer buffer_;
  std::optional<ResponseParser> parser_;
  std::string head_;
  std::string chunk_;                   // the body bytes handed to the observer
  std::string* body_target_ = nullptr;  // the observer's, if it takes the body in place
  bool ended_ = false;
  bool reading_ = false;
};

}  // namespace

Client::Client(ClientOptions options)
    : options_(options), pool_(std::make_unique<Pool>(options.max_idle_per_address)) {}

Client::~Client() = default;

size_t Client::Sweep() {
  return pool_->CloseIdleSince(std::chrono::steady_clock::now() - options_.max_idle);
}

std::shared_ptr<ClientCall> Client::Start(asio::io_context& io, ClientRequest request,
                                          std::shared_ptr<ResponseObserver> observer) {
  // Posted, never run inline: no callback runs before Start returns.
  if (request.tls) {
    auto call = std::make_shared<Call<TlsStream>>(io, *pool_, options_, std::move(request),
                                                  std::move(observer));
    asio::post(io, [call] { call->Begin(); });
    return call;
  }
  auto call = std::make_shared<Call<beast::tcp_stream>>(io, *pool_, options_, std::move(request),
                                                        std::move(observer));
  asio::post(io, [call] { call->Begin(); });
  return call;
}

}  // namespace aibrix::http
