#include "aibrix/tokenizer/remote_tokenizer.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <deque>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "aibrix/common/strings.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/util/refused_port.h"

namespace aibrix::tokenizer {
namespace {

using std::chrono::milliseconds;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Vector(const std::string& name) {
  std::ifstream in(std::string(AIBRIX_TESTDATA_DIR) + "/tokenize/" + name);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Msg(const absl::Status& s) { return std::string(common::AsStd(s.message())); }

// A scripted engine: answers each request with the next scripted reply (the last one repeats),
// records what it was sent.
class FakeEngine {
 public:
  struct Reply {
    Reply() = default;
    Reply(int s, std::string b, std::string ra = "", milliseconds d = milliseconds(0))
        : status(s), body(std::move(b)), retry_after(std::move(ra)), delay(d) {}
    int status = 200;
    std::string body;
    std::string retry_after;  // header, when non-empty
    milliseconds delay{0};
    bool chunked = false;  // no Content-Length
  };

  enum class Scheme { kHttp, kHttps };

  explicit FakeEngine(Scheme scheme = Scheme::kHttp)
      : scheme_(scheme),
        server_(scheme == Scheme::kHttps
                    ? std::unique_ptr<httplib::Server>(std::make_unique<httplib::SSLServer>(
                          (std::string(AIBRIX_TESTDATA_DIR) + "/tls/cert.pem").c_str(),
                          (std::string(AIBRIX_TESTDATA_DIR) + "/tls/key.pem").c_str()))
                    : std::make_unique<httplib::Server>()) {
    const auto handler = [this](const httplib::Request& req, httplib::Response& res) {
      Reply r;
      {
        std::lock_guard lock(mu_);
        paths_.push_back(req.path);
        bodies_.push_back(req.body);
        if (!script_.empty()) {
          r = script_.front();
          if (script_.size() > 1) script_.pop_front();
        }
      }
      if (r.delay.count() > 0) std::this_thread::sleep_for(r.delay);
      res.status = r.status;
      if (!r.retry_after.empty()) res.set_header("Retry-After", r.retry_after);
      if (r.chunked) {
        res.set_chunked_content_provider(
            "application/json", [body = r.body](size_t offset, httplib::DataSink& sink) {
              if (offset < body.size()) {
                const size_t n = std::min<size_t>(64 << 10, body.size() - offset);
                return sink.write(body.data() + offset, n);
              }
              sink.done();
              return true;
            });
      } else {
        res.set_content(r.body, "application/json");
      }
    };
    server_->set_tcp_nodelay(true);
    // A thread per connection (httplib keeps a thread on each keep-alive connection): enough
    // for the concurrency test's calls at once.
    server_->new_task_queue = [] { return new httplib::ThreadPool(80); };
    server_->Post("/tokenize", handler);
    server_->Post("/detokenize", handler);
    server_->Post("/v1/tokenize", handler);
    port_ = server_->bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_->listen_after_bind(); });
    // stop() is a no-op until the accept loop runs: wait for it so the destructor cannot hang.
    while (!server_->is_running()) std::this_thread::sleep_for(milliseconds(1));
  }
  ~FakeEngine() {
    server_->stop();
    thread_.join();
  }

  void Script(std::vector<Reply> replies) {
    std::lock_guard lock(mu_);
    script_.assign(replies.begin(), replies.end());
  }
  std::string endpoint() const {
    return (scheme_ == Scheme::kHttps ? "https://127.0.0.1:" : "http://127.0.0.1:") +
           std::to_string(port_);
  }
  size_t requests() const {
    std::lock_guard lock(mu_);
    return bodies_.size();
  }
  nlohmann::json body(size_t i) const {
    std::lock_guard lock(mu_);
    return nlohmann::json::parse(bodies_.at(i));
  }
  std::string path(size_t i) const {
    std::lock_guard lock(mu_);
    return paths_.at(i);
  }

 private:
  const Scheme scheme_;
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mu_;
  std::deque<Reply> script_;
  std::vector<std::string> bodies_;
  std::vector<std::string> paths_;
};

// One io_context served by one thread: the I/O thread the calls complete on.
class IoThread {
 public:
  IoThread() : guard_(io_.get_executor()), thread_([this] { io_.run(); }) {}
  ~IoThread() {
    guard_.reset();
    io_.stop();
    thread_.join();
  }
  boost::asio::io_context& io() { return io_; }
  std::thread::id id() const { return thread_.get_id(); }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
  std::thread thread_;
};

// Starts a call with a callback that records its result, and waits for it (up to 30 s; a
// call that never completes fails the test instead of hanging it). Checks that the callback
// runs once, on the I/O thread.
template <typename T, typename Start>
absl::StatusOr<T> Await(IoThread& io, Start start) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<T>>>();
  auto calls = std::make_shared<std::atomic<int>>(0);
  std::future<absl::StatusOr<T>> future = promise->get_future();
  start(io.io(), [promise, calls, thread = io.id()](absl::StatusOr<T> result) {
    EXPECT_EQ(std::this_thread::get_id(), thread) << "the callback runs on the I/O thread";
    if (calls->fetch_add(1) == 0) {
      promise->set_value(std::move(result));
    } else {
      ADD_FAILURE() << "the callback ran twice";
    }
  });
  if (future.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    ADD_FAILURE() << "the call never completed";
    return absl::DeadlineExceededError("test: the call never completed");
  }
  return future.get();
}

absl::StatusOr<TokenIds> Tokenize(IoThread& io, const RemoteTokenizer& tok, std::string text) {
  return Await<TokenIds>(io, [&](boost::asio::io_context& ctx, auto done) {
    tok.Tokenize(ctx, text, std::move(done));
  });
}

absl::StatusOr<TokenIds> TokenizeChat(IoThread& io, const RemoteTokenizer& tok,
                                      std::vector<ChatMessage> messages, ChatOptions options) {
  return Await<TokenIds>(io, [&](boost::asio::io_context& ctx, auto done) {
    tok.TokenizeChat(ctx, messages, options, std::move(done));
  });
}

class RemoteTokenizerTest : public ::testing::Test {
 protected:
  // Backoffs are short (base 5 ms) so the retry tests wait little in real time.
  RemoteTokenizerOptions Options(std::string model = "llama-3-1-8b", int retries = 3) {
    RemoteTokenizerOptions o;
    o.endpoint = engine_.endpoint();
    o.model = std::move(model);
    o.max_retries = retries;
    o.timeout = milliseconds(2000);
    o.base_backoff = milliseconds(5);
    o.clock = &clock_;
    o.on_retry_wait = [this](milliseconds d) {
      std::lock_guard lock(waits_mu_);
      waits_.push_back(d);
    };
    return o;
  }
  std::unique_ptr<RemoteTokenizer> Make(RemoteTokenizerOptions o) {
    auto t = RemoteTokenizer::Create(std::move(o));
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? std::move(*t) : nullptr;
  }
  std::unique_ptr<RemoteTokenizer> Make(std::string model = "llama-3-1-8b", int retries = 3) {
    return Make(Options(std::move(model), retries));
  }
  std::vector<milliseconds> waits() {
    std::lock_guard lock(waits_mu_);
    return waits_;
  }

  FakeEngine engine_;
  IoThread io_;
  common::FakeClock clock_;  // wall clock at 1970-01-01T00:00:01Z
  std::mutex waits_mu_;
  std::vector<milliseconds> waits_;
};

TEST_F(RemoteTokenizerTest, CompletionFormMatchesTheVectors) {
  engine_.Script({{200, Vector("completion_response.json")}});
  auto tok = Make();
  auto r = Await<TokenizeResponse>(io_, [&](boost::asio::io_context& io, auto done) {
    tok->TokenizeText(io, "Hello, world", std::move(done));
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->tokens, ElementsAre(128000, 9906, 11, 1917));
  EXPECT_EQ(r->count, 4);
  EXPECT_EQ(r->max_model_len, 8192);
  ASSERT_EQ(engine_.requests(), 1u);
  EXPECT_EQ(engine_.body(0), nlohmann::json::parse(Vector("completion_request.json")));
  EXPECT_EQ(engine_.path(0), "/tokenize");
  EXPECT_TRUE(waits().empty());
}

TEST_F(RemoteTokenizerTest, ChatFormSendsTheMessages) {
  engine_.Script({{200, Vector("chat_response.json")}});
  auto tok = Make();
  const nlohmann::json vec = nlohmann::json::parse(Vector("chat_request.json"));
  auto ids = TokenizeChat(io_, *tok, {{"system", "You are terse."}, {"user", "Hi"}}, {});
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ElementsAre(128000, 128006, 9125, 128007, 271, 2675));
  const nlohmann::json sent = engine_.body(0);
  EXPECT_EQ(sent["model"], vec["model"]);
  EXPECT_EQ(sent["messages"], vec["messages"]);
  EXPECT_EQ(sent["add_special_tokens"], false);
  EXPECT_EQ(sent["add_generation_prompt"], true);
  EXPECT_FALSE(sent.contains("continue_final_message"));
  EXPECT_FALSE(sent.contains("prompt"));

  engine_.Script({{200, Vector("chat_response.json")}});
  ASSERT_TRUE(TokenizeChat(io_, *tok, {{"user", "Hi"}}, ChatOptions{false, true}).ok());
  EXPECT_EQ(engine_.body(1)["add_generation_prompt"], false);
  EXPECT_EQ(engine_.body(1)["continue_final_message"], true);
}

TEST_F(RemoteTokenizerTest, BadChatRequestsAreNeverSent) {
  engine_.Script({{200, R"({"count":1,"max_model_len":8,"tokens":[7]})"}});
  auto tok = Make("");
  ASSERT_TRUE(TokenizeChat(io_, *tok, {{"user", "hi"}}, {}).ok());
  EXPECT_EQ(engine_.body(0)["messages"],
            nlohmann::json::parse(R"([{"role":"user","content":"hi"}])"));
  EXPECT_FALSE(engine_.body(0).contains("model"));

  EXPECT_EQ(TokenizeChat(io_, *tok, {}, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TokenizeChat(io_, *tok, {{"user", "hi"}}, ChatOptions{true, true}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TokenizeChat(io_, *tok, {{"user", "\xff"}}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Tokenize(io_, *tok, "\xc3").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_.requests(), 1u);
}

// The callback never runs inline, argument errors included: with the I/O thread not running,
// nothing has completed when the call returns.
TEST(RemoteTokenizerAsyncTest, CallbacksRunOnTheIoContextNeverInline) {
  RemoteTokenizerOptions o;
  o.endpoint = "http://127.0.0.1:1";
  auto tok = RemoteTokenizer::Create(o);
  ASSERT_TRUE(tok.ok());
  boost::asio::io_context io;
  int calls = 0;
  (*tok)->TokenizeChat(io, {}, {}, [&](absl::StatusOr<TokenIds> ids) {
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    ++calls;
  });
  EXPECT_EQ(calls, 0);
  io.run();
  EXPECT_EQ(calls, 1);
}

TEST_F(RemoteTokenizerTest, RetriesServerErrorsWithExponentialBackoff) {
  const std::string ok = Vector("completion_response.json");
  engine_.Script({{503, "busy"}, {500, "oops"}, {408, ""}, {200, ok}});
  auto tok = Make();
  auto ids = Tokenize(io_, *tok, "Hello, world");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->size(), 4u);
  EXPECT_EQ(engine_.requests(), 4u);
  EXPECT_THAT(waits(), ElementsAre(milliseconds(5), milliseconds(10), milliseconds(20)));
}

TEST_F(RemoteTokenizerTest, GivesUpAfterMaxRetries) {
  engine_.Script({{502, R"({"error":{"message":"upstream gone","code":502}})"}});
  auto tok = Make("m", 2);
  auto ids = Tokenize(io_, *tok, "x");
  ASSERT_EQ(ids.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(Msg(ids.status()), HasSubstr("after 3 attempts"));
  EXPECT_THAT(Msg(ids.status()), HasSubstr("upstream gone"));
  EXPECT_THAT(Msg(ids.status()), HasSubstr(engine_.endpoint()));
  EXPECT_EQ(engine_.requests(), 3u);
  EXPECT_THAT(waits(), ElementsAre(milliseconds(5), milliseconds(10)));
}

// Real waits (the timers run): Retry-After is capped at 1 s here to keep the test short.
TEST_F(RemoteTokenizerTest, TooManyRequestsHonoursRetryAfter) {
  const std::string ok = Vector("completion_response.json");
  engine_.Script({{429, "", "1"},
                  {429, "", "soon"},                           // invalid: backoff (n = 2)
                  {429, "", "Thu, 01 Jan 1970 00:00:04 GMT"},  // 3 s after the fake wall clock
                  {200, ok}});
  RemoteTokenizerOptions o = Options();
  o.max_retry_after = milliseconds(1000);
  auto tok = Make(o);
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(Tokenize(io_, *tok, "Hello").ok());
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(2000));
  EXPECT_THAT(waits(), ElementsAre(milliseconds(1000), milliseconds(10), milliseconds(1000)));
  // Below the cap, a date is honoured exactly.
  engine_.Script({{429, "", "Thu, 01 Jan 1970 00:00:01 GMT"}, {200, ok}});
  ASSERT_TRUE(Tokenize(io_, *tok, "Hello").ok());
  EXPECT_EQ(waits().back(), milliseconds(0));
}

TEST_F(RemoteTokenizerTest, OtherStatusesFailAtOnce) {
  struct Case {
    int status;
    std::string body;
    absl::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {400, R"({"error":{"message":"bad prompt","type":"BadRequestError","code":400}})",
       absl::StatusCode::kInvalidArgument, "bad prompt"},
      {404, Vector("error_response_current.json"), absl::StatusCode::kNotFound,
       "The model `no-such-model` does not exist."},
      {404, Vector("error_response_legacy.json"), absl::StatusCode::kNotFound,
       "The model `no-such-model` does not exist."},
      {501, "", absl::StatusCode::kUnimplemented, "HTTP 501"},
      {302, "", absl::StatusCode::kFailedPrecondition, "HTTP 302"},
      {401, "nope", absl::StatusCode::kFailedPrecondition, "nope"},
  };
  for (const Case& c : cases) {
    FakeEngine engine;
    engine.Script({{c.status, c.body}});
    RemoteTokenizerOptions o;
    o.endpoint = engine.endpoint();
    o.on_retry_wait = [](milliseconds) { ADD_FAILURE() << "no retry expected"; };
    auto tok = RemoteTokenizer::Create(o);
    ASSERT_TRUE(tok.ok());
    auto ids = Tokenize(io_, **tok, "x");
    EXPECT_EQ(ids.status().code(), c.code) << c.status;
    EXPECT_THAT(Msg(ids.status()), HasSubstr(c.message)) << c.status;
    EXPECT_EQ(engine.requests(), 1u) << c.status;
  }
}

TEST_F(RemoteTokenizerTest, GarbageBodiesAreInternalErrorsWithoutRetry) {
  for (const std::string body :
       {"not json", "[1,2]", R"({"tokens":"x"})", R"({"count":1})", R"({"tokens":[-1]})",
        R"({"tokens":[1.5]})", R"({"tokens":[4294967296]})", R"({"tokens":[1],"count":"1"})"}) {
    engine_.Script({{200, body}});
    auto tok = Make();
    auto ids = Tokenize(io_, *tok, "x");
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInternal) << body;
    EXPECT_THAT(Msg(ids.status()), HasSubstr("malformed /tokenize response")) << body;
  }
  EXPECT_TRUE(waits().empty());
}

// An answer over max_response_bytes is cut off, with or without a Content-Length, and is
// not retried; an error body is bounded the same way.
TEST_F(RemoteTokenizerTest, OversizedAnswersFail) {
  std::string huge = R"({"tokens":[)";
  while (huge.size() < (1 << 20)) huge += "1,";
  huge += "1]}";
  for (const FakeEngine::Reply& reply :
       {FakeEngine::Reply(200, huge), FakeEngine::Reply(503, huge)}) {
    FakeEngine::Reply r = reply;
    engine_.Script({r});
    RemoteTokenizerOptions o = Options();
    o.max_response_bytes = 256 << 10;
    auto tok = Make(o);
    auto ids = Tokenize(io_, *tok, "x");
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kResourceExhausted) << r.status;
    EXPECT_THAT(Msg(ids.status()), HasSubstr("larger than 262144 bytes"));
  }
  FakeEngine::Reply chunked(200, huge);
  chunked.chunked = true;
  engine_.Script({chunked});
  RemoteTokenizerOptions o = Options();
  o.max_response_bytes = 256 << 10;
  auto tok = Make(o);
  auto ids = Tokenize(io_, *tok, "x");
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(waits().empty());
  // Under the bound the same answer is fine.
  engine_.Script({chunked});
  ASSERT_TRUE(Tokenize(io_, *Make(), "x").ok());
}

TEST_F(RemoteTokenizerTest, TransportErrorsAreRetried) {
  const testing::RefusedPort gone;  // an engine that is down: connections are refused
  RemoteTokenizerOptions o = Options();
  o.endpoint = "http://127.0.0.1:" + std::to_string(gone.port());
  o.max_retries = 2;
  auto tok = Make(o);
  auto ids = Tokenize(io_, *tok, "x");
  ASSERT_EQ(ids.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(Msg(ids.status()), HasSubstr("transport error"));
  EXPECT_EQ(waits().size(), 2u);
}

TEST_F(RemoteTokenizerTest, SlowEngineTimesOut) {
  engine_.Script({{200, Vector("completion_response.json"), "", milliseconds(600)}});
  RemoteTokenizerOptions o;
  o.endpoint = engine_.endpoint();
  o.max_retries = 0;
  o.timeout = milliseconds(100);
  auto tok = RemoteTokenizer::Create(o);
  ASSERT_TRUE(tok.ok());
  auto ids = Tokenize(io_, **tok, "x");
  // The answer comes after 600 ms: an error about the timeout proves the client gave up first.
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(Msg(ids.status()), HasSubstr("timeout"));
}

// An engine that accepts connections (the kernel's backlog does) and never answers: every
// attempt times out and is retried, and the call ends with the timeout error.
TEST_F(RemoteTokenizerTest, EngineThatNeverAnswersTimesOutEveryAttempt) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 16), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  RemoteTokenizerOptions o = Options();
  o.endpoint = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  o.max_retries = 2;
  o.timeout = milliseconds(150);
  auto tok = Make(o);
  const auto start = std::chrono::steady_clock::now();
  auto ids = Tokenize(io_, *tok, "x");
  const auto took = std::chrono::steady_clock::now() - start;
  ::close(fd);
  ASSERT_EQ(ids.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(Msg(ids.status()), HasSubstr("after 3 attempts"));
  EXPECT_THAT(Msg(ids.status()), HasSubstr("timeout"));
  EXPECT_THAT(waits(), ElementsAre(milliseconds(5), milliseconds(10)));
  EXPECT_GE(took, milliseconds(3 * 150));  // each attempt waited out its whole timeout
}

TEST_F(RemoteTokenizerTest, DetokenizeAndPathPrefix) {
  engine_.Script({{200, R"({"prompt":"Hello"})"}});
  auto tok = Make();
  auto text = Await<std::string>(io_, [&](boost::asio::io_context& io, auto done) {
    tok->Detokenize(io, std::vector<TokenId>{9906}, std::move(done));
  });
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "Hello");
  EXPECT_EQ(engine_.path(0), "/detokenize");
  EXPECT_EQ(engine_.body(0), nlohmann::json::parse(R"({"model":"llama-3-1-8b","tokens":[9906]})"));

  engine_.Script({{200, Vector("completion_response.json")}});
  RemoteTokenizerOptions o;
  o.endpoint = engine_.endpoint() + "/v1/";
  auto prefixed = RemoteTokenizer::Create(o);
  ASSERT_TRUE(prefixed.ok());
  ASSERT_TRUE(Tokenize(io_, **prefixed, "x").ok());
  EXPECT_EQ(engine_.path(1), "/v1/tokenize");
}

TEST_F(RemoteTokenizerTest, RejectsBadEndpoints) {
  for (const char* ep : {"", "127.0.0.1:8000", "ftp://host", "http://", "https:///x", "http://h:0",
                         "http://h:99999", "http://[::1"}) {
    RemoteTokenizerOptions o;
    o.endpoint = ep;
    EXPECT_EQ(RemoteTokenizer::Create(o).status().code(), absl::StatusCode::kInvalidArgument) << ep;
  }
  RemoteTokenizerOptions o;
  o.endpoint = "http://h:1";
  o.max_retries = -1;
  EXPECT_FALSE(RemoteTokenizer::Create(o).ok());
  o.max_retries = 0;
  o.max_response_bytes = 0;
  EXPECT_FALSE(RemoteTokenizer::Create(o).ok());
  RemoteTokenizerOptions tls;
  tls.endpoint = "https://h";
  tls.tls_ca_file = "/nonexistent/ca.pem";
  auto st = RemoteTokenizer::Create(tls).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(st), HasSubstr("TLS"));
  tls.tls_ca_file.clear();
  EXPECT_TRUE(RemoteTokenizer::Create(tls).ok());  // the system's trust store
}

// https: the engine's certificate is verified (against tls_ca_file here) and its host.
TEST_F(RemoteTokenizerTest, HttpsEngine) {
  FakeEngine engine(FakeEngine::Scheme::kHttps);
  engine.Script({{200, Vector("completion_response.json")}});
  RemoteTokenizerOptions o = Options();
  o.endpoint = engine.endpoint();
  o.tls_ca_file = std::string(AIBRIX_TESTDATA_DIR) + "/tls/cert.pem";
  auto tok = Make(o);
  for (int i = 0; i < 2; ++i) {
    auto ids = Tokenize(io_, *tok, "Hello, world");
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(ids->size(), 4u);
  }
  EXPECT_EQ(engine.body(0), nlohmann::json::parse(Vector("completion_request.json")));
  // Not trusted by the system's store: the handshake fails (a transport error, retried).
  o.tls_ca_file.clear();
  o.max_retries = 1;
  auto untrusted = Tokenize(io_, *Make(o), "x");
  EXPECT_EQ(untrusted.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(Msg(untrusted.status()), HasSubstr("TLS handshake"));
  EXPECT_EQ(engine.requests(), 2u);
  // Plain http to the TLS port fails too.
  o.endpoint = "http://127.0.0.1:" + engine.endpoint().substr(engine.endpoint().rfind(':') + 1);
  EXPECT_FALSE(Tokenize(io_, *Make(o), "x").ok());
}

// Many calls at once on one I/O thread: all complete, none blocks another; the tokenizer
// may go away while they run.
TEST_F(RemoteTokenizerTest, ConcurrentCallsShareTheTokenizer) {
  engine_.Script({{200, Vector("completion_response.json"), "", milliseconds(20)}});
  auto tok = Make();
  constexpr int kCalls = 64;
  std::atomic<int> ok{0};
  std::atomic<int> done{0};
  std::promise<void> all;
  for (int i = 0; i < kCalls; ++i) {
    tok->Tokenize(io_.io(), "Hello, world", [&](absl::StatusOr<TokenIds> ids) {
      if (ids.ok() && ids->size() == 4) ok.fetch_add(1);
      if (done.fetch_add(1) + 1 == kCalls) all.set_value();
    });
  }
  tok.reset();
  ASSERT_EQ(all.get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(ok.load(), kCalls);
  // httplib's listen backlog is 5: a connect dropped under the burst may time out and retry.
  EXPECT_GE(engine_.requests(), static_cast<size_t>(kCalls));
}

TEST(RemoteTokenizerPoolTest, OneTokenizerPerEndpointAndModel) {
  RemoteTokenizerPool pool(RemoteTokenizerOptions{}, 2);
  auto a = pool.Get("http://10.0.0.1:8000", "m");
  auto b = pool.Get("http://10.0.0.1:8000", "m");
  auto c = pool.Get("http://10.0.0.2:8000", "m");
  auto d = pool.Get("http://10.0.0.2:8000", "n");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok() && d.ok());
  EXPECT_EQ(a->get(), b->get());
  EXPECT_NE(a->get(), c->get());
  EXPECT_NE(c->get(), d->get());
  EXPECT_EQ((*c)->endpoint(), "http://10.0.0.2:8000");
  EXPECT_EQ((*d)->model(), "n");
  EXPECT_EQ(pool.size(), 2u);  // bounded
  EXPECT_EQ(pool.Get("bad", "m").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool.size(), 2u);
}

TEST(RemoteTokenizerPoolTest, FullPoolDropsTheLeastRecentlyUsedAndIdleOnes) {
  common::FakeClock clock;
  RemoteTokenizerOptions defaults;
  defaults.clock = &clock;
  RemoteTokenizerPool pool(defaults, 2, std::chrono::seconds(300));
  auto a = *pool.Get("http://10.0.0.1:8000", "m");
  clock.Advance(std::chrono::seconds(1));
  auto b = *pool.Get("http://10.0.0.2:8000", "m");
  clock.Advance(std::chrono::seconds(1));
  EXPECT_EQ(pool.Get("http://10.0.0.1:8000", "m")->get(), a.get());  // a is now the newest
  clock.Advance(std::chrono::seconds(1));
  auto c = *pool.Get("http://10.0.0.3:8000", "m");  // full: b, least recently used, goes
  EXPECT_EQ(pool.size(), 2u);
  EXPECT_EQ(pool.Get("http://10.0.0.1:8000", "m")->get(), a.get());
  EXPECT_EQ(pool.Get("http://10.0.0.3:8000", "m")->get(), c.get());
  // b comes back as a new tokenizer (the old one lives on with whoever still holds it).
  EXPECT_NE(pool.Get("http://10.0.0.2:8000", "m")->get(), b.get());
  EXPECT_EQ(b->endpoint(), "http://10.0.0.2:8000");

  // Unused for the TTL: dropped when the next new one comes, whatever the room.
  RemoteTokenizerPool roomy(defaults, 10, std::chrono::seconds(300));
  auto old = *roomy.Get("http://10.0.0.1:8000", "m");
  clock.Advance(std::chrono::seconds(300));
  auto fresh = *roomy.Get("http://10.0.0.2:8000", "m");
  EXPECT_EQ(roomy.size(), 1u);
  EXPECT_NE(roomy.Get("http://10.0.0.1:8000", "m")->get(), old.get());
}

TEST(RetryPolicyTest, BackoffAndRetryAfter) {
  EXPECT_EQ(RetryBackoff(1, milliseconds(100), milliseconds(5000)), milliseconds(100));
  EXPECT_EQ(RetryBackoff(3, milliseconds(100), milliseconds(5000)), milliseconds(400));
  EXPECT_EQ(RetryBackoff(7, milliseconds(100), milliseconds(5000)), milliseconds(5000));
  EXPECT_EQ(RetryBackoff(60, milliseconds(100), milliseconds(5000)), milliseconds(5000));
  for (int s : {408, 429, 500, 502, 503, 504}) EXPECT_TRUE(IsRetryableHttpStatus(s)) << s;
  for (int s : {200, 301, 302, 400, 401, 404, 501}) EXPECT_FALSE(IsRetryableHttpStatus(s)) << s;
  const auto now = std::chrono::system_clock::from_time_t(784111777);  // 1994-11-06 08:49:37
  EXPECT_EQ(ParseRetryAfter("3", now), milliseconds(3000));
  EXPECT_EQ(ParseRetryAfter(" 0 ", now), milliseconds(0));
  EXPECT_EQ(ParseRetryAfter("Sun, 06 Nov 1994 08:49:47 GMT", now), milliseconds(10000));
  EXPECT_EQ(ParseRetryAfter("Sun, 06 Nov 1994 08:00:00 GMT", now), milliseconds(0));
  EXPECT_EQ(ParseRetryAfter("-1", now), std::nullopt);
  EXPECT_EQ(ParseRetryAfter("1.5", now), std::nullopt);
  EXPECT_EQ(ParseRetryAfter("", now), std::nullopt);
  EXPECT_EQ(ParseRetryAfter("Sun, 06 Nov 1994", now), std::nullopt);
}

}  // namespace
}  // namespace aibrix::tokenizer
