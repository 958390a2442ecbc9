#include "aibrix/tokenizer/remote_tokenizer.h"

#include <condition_variable>
#include <deque>
#include <fstream>
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
  };

  FakeEngine() {
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
      {
        std::unique_lock lock(mu_);
        held_cv_.wait(lock, [&] { return !holding_; });
      }
      res.status = r.status;
      if (!r.retry_after.empty()) res.set_header("Retry-After", r.retry_after);
      res.set_content(r.body, "application/json");
    };
    server_.set_tcp_nodelay(true);
    server_.Post("/tokenize", handler);
    server_.Post("/detokenize", handler);
    server_.Post("/v1/tokenize", handler);
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // stop() is a no-op until the accept loop runs: wait for it so the destructor cannot hang.
    while (!server_.is_running()) std::this_thread::sleep_for(milliseconds(1));
  }
  ~FakeEngine() {
    Release();
    server_.stop();
    thread_.join();
  }

  void Script(std::vector<Reply> replies) {
    std::lock_guard lock(mu_);
    script_.assign(replies.begin(), replies.end());
  }
  // While held, replies wait until Release() (an engine slower than any client timeout).
  void Hold() {
    std::lock_guard lock(mu_);
    holding_ = true;
  }
  void Release() {
    std::lock_guard lock(mu_);
    holding_ = false;
    held_cv_.notify_all();
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
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
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable held_cv_;
  bool holding_ = false;
  std::deque<Reply> script_;
  std::vector<std::string> bodies_;
  std::vector<std::string> paths_;
};

class RemoteTokenizerTest : public ::testing::Test {
 protected:
  std::unique_ptr<RemoteTokenizer> Make(std::string model = "llama-3-1-8b", int retries = 3) {
    RemoteTokenizerOptions o;
    o.endpoint = engine_.endpoint();
    o.model = std::move(model);
    o.max_retries = retries;
    o.timeout = milliseconds(2000);
    o.clock = &clock_;
    o.sleep = [this](milliseconds d) {
      std::lock_guard lock(sleeps_mu_);
      sleeps_.push_back(d);
    };
    auto t = RemoteTokenizer::Create(std::move(o));
    EXPECT_TRUE(t.ok()) << t.status();
    return std::move(*t);
  }
  std::vector<milliseconds> sleeps() {
    std::lock_guard lock(sleeps_mu_);
    return sleeps_;
  }

  FakeEngine engine_;
  common::FakeClock clock_;  // wall clock at 1970-01-01T00:00:01Z
  std::mutex sleeps_mu_;
  std::vector<milliseconds> sleeps_;
};

TEST_F(RemoteTokenizerTest, CompletionFormMatchesTheVectors) {
  engine_.Script({{200, Vector("completion_response.json")}});
  auto tok = Make();
  auto r = tok->TokenizeText("Hello, world");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->tokens, ElementsAre(128000, 9906, 11, 1917));
  EXPECT_EQ(r->count, 4);
  EXPECT_EQ(r->max_model_len, 8192);
  ASSERT_EQ(engine_.requests(), 1u);
  EXPECT_EQ(engine_.body(0), nlohmann::json::parse(Vector("completion_request.json")));
  EXPECT_EQ(engine_.path(0), "/tokenize");
  EXPECT_TRUE(sleeps().empty());
}

TEST_F(RemoteTokenizerTest, ChatFormForwardsMessagesUntouched) {
  engine_.Script({{200, Vector("chat_response.json")}});
  auto tok = Make();
  const nlohmann::json vec = nlohmann::json::parse(Vector("chat_request.json"));
  auto ids = tok->TokenizeChat(vec["messages"], ChatOptions{});
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ElementsAre(128000, 128006, 9125, 128007, 271, 2675));
  const nlohmann::json sent = engine_.body(0);
  EXPECT_EQ(sent["model"], vec["model"]);
  EXPECT_EQ(sent["messages"], vec["messages"]);
  EXPECT_EQ(sent["add_special_tokens"], false);
  EXPECT_EQ(sent["add_generation_prompt"], true);
  EXPECT_FALSE(sent.contains("prompt"));
}

TEST_F(RemoteTokenizerTest, ChatMultimodalContentIsPreservedAndBadMessagesNeverSent) {
  engine_.Script({{200, R"({"count":1,"max_model_len":8,"tokens":[7]})"}});
  auto tok = Make("");
  const nlohmann::json messages = nlohmann::json::parse(
      R"([{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"x"}}]}])");
  ASSERT_TRUE(tok->TokenizeChat(messages, ChatOptions{}).ok());
  EXPECT_EQ(engine_.body(0)["messages"], messages);
  EXPECT_FALSE(engine_.body(0).contains("model"));

  EXPECT_EQ(tok->TokenizeChat(nlohmann::json::array(), ChatOptions{}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tok->TokenizeChat(messages, ChatOptions{true, true}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_.requests(), 1u);
}

TEST_F(RemoteTokenizerTest, RetriesServerErrorsWithExponentialBackoff) {
  const std::string ok = Vector("completion_response.json");
  engine_.Script({{503, "busy"}, {500, "oops"}, {408, ""}, {200, ok}});
  auto tok = Make();
  auto ids = tok->Tokenize("Hello, world");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->size(), 4u);
  EXPECT_EQ(engine_.requests(), 4u);
  EXPECT_THAT(sleeps(), ElementsAre(milliseconds(100), milliseconds(200), milliseconds(400)));
}

TEST_F(RemoteTokenizerTest, GivesUpAfterMaxRetries) {
  engine_.Script({{502, R"({"error":{"message":"upstream gone","code":502}})"}});
  auto tok = Make("m", 2);
  auto ids = tok->Tokenize("x");
  ASSERT_EQ(ids.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(Msg(ids.status()), HasSubstr("after 3 attempts"));
  EXPECT_THAT(Msg(ids.status()), HasSubstr("upstream gone"));
  EXPECT_THAT(Msg(ids.status()), HasSubstr(engine_.endpoint()));
  EXPECT_EQ(engine_.requests(), 3u);
  EXPECT_THAT(sleeps(), ElementsAre(milliseconds(100), milliseconds(200)));
}

TEST_F(RemoteTokenizerTest, TooManyRequestsHonoursRetryAfter) {
  const std::string ok = Vector("completion_response.json");
  engine_.Script({{429, "", "2"},
                  {429, "", "soon"},                           // invalid: backoff (n = 2)
                  {429, "", "Thu, 01 Jan 1970 00:00:04 GMT"},  // 3 s after the fake wall clock
                  {200, ok}});
  auto tok = Make();
  ASSERT_TRUE(tok->Tokenize("Hello").ok());
  EXPECT_THAT(sleeps(), ElementsAre(milliseconds(2000), milliseconds(200), milliseconds(3000)));
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
    o.sleep = [](milliseconds) { ADD_FAILURE() << "no retry expected"; };
    auto tok = RemoteTokenizer::Create(o);
    ASSERT_TRUE(tok.ok());
    auto ids = (*tok)->Tokenize("x");
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
    auto ids = tok->Tokenize("x");
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInternal) << body;
    EXPECT_THAT(Msg(ids.status()), HasSubstr("malformed /tokenize response")) << body;
  }
  EXPECT_TRUE(sleeps().empty());
}

TEST_F(RemoteTokenizerTest, TransportErrorsAreRetried) {
  const testing::RefusedPort gone;  // an engine that is down: connections are refused
  RemoteTokenizerOptions o;
  o.endpoint = "http://127.0.0.1:" + std::to_string(gone.port());
  o.max_retries = 2;
  o.sleep = [this](milliseconds d) { sleeps_.push_back(d); };
  auto tok = RemoteTokenizer::Create(o);
  ASSERT_TRUE(tok.ok());
  auto ids = (*tok)->Tokenize("x");
  ASSERT_EQ(ids.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(Msg(ids.status()), HasSubstr("transport error"));
  EXPECT_EQ(sleeps_.size(), 2u);
}

TEST_F(RemoteTokenizerTest, SlowEngineTimesOut) {
  engine_.Script({{200, Vector("completion_response.json")}});
  engine_.Hold();  // the engine answers only after the client gave up
  RemoteTokenizerOptions o;
  o.endpoint = engine_.endpoint();
  o.max_retries = 0;
  o.timeout = milliseconds(100);
  auto tok = RemoteTokenizer::Create(o);
  ASSERT_TRUE(tok.ok());
  auto ids = (*tok)->Tokenize("x");
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(Msg(ids.status()), HasSubstr("transport error"));
  EXPECT_EQ(engine_.requests(), 1u);
  engine_.Release();
}

TEST_F(RemoteTokenizerTest, DetokenizeAndPathPrefix) {
  engine_.Script({{200, R"({"prompt":"Hello"})"}});
  auto tok = Make();
  auto text = tok->Detokenize(std::vector<TokenId>{9906});
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "Hello");
  EXPECT_EQ(engine_.path(0), "/detokenize");
  EXPECT_EQ(engine_.body(0), nlohmann::json::parse(R"({"model":"llama-3-1-8b","tokens":[9906]})"));

  engine_.Script({{200, Vector("completion_response.json")}});
  RemoteTokenizerOptions o;
  o.endpoint = engine_.endpoint() + "/v1/";
  auto prefixed = RemoteTokenizer::Create(o);
  ASSERT_TRUE(prefixed.ok());
  ASSERT_TRUE((*prefixed)->Tokenize("x").ok());
  EXPECT_EQ(engine_.path(1), "/v1/tokenize");
}

TEST_F(RemoteTokenizerTest, RejectsBadEndpoints) {
  for (const char* ep : {"", "127.0.0.1:8000", "ftp://host", "http://", "https:///x"}) {
    RemoteTokenizerOptions o;
    o.endpoint = ep;
    EXPECT_EQ(RemoteTokenizer::Create(o).status().code(), absl::StatusCode::kInvalidArgument) << ep;
  }
  RemoteTokenizerOptions o;
  o.endpoint = "http://h:1";
  o.max_retries = -1;
  EXPECT_FALSE(RemoteTokenizer::Create(o).ok());
}

TEST_F(RemoteTokenizerTest, ConcurrentCallsShareTheTokenizer) {
  engine_.Script({{200, Vector("completion_response.json")}});
  auto tok = Make();
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        auto ids = tok->Tokenize("Hello, world");
        if (ids.ok() && ids->size() == 4) ok.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 100);
  EXPECT_EQ(engine_.requests(), 100u);
}

TEST(RemoteTokenizerPoolTest, OneTokenizerPerEndpointAndModel) {
  RemoteTokenizerPool pool(RemoteTokenizerOptions{}, 2);
  auto a = pool.Get("http://10.0.0.1:8000", "m");
  auto b = pool.Get("http://10.0.0.1:8000", "m");
  auto c = pool.Get("http://10.0.0.2:8000", "m");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->get(), b->get());
  EXPECT_NE(a->get(), c->get());
  EXPECT_EQ((*c)->endpoint(), "http://10.0.0.2:8000");
  EXPECT_EQ(pool.size(), 2u);
  EXPECT_EQ(pool.Get("http://10.0.0.3:8000", "m").status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.Get("bad", "m").status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.Get("http://10.0.0.1:8000", "m").status().code(), absl::StatusCode::kOk);
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
