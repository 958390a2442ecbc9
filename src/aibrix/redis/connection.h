// aibrix::redis::Connection — one connection to Redis over hiredis (blocking, with connect and
// command timeouts), owned by one thread: commands, pipelines, SCAN iteration, AUTH, and
// reconnection by itself with exponential backoff.
//
//   Connection conn(options);
//   auto reply = conn.Command({"SET", "k", "v", "EX", "600"});
//   auto keys = conn.Scan("aibrix:profile_*", 100, 10000);
//
// Every call first makes sure it is connected: while the server is unreachable, calls fail at
// once (Unavailable) until the next attempt is due (100 ms, doubling up to 5 s, ±20% jitter;
// reset by a successful connect). A connection that fails mid-call (timeout, reset, protocol
// garbage) is dropped and the next call reconnects. A call that finds an established
// connection broken (the server restarted since the last call) reconnects and is sent once
// more, so callers send only idempotent commands (SET, HSET, PEXPIRE, GET, SCAN, ...). Redis
// error replies (-ERR ...) are replies, not failures: the connection stays.
//
// Failures carry a canonical code that ErrorReason() turns into a metric label: Unavailable
// (cannot connect, or waiting to retry), DeadlineExceeded (command timeout), Aborted (the
// connection broke), DataLoss (not the Redis protocol, or a reply of the wrong shape),
// Unauthenticated (AUTH refused), ResourceExhausted (out of memory, or a SCAN over the key
// limit).
//
// hiredis 0.14 bounds reply nesting (depth 7) but not bulk sizes: a hostile server could
// make a call buffer a large value until the command timeout. Redis is the operator's own.
//
// Thread safety: none; one thread uses a Connection at a time (each Redis feature of the
// service owns one, on its own thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "aibrix/common/clock.h"

struct redisContext;

namespace aibrix::redis {

// Where Redis listens: "host:port", "[v6]:port", "host" (port 6379), or "unix:/path".
struct Address {
  std::string host;       // empty for a unix socket
  uint16_t port = 0;      // 0 for a unix socket
  std::string unix_path;  // non-empty for a unix socket

  bool is_unix() const { return !unix_path.empty(); }
  // The text form above.
  std::string ToString() const;
};

// Errors: empty text, a malformed host:port, "unix:" without a path.
absl::StatusOr<Address> ParseAddress(std::string_view text);

struct ConnectionOptions {
  Address address;
  std::string password;  // sent with AUTH after each connect when non-empty
  std::chrono::milliseconds connect_timeout{1000};
  std::chrono::milliseconds command_timeout{1000};
  std::chrono::milliseconds min_backoff{100};
  std::chrono::milliseconds max_backoff{5000};
  const common::Clock* clock = &common::SystemClock::Instance();
};

// A Redis reply, copied out of hiredis.
struct Reply {
  enum class Type { kNil, kString, kInteger, kArray, kStatus, kError };
  Type type = Type::kNil;
  std::string str;  // kString, kStatus, kError
  int64_t integer = 0;
  std::vector<Reply> elements;  // kArray

  bool is_error() const { return type == Type::kError; }
  bool is_string() const { return type == Type::kString; }
  bool is_array() const { return type == Type::kArray; }
};

using Args = std::vector<std::string>;

// The metric label of a failure: "unavailable", "timeout", "io", "protocol", "auth",
// "resource", "reply" (FailedPrecondition: an error reply a caller turned into a status), or
// "other".
std::string_view ErrorReason(const absl::Status& status);

class Connection {
 public:
  explicit Connection(ConnectionOptions options);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Sends one command and returns its reply (an error reply included). Errors as above.
  absl::StatusOr<Reply> Command(const Args& args);
  // Sends `commands` in one write and reads their replies, in order (one round trip). On a
  // failure no reply is returned: the caller retries the whole pipeline later.
  absl::StatusOr<std::vector<Reply>> Pipeline(std::span<const Args> commands);
  // Every key matching `pattern`, by SCAN (never KEYS) with COUNT `count_hint`, without
  // duplicates. ResourceExhausted past `max_keys`; DataLoss for a reply of the wrong shape.
  absl::StatusOr<std::vector<std::string>> Scan(std::string_view pattern, int count_hint,
                                                size_t max_keys);

  bool connected() const { return ctx_ != nullptr; }
  // Successful connects so far (the first one and every reconnect).
  uint64_t connects() const { return connects_; }
  const Address& address() const { return options_.address; }

 private:
  // Connects (and AUTHs) if needed and allowed by the backoff.
  absl::Status EnsureConnected();
  absl::StatusOr<Reply> CommandOnce(const Args& args);
  absl::StatusOr<std::vector<Reply>> PipelineOnce(std::span<const Args> commands);
  // The status for a failed hiredis call on ctx_; drops the connection.
  absl::Status Fail(std::string_view what);
  // Frees ctx_ (if any).
  void Drop();
  // Schedules the next connect attempt after a failed one.
  void BackOff();

  // Constant after construction.
  const ConnectionOptions options_;

  redisContext* ctx_ = nullptr;
  uint64_t connects_ = 0;
  std::chrono::steady_clock::time_point next_attempt_{};
  std::chrono::nanoseconds backoff_;
  std::string last_connect_error_;
  uint64_t jitter_state_;
};

}  // namespace aibrix::redis
