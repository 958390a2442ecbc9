#include "tests/util/h2_envoy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "fmt/format.h"

namespace aibrix::testing {

namespace {

using Clock = std::chrono::steady_clock;
using ext_proc_v3_Request = envoy::service::ext_proc::v3::ProcessingRequest;
using ext_proc_v3_Response = envoy::service::ext_proc::v3::ProcessingResponse;

// gRPC's length-prefixed message: flag byte 0 (uncompressed), 4-byte big-endian length.
std::string FrameMessage(const ext_proc_v3_Request& message) {
  const std::string payload = message.SerializeAsString();
  std::string framed(5, '\0');
  const uint32_t length = htonl(static_cast<uint32_t>(payload.size()));
  std::memcpy(framed.data() + 1, &length, 4);
  return framed + payload;
}

// How long the connection may be silent while exchanges are in flight.
constexpr int kSilenceMs = 10000;

// Where an exchange is: which reply it waits for.
enum class Step { kHeadersReply, kBodyReply, kResponseHeadersReply, kChunkReplies };

struct StreamState {
  const H2Exchange* exchange = nullptr;
  int32_t id = 0;
  Step step = Step::kHeadersReply;
  int chunk_replies = 0;
  std::deque<std::string_view> out;  // framed messages not yet taken by nghttp2
  bool half_close = false;           // END_STREAM once `out` is empty
  std::string in;                    // received bytes not yet a whole message
  std::string grpc_status;
  std::string grpc_message;
  std::string error;  // set on the first deviation
  Clock::time_point start;
};

}  // namespace

H2Exchange H2Exchange::Frame(const ext_proc_v3_Request& request_headers,
                             const ext_proc_v3_Request& request_body,
                             const ext_proc_v3_Request& response_headers,
                             const std::vector<ext_proc_v3_Request>& response_body) {
  H2Exchange exchange;
  exchange.request_headers = FrameMessage(request_headers);
  exchange.request_body = FrameMessage(request_body);
  exchange.response_headers = FrameMessage(response_headers);
  for (const auto& chunk : response_body) exchange.response_body += FrameMessage(chunk);
  exchange.response_body_chunks = static_cast<int>(response_body.size());
  return exchange;
}

class H2Envoy::Impl {
 public:
  explicit Impl(int fd) : fd_(fd) {
    nghttp2_session_callbacks* callbacks = nullptr;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, &Impl::OnData);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, &Impl::OnHeader);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, &Impl::OnClose);
    nghttp2_session_callbacks_set_send_callback(callbacks, &Impl::SendBytes);
    nghttp2_session_callbacks_set_send_data_callback(callbacks, &Impl::SendData);
    nghttp2_session_client_new(&session_, callbacks, this);
    nghttp2_session_callbacks_del(callbacks);
    // Large receive windows: the processor's answers are never held back by flow control.
    const nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                               {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 24}};
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, 2);
    nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, 1 << 30);
  }
  ~Impl() {
    nghttp2_session_del(session_);
    ::close(fd_);
  }

  H2RunResult Run(const std::vector<H2Exchange>& exchanges, int depth, int64_t count,
                  Clock::time_point until) {
    H2RunResult result;
    int64_t started = 0;
    size_t next = 0;
    auto start_more = [&] {
      while (static_cast<int>(streams_.size()) < depth && error_.empty() &&
             (count > 0 ? started < count : Clock::now() < until)) {
        Start(&exchanges[next]);
        next = (next + 1) % exchanges.size();
        ++started;
      }
    };
    start_more();
    while (!streams_.empty() && error_.empty()) {
      Flush();
      if (!error_.empty()) break;
      pollfd poller{fd_, static_cast<int16_t>(POLLIN | (pending_out() ? POLLOUT : 0)), 0};
      const int ready = ::poll(&poller, 1, kSilenceMs);
      if (ready == 0) {
        error_ = "no answer for 10 s";
        break;
      }
      if (ready < 0 && errno != EINTR) {
        error_ = fmt::format("poll: {}", std::strerror(errno));
        break;
      }
      if ((poller.revents & (POLLIN | POLLHUP | POLLERR)) != 0) Receive();
      for (StreamState* stream : ended_) {
        if (stream->error.empty()) {
          ++result.completed;
          result.micros.push_back(
              std::chrono::duration<double, std::micro>(Clock::now() - stream->start).count());
        } else {
          ++result.failed;
          if (result.first_error.empty()) result.first_error = stream->error;
        }
        streams_.erase(stream->id);
      }
      ended_.clear();
      start_more();
    }
    if (!error_.empty()) {  // the connection is unusable: every exchange in flight failed
      result.failed += static_cast<int64_t>(streams_.size());
      if (result.first_error.empty()) result.first_error = error_;
    }
    return result;
  }

 private:
  bool pending_out() const { return out_offset_ < out_.size(); }

  void Start(const H2Exchange* exchange) {
    static constexpr std::string_view kHeaders[][2] = {
        {":method", "POST"},
        {":scheme", "http"},
        {":path", "/envoy.service.ext_proc.v3.ExternalProcessor/Process"},
        {":authority", "ext-proc"},
        {"content-type", "application/grpc"},
        {"te", "trailers"}};
    nghttp2_nv nva[std::size(kHeaders)];
    for (size_t i = 0; i < std::size(kHeaders); ++i) {
      nva[i] = {reinterpret_cast<uint8_t*>(const_cast<char*>(kHeaders[i][0].data())),
                reinterpret_cast<uint8_t*>(const_cast<char*>(kHeaders[i][1].data())),
                kHeaders[i][0].size(), kHeaders[i][1].size(),
                NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
    }
    auto stream = std::make_unique<StreamState>();
    stream->exchange = exchange;
    stream->out.push_back(exchange->request_headers);
    stream->start = Clock::now();
    nghttp2_data_provider provider{};
    provider.source.ptr = stream.get();
    provider.read_callback = &Impl::ReadOut;
    const int32_t id = nghttp2_submit_request(session_, nullptr, nva, std::size(kHeaders),
                                              &provider, stream.get());
    if (id < 0) {
      error_ = fmt::format("submit_request: {}", nghttp2_strerror(id));
      return;
    }
    stream->id = id;
    streams_.emplace(id, std::move(stream));
  }

  // Queues `bytes` on `stream` (and END_STREAM after them when `half_close`).
  void Queue(StreamState* stream, std::string_view bytes, bool half_close = false) {
    if (!bytes.empty()) stream->out.push_back(bytes);
    stream->half_close |= half_close;
    nghttp2_session_resume_data(session_, stream->id);  // no-op error when not deferred
  }

  void Fail(StreamState* stream, std::string error) {
    if (!stream->error.empty()) return;
    stream->error = std::move(error);
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream->id, NGHTTP2_CANCEL);
  }

  // One whole answer from the processor.
  void OnReply(StreamState* stream, const ext_proc_v3_Response& reply) {
    const H2Exchange& exchange = *stream->exchange;
    switch (stream->step) {
      case Step::kHeadersReply:
        if (!reply.has_request_headers()) return Fail(stream, "expected the headers reply");
        stream->step = Step::kBodyReply;
        return Queue(stream, exchange.request_body);
      case Step::kBodyReply: {
        if (!reply.has_request_body()) return Fail(stream, "expected the body reply");
        bool routed = false;
        for (const auto& option : reply.request_body().response().header_mutation().set_headers()) {
          routed |= option.header().key() == "target-pod" && !option.header().raw_value().empty();
        }
        if (!routed) return Fail(stream, "the body reply names no target-pod");
        stream->step = Step::kResponseHeadersReply;
        return Queue(stream, exchange.response_headers);
      }
      case Step::kResponseHeadersReply:
        if (!reply.has_response_headers())
          return Fail(stream, "expected the response headers reply");
        stream->step = Step::kChunkReplies;
        return Queue(stream, exchange.response_body);  // streamed: all chunks at once
      case Step::kChunkReplies:
        if (!reply.has_response_body()) return Fail(stream, "expected a response body reply");
        if (++stream->chunk_replies == exchange.response_body_chunks) Queue(stream, {}, true);
        return;
    }
  }

  void OnBytes(StreamState* stream, const uint8_t* data, size_t length) {
    stream->in.append(reinterpret_cast<const char*>(data), length);
    size_t at = 0;
    while (stream->error.empty() && stream->in.size() - at >= 5) {
      uint32_t length_be = 0;
      std::memcpy(&length_be, stream->in.data() + at + 1, 4);
      const size_t size = ntohl(length_be);
      if (stream->in.size() - at - 5 < size) break;
      ext_proc_v3_Response reply;
      if (!reply.ParseFromArray(stream->in.data() + at + 5, static_cast<int>(size))) {
        Fail(stream, "an answer that is not a ProcessingResponse");
        break;
      }
      at += 5 + size;
      OnReply(stream, reply);
    }
    stream->in.erase(0, at);
  }

  void OnEnd(StreamState* stream, uint32_t error_code) {
    if (stream->error.empty()) {
      const bool answered = stream->step == Step::kChunkReplies &&
                            stream->chunk_replies == stream->exchange->response_body_chunks;
      if (stream->grpc_status != "0" || !answered) {
        stream->error = fmt::format(
            "stream ended with grpc-status '{}' ({}), HTTP/2 error {}, {} chunk replies",
            stream->grpc_status, stream->grpc_message, error_code, stream->chunk_replies);
      }
    }
    ended_.push_back(stream);
  }

  // nghttp2's frames into out_ (DATA payloads straight from the exchanges, one copy), then
  // as much of out_ as the socket takes.
  void Flush() {
    if (out_offset_ == out_.size()) {
      out_.clear();
      out_offset_ = 0;
    }
    if (const int rv = nghttp2_session_send(session_); rv != 0) {
      error_ = fmt::format("nghttp2 send: {}", nghttp2_strerror(rv));
      return;
    }
    while (pending_out()) {
      const ssize_t n =
          ::send(fd_, out_.data() + out_offset_, out_.size() - out_offset_, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        if (errno == EINTR) continue;
        error_ = fmt::format("send: {}", std::strerror(errno));
        return;
      }
      out_offset_ += static_cast<size_t>(n);
    }
  }

  void Receive() {
    for (;;) {
      const ssize_t n = ::recv(fd_, in_buffer_, sizeof(in_buffer_), 0);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        if (errno == EINTR) continue;
        error_ = fmt::format("recv: {}", std::strerror(errno));
        return;
      }
      if (n == 0) {
        error_ = "the processor closed the connection";
        return;
      }
      const ssize_t used = nghttp2_session_mem_recv(
          session_, reinterpret_cast<const uint8_t*>(in_buffer_), static_cast<size_t>(n));
      if (used < 0) {
        error_ = fmt::format("nghttp2 receive: {}", nghttp2_strerror(static_cast<int>(used)));
        return;
      }
    }
  }

  static StreamState* StreamOf(nghttp2_session* session, int32_t id) {
    return static_cast<StreamState*>(nghttp2_session_get_stream_user_data(session, id));
  }

  // How much of the stream's queue the next DATA frame carries; the bytes are taken by
  // SendData (NO_COPY).
  static ssize_t ReadOut(nghttp2_session*, int32_t, uint8_t*, size_t length, uint32_t* flags,
                         nghttp2_data_source* source, void*) {
    auto* stream = static_cast<StreamState*>(source->ptr);
    size_t queued = 0;
    for (std::string_view bytes : stream->out) queued += bytes.size();
    if (queued == 0 && !stream->half_close) return NGHTTP2_ERR_DEFERRED;
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (queued <= length && stream->half_close) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(std::min(queued, length));
  }

  static int SendData(nghttp2_session*, nghttp2_frame*, const uint8_t* frame_header, size_t length,
                      nghttp2_data_source* source, void* user) {
    auto* self = static_cast<Impl*>(user);
    auto* stream = static_cast<StreamState*>(source->ptr);
    self->out_.append(reinterpret_cast<const char*>(frame_header), 9);
    while (length > 0) {
      std::string_view& front = stream->out.front();
      const size_t n = std::min(length, front.size());
      self->out_.append(front.data(), n);
      length -= n;
      front.remove_prefix(n);
      if (front.empty()) stream->out.pop_front();
    }
    return 0;
  }

  static ssize_t SendBytes(nghttp2_session*, const uint8_t* data, size_t length, int, void* user) {
    static_cast<Impl*>(user)->out_.append(reinterpret_cast<const char*>(data), length);
    return static_cast<ssize_t>(length);
  }

  static int OnData(nghttp2_session* session, uint8_t, int32_t id, const uint8_t* data,
                    size_t length, void* user) {
    if (StreamState* stream = StreamOf(session, id)) {
      static_cast<Impl*>(user)->OnBytes(stream, data, length);
    }
    return 0;
  }

  static int OnHeader(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
                      size_t name_length, const uint8_t* value, size_t value_length, uint8_t,
                      void*) {
    StreamState* stream = StreamOf(session, frame->hd.stream_id);
    if (stream == nullptr) return 0;
    const std::string_view key(reinterpret_cast<const char*>(name), name_length);
    const std::string_view text(reinterpret_cast<const char*>(value), value_length);
    if (key == "grpc-status") stream->grpc_status = text;
    if (key == "grpc-message") stream->grpc_message = text;
    return 0;
  }

  static int OnClose(nghttp2_session* session, int32_t id, uint32_t error_code, void* user) {
    if (StreamState* stream = StreamOf(session, id)) {
      static_cast<Impl*>(user)->OnEnd(stream, error_code);
    }
    return 0;
  }

  const int fd_;
  nghttp2_session* session_ = nullptr;
  absl::flat_hash_map<int32_t, std::unique_ptr<StreamState>> streams_;
  std::vector<StreamState*> ended_;  // closed during the last Receive
  std::string out_;                  // bytes for the socket
  size_t out_offset_ = 0;
  std::string error_;  // the connection failed
  char in_buffer_[256 << 10];
};

H2Envoy::H2Envoy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
H2Envoy::~H2Envoy() = default;

absl::StatusOr<std::unique_ptr<H2Envoy>> H2Envoy::Connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(fmt::format("socket: {}", std::strerror(errno)));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    const int error = errno;
    ::close(fd);
    return absl::UnavailableError(
        fmt::format("connect 127.0.0.1:{}: {}", port, std::strerror(error)));
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  return std::unique_ptr<H2Envoy>(new H2Envoy(std::make_unique<Impl>(fd)));
}

H2RunResult H2Envoy::Run(const std::vector<H2Exchange>& exchanges, int depth, int64_t count,
                         std::chrono::steady_clock::time_point until) {
  return impl_->Run(exchanges, depth, count, until);
}

}  // namespace aibrix::testing
