#include "aibrix/redis/connection.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "aibrix/common/net.h"
#include "aibrix/common/status_macros.h"
#include "fmt/format.h"

namespace aibrix::redis {
namespace {

constexpr int kDefaultPort = 6379;
// SCAN rounds at most (a server answering a non-zero cursor forever is garbage).
constexpr int kMaxScanRounds = 1'000'000;

timeval ToTimeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

Reply Convert(const redisReply* r) {
  Reply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = Reply::Type::kString;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = Reply::Type::kStatus;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = Reply::Type::kError;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = Reply::Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      // hiredis limits nesting to 7 levels, so this recursion is bounded.
      out.type = Reply::Type::kArray;
      out.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(Convert(r->element[i]));
      break;
    default:
      out.type = Reply::Type::kNil;
  }
  return out;
}

// hiredis writes with write(2): a server that closed its end would raise SIGPIPE and kill
// the process. For the scope of a call, SIGPIPE is blocked on this thread and a SIGPIPE the
// call raised is consumed before the mask is restored (the write then just fails with EPIPE).
class ScopedSigpipeBlock {
 public:
  ScopedSigpipeBlock() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~ScopedSigpipeBlock() {
    if (!was_pending_) {
      const timespec zero{};
      while (sigtimedwait(&pipe_, nullptr, &zero) > 0) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  ScopedSigpipeBlock(const ScopedSigpipeBlock&) = delete;
  ScopedSigpipeBlock& operator=(const ScopedSigpipeBlock&) = delete;

 private:
  sigset_t pipe_;
  sigset_t old_;
  bool was_pending_ = false;
};

struct ReplyDeleter {
  void operator()(void* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<void, ReplyDeleter>;

}  // namespace

std::string Address::ToString() const {
  if (is_unix()) return "unix:" + unix_path;
  return common::FormatHostPort(host, port);
}

absl::StatusOr<Address> ParseAddress(std::string_view text) {
  Address address;
  if (text.starts_with("unix:")) {
    address.unix_path = std::string(text.substr(5));
    if (address.unix_path.empty()) {
      return absl::InvalidArgumentError("redis address 'unix:' needs a socket path");
    }
    return address;
  }
  auto hp = common::ParseHostPort(text, kDefaultPort);
  if (!hp.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("redis address '{}': {}", text, std::string(hp.status().message())));
  }
  address.host = std::move(hp->host);
  address.port = hp->port;
  return address;
}

std::string_view ErrorReason(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
      return "unavailable";
    case absl::StatusCode::kDeadlineExceeded:
      return "timeout";
    case absl::StatusCode::kAborted:
      return "io";
    case absl::StatusCode::kDataLoss:
      return "protocol";
    case absl::StatusCode::kUnauthenticated:
      return "auth";
    case absl::StatusCode::kResourceExhausted:
      return "resource";
    case absl::StatusCode::kFailedPrecondition:
      return "reply";
    default:
      return "other";
  }
}

Connection::Connection(ConnectionOptions options)
    : options_(std::move(options)),
      backoff_(options_.min_backoff),
      jitter_state_(reinterpret_cast<uintptr_t>(this) ^ 0x9e3779b97f4a7c15ULL) {}

Connection::~Connection() { Drop(); }

void Connection::Drop() {
  if (ctx_ != nullptr) redisFree(ctx_);
  ctx_ = nullptr;
}

void Connection::BackOff() {
  // ±20% jitter so that replicas restarted together do not reconnect in step.
  jitter_state_ = jitter_state_ * 6364136223846793005ULL + 1442695040888963407ULL;
  const double factor = 0.8 + 0.4 * static_cast<double>(jitter_state_ >> 11) * 0x1.0p-53;
  const auto wait = std::chrono::duration_cast<std::chrono::nanoseconds>(backoff_ * factor);
  next_attempt_ = options_.clock->Now() + wait;
  backoff_ = std::min<std::chrono::nanoseconds>(backoff_ * 2, options_.max_backoff);
}

absl::Status Connection::EnsureConnected() {
  if (ctx_ != nullptr) return absl::OkStatus();
  const auto now = options_.clock->Now();
  if (now < next_attempt_) {
    return absl::UnavailableError(fmt::format(
        "redis {}: not connected ({}); next attempt in {} ms", options_.address.ToString(),
        last_connect_error_,
        std::chrono::duration_cast<std::chrono::milliseconds>(next_attempt_ - now).count()));
  }
  const timeval connect_tv = ToTimeval(options_.connect_timeout);
  redisContext* c =
      options_.address.is_unix()
          ? redisConnectUnixWithTimeout(options_.address.unix_path.c_str(), connect_tv)
          : redisConnectWithTimeout(options_.address.host.c_str(), options_.address.port,
                                    connect_tv);
  if (c == nullptr || c->err != 0) {
    last_connect_error_ = c == nullptr ? "cannot allocate a context" : c->errstr;
    if (c != nullptr) redisFree(c);
    BackOff();
    return absl::UnavailableError(
        fmt::format("redis {}: connect: {}", options_.address.ToString(), last_connect_error_));
  }
  redisSetTimeout(c, ToTimeval(options_.command_timeout));
  if (!options_.address.is_unix()) redisEnableKeepAlive(c);
  ctx_ = c;
  if (!options_.password.empty()) {
    auto reply = CommandOnce({"AUTH", options_.password});
    if (!reply.ok()) {  // the connection broke (and was dropped)
      last_connect_error_ = std::string(reply.status().message());
      BackOff();
      return reply.status();
    }
    if (reply->is_error()) {
      last_connect_error_ = reply->str;
      Drop();
      BackOff();
      return absl::UnauthenticatedError(
          fmt::format("redis {}: AUTH: {}", options_.address.ToString(), last_connect_error_));
    }
  }
  ++connects_;
  backoff_ = options_.min_backoff;
  last_connect_error_.clear();
  return absl::OkStatus();
}

absl::Status Connection::Fail(std::string_view what) {
  const int err = ctx_ != nullptr ? ctx_->err : REDIS_ERR_OTHER;
  const int saved_errno = errno;
  std::string detail = ctx_ != nullptr ? std::string(ctx_->errstr) : "no connection";
  Drop();
  // The next call reconnects at once; only failed connects back off.
  next_attempt_ = {};
  const std::string message =
      fmt::format("redis {}: {}: {}", options_.address.ToString(), what, detail);
  switch (err) {
    case REDIS_ERR_IO:
      if (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK || saved_errno == ETIMEDOUT) {
        return absl::DeadlineExceededError(message);
      }
      return absl::AbortedError(message);
    case REDIS_ERR_EOF:
      return absl::AbortedError(message);
    case REDIS_ERR_PROTOCOL:
      return absl::DataLossError(message);
    case REDIS_ERR_OOM:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::StatusOr<Reply> Connection::Command(const Args& args) {
  ScopedSigpipeBlock no_sigpipe;
  const bool reused = connected();
  absl::StatusOr<Reply> reply = CommandOnce(args);
  // A connection that broke while idle (a server restart): once more on a new one.
  if (reused && reply.status().code() == absl::StatusCode::kAborted) reply = CommandOnce(args);
  return reply;
}

absl::StatusOr<Reply> Connection::CommandOnce(const Args& args) {
  RETURN_IF_ERROR(EnsureConnected());
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  argv.reserve(args.size());
  lens.reserve(args.size());
  for (const std::string& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  errno = 0;
  ReplyPtr reply(redisCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()));
  if (reply == nullptr) return Fail(args.empty() ? "command" : args[0]);
  return Convert(static_cast<const redisReply*>(reply.get()));
}

absl::StatusOr<std::vector<Reply>> Connection::Pipeline(std::span<const Args> commands) {
  ScopedSigpipeBlock no_sigpipe;
  const bool reused = connected();
  absl::StatusOr<std::vector<Reply>> replies = PipelineOnce(commands);
  if (reused && replies.status().code() == absl::StatusCode::kAborted) {
    replies = PipelineOnce(commands);
  }
  return replies;
}

absl::StatusOr<std::vector<Reply>> Connection::PipelineOnce(std::span<const Args> commands) {
  RETURN_IF_ERROR(EnsureConnected());
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const Args& args : commands) {
    argv.clear();
    lens.clear();
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    if (redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()) !=
        REDIS_OK) {
      return Fail("pipeline");
    }
  }
  std::vector<Reply> replies;
  replies.reserve(commands.size());
  for (size_t i = 0; i < commands.size(); ++i) {
    void* raw = nullptr;
    errno = 0;
    if (redisGetReply(ctx_, &raw) != REDIS_OK || raw == nullptr) return Fail("pipeline");
    ReplyPtr reply(raw);
    replies.push_back(Convert(static_cast<const redisReply*>(raw)));
  }
  return replies;
}

absl::StatusOr<std::vector<std::string>> Connection::Scan(std::string_view pattern, int count_hint,
                                                          size_t max_keys) {
  absl::flat_hash_set<std::string> seen;
  std::vector<std::string> keys;
  std::string cursor = "0";
  const std::string count = std::to_string(std::max(count_hint, 1));
  for (int round = 0; round < kMaxScanRounds; ++round) {
    ASSIGN_OR_RETURN(Reply reply,
                     Command({"SCAN", cursor, "MATCH", std::string(pattern), "COUNT", count}));
    if (reply.is_error()) {
      return absl::FailedPreconditionError(fmt::format("SCAN {}: {}", pattern, reply.str));
    }
    uint64_t next = 0;
    if (!reply.is_array() || reply.elements.size() != 2 || !reply.elements[0].is_string() ||
        !absl::SimpleAtoi(reply.elements[0].str, &next) || !reply.elements[1].is_array()) {
      Drop();  // whatever answered is not a Redis we understand
      return absl::DataLossError(fmt::format("SCAN {}: reply of the wrong shape", pattern));
    }
    for (Reply& key : reply.elements[1].elements) {
      if (!key.is_string()) {
        Drop();
        return absl::DataLossError(fmt::format("SCAN {}: a key is not a string", pattern));
      }
      if (seen.insert(key.str).second) keys.push_back(std::move(key.str));
    }
    if (keys.size() > max_keys) {
      return absl::ResourceExhaustedError(
          fmt::format("SCAN {}: more than {} keys", pattern, max_keys));
    }
    if (next == 0) return keys;
    cursor = std::move(reply.elements[0].str);
  }
  return absl::DataLossError(fmt::format("SCAN {}: the cursor never returned to 0", pattern));
}

}  // namespace aibrix::redis
