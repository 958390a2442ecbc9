// One request in flight on the server, for handlers that answer later or stream: the
// request, a way to answer it once (a whole response or a stream), and a signal when the
// client goes away first. The upstream Client runs on the exchange's I/O thread (io()), so
// relaying between the two needs no locks.
//
// Thread safety: Respond, Stream and OnCancel may be called from any thread; callbacks run
// on the exchange's I/O thread. StreamWriter methods likewise.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "aibrix/http/types.h"

namespace boost::asio {
class io_context;
}

namespace aibrix::http {

// The body of a streamed response, written as it is produced.
class StreamWriter {
 public:
  virtual ~StreamWriter() = default;
  // Queues `data`. `on_ready(true)` runs (on the I/O thread) once fewer than the server's
  // stream_buffer_bytes are queued — at once if that is already so; `on_ready(false)` when
  // the client is gone (the data is dropped). Pass nullptr to ignore.
  virtual void Write(std::string data, std::function<void(bool)> on_ready) = 0;
  // Ends the response cleanly once the queue is written.
  virtual void Finish() = 0;
  // Ends it without a clean end: the connection is closed after what is queued, so the client
  // sees an incomplete transfer (never a well-framed end of a response that was cut).
  virtual void Abort() = 0;
};

class Exchange {
 public:
  virtual ~Exchange() = default;
  virtual const Request& request() const = 0;
  // Answers with a complete response. Only the first answer counts.
  virtual void Respond(Response response) = 0;
  // Answers with a streamed body: the head now, with `headers` (Content-Length when
  // `content_length` is given, chunked otherwise). Null when already answered or the client
  // is gone.
  virtual std::shared_ptr<StreamWriter> Stream(int status, Headers headers,
                                               std::optional<uint64_t> content_length) = 0;
  // Runs `callback` once, on the I/O thread, if the client goes away or the server cuts the
  // connection before the answer is complete. Set it before starting work that must be
  // cancelled.
  virtual void OnCancel(std::function<void()> callback) = 0;
  // Runs `task` on the exchange's I/O thread (at once when called there).
  virtual void Run(std::function<void()> task) = 0;
  // The I/O thread's context, for the upstream Client.
  virtual boost::asio::io_context& io() = 0;
};

}  // namespace aibrix::http
