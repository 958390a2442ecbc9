// The upstream HTTP/1.1 client, on Boost.Beast over Asio: one call sends a request to
// host:port and streams the response back through an observer, with back-pressure (the next
// body bytes are read only when the observer asks), on the I/O thread of the caller's choice
// (the server's exchange thread, so relaying needs no locks). Keep-alive connections are
// pooled per (thread, address), still registered with the thread's io_context (reusing one
// costs no system call) and each with its read buffer (its memory is reused by the next call
// on it); a pooled connection the peer has closed is not reused. Pooled connections are
// closed on their io_context's thread, or when it is destroyed (which the client may outlive).
//
// TLS: a request carrying an ssl::context is sent over TLS (handshake within the connect
// deadline, SNI and certificate checks against `host`, as the context's verify mode says).
// TLS connections are not pooled: each such call connects and handshakes anew.
//
// Deadlines: connect; first response byte; between body reads; the whole response. Each
// failure is classified so the caller knows whether the request provably never reached the
// server (connect refused, or reset before a byte was written: safe to retry elsewhere),
// timed out, or failed after reaching it.
//
// Thread safety: Start may be called from any thread; a call's observer callbacks and
// its Cancel/ReadMore run on the given io_context's thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "aibrix/common/mutex.h"
#include "aibrix/http/types.h"

namespace boost::asio {
class io_context;
namespace ssl {
class context;
}
}  // namespace boost::asio

namespace aibrix::http {

struct ClientOptions {
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds first_byte_timeout{300000};
  std::chrono::milliseconds idle_timeout{300000};   // between response body reads
  std::chrono::milliseconds total_timeout{600000};  // the whole response
  size_t max_header_bytes = 64 << 10;
  // Bytes one socket read may take. 0: Beast's default (reads start at 512 bytes), right for
  // many concurrent streams of small chunks; a client that reads whole large bodies
  // (Kubernetes LISTs, the metrics scraper) sets e.g. 64 KiB so that a body takes a few
  // reads, at that much memory per call.
  size_t read_buffer_bytes = 0;
  size_t max_idle_per_address = 64;
  // A pooled connection unused for this long is closed by Sweep (its pod may be gone).
  std::chrono::milliseconds max_idle{30000};
};

struct ClientRequest {
  std::string method = "POST";
  std::string host;  // IP address or name
  uint16_t port = 80;
  std::string target = "/";
  Headers headers;  // Host, Content-Length and Connection are set by the client
  std::string body;
  // When set, the call runs over TLS with this context (its verify mode and trust store);
  // `host` is sent for SNI (when it is a name) and checked against the certificate.
  std::shared_ptr<boost::asio::ssl::context> tls;
};

enum class ClientError {
  kNone,
  kConnect,      // refused, unreachable or TLS handshake failed: the request never left
  kSendReset,    // reset before any request byte was written: never reached the server
  kTimeout,      // connect, first byte, between reads or the whole response
  kReset,        // reset or closed after the request was (partly) sent
  kBadResponse,  // not HTTP, or bad framing
  kCancelled,    // Cancel()
};

std::string_view ClientErrorName(ClientError error);

// Receives one call's response. Callbacks run on the call's I/O thread, in order: OnHead at
// most once, OnBody any number of times (each after a ReadMore, the first without), OnEnd
// exactly once.
class ResponseObserver {
 public:
  virtual ~ResponseObserver() = default;
  virtual void OnHead(int status, const Headers& headers) = 0;
  // `data` is valid during the call. Ask for more with ClientCall::ReadMore().
  virtual void OnBody(std::string_view data) = 0;
  // Where the body is decoded. nullptr (the default): into a buffer of the call's, drained
  // into each OnBody. A string of the observer's (alive until OnEnd): the body is appended to
  // it in place, with no copy, and each OnBody's `data` views the bytes just appended.
  // Asked once, before OnHead.
  virtual std::string* BodyTarget() { return nullptr; }
  // The response ended: kNone when complete, else why it failed. `detail` says more.
  virtual void OnEnd(ClientError error, std::string_view detail) = 0;
};

class ClientCall {
 public:
  virtual ~ClientCall() = default;
  // Reads the next body bytes (after an OnBody). I/O thread only.
  virtual void ReadMore() = 0;
  // Aborts: the connection is closed and OnEnd(kCancelled) follows unless the call already
  // ended. I/O thread only.
  virtual void Cancel() = 0;
};

class Client {
 public:
  explicit Client(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Starts `request` on `io`. The returned call (and the observer) stay alive until OnEnd.
  std::shared_ptr<ClientCall> Start(boost::asio::io_context& io, ClientRequest request,
                                    std::shared_ptr<ResponseObserver> observer);

  // Closes pooled connections idle for longer than max_idle; returns how many. Any thread
  // (the closing is posted to each connection's io_context).
  size_t Sweep();

  const ClientOptions& options() const { return options_; }

  class Pool;

 private:
  const ClientOptions options_;
  std::unique_ptr<Pool> pool_;
};

}  // namespace aibrix::http
