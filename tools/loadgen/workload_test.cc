#include "workload.h"

#include <cmath>
#include <map>
#include <set>

#include "gtest/gtest.h"
#include "tests/util/temp_dir.h"

namespace aibrix::loadgen {
namespace {

using json = nlohmann::json;

SyntheticOptions SmallOptions() {
  SyntheticOptions o;
  o.num_system_prompts = 3;
  o.system_prompt_len = 100;
  o.num_users = 5;
  o.turns = 3;
  o.user_message_len = 10;
  o.reply_len = 7;
  o.max_tokens = 4;
  o.seed = 42;
  return o;
}

// The conversation text of a chat request, as the chat template would see it (roles and
// contents in order).
std::string Flatten(const RequestSpec& spec) {
  std::string out;
  for (const json& m : spec.messages) {
    out += m["role"].get<std::string>() + ":" + m["content"].get<std::string>() + "\n";
  }
  return out;
}

TEST(SyntheticWorkloadTest, SameSeedSameSequenceDifferentSeedDifferent) {
  SyntheticWorkload a(SmallOptions());
  SyntheticWorkload b(SmallOptions());
  SyntheticOptions other = SmallOptions();
  other.seed = 43;
  SyntheticWorkload c(other);
  bool any_difference = false;
  for (int i = 0; i < 50; ++i) {
    RequestSpec x = a.Next();
    RequestSpec y = b.Next();
    RequestSpec z = c.Next();
    EXPECT_EQ(x.messages, y.messages);
    EXPECT_EQ(x.session, y.session);
    EXPECT_EQ(x.index, static_cast<uint64_t>(i));
    any_difference |= x.messages != z.messages;
  }
  EXPECT_TRUE(any_difference);
}

TEST(SyntheticWorkloadTest, TurnsExtendTheUsersConversationAndShareTheSystemPrompt) {
  const SyntheticOptions o = SmallOptions();
  SyntheticWorkload w(o);
  std::map<std::string, RequestSpec> last_by_session;
  std::map<int, std::set<std::string>> sessions_by_user;
  for (int i = 0; i < 200; ++i) {
    RequestSpec spec = w.Next();
    ASSERT_EQ(spec.api, Api::kChat);
    ASSERT_EQ(spec.max_tokens, 4);
    // Turn t has 1 system + t user + (t-1) assistant messages.
    ASSERT_EQ(spec.messages.size(), static_cast<size_t>(2 * spec.turn));
    EXPECT_EQ(spec.messages[0]["role"], "system");
    EXPECT_EQ(spec.messages[0]["content"], w.system_prompt(spec.system_prompt));
    EXPECT_EQ(spec.messages.back()["role"], "user");
    EXPECT_EQ(spec.messages.back()["content"].get<std::string>().size(), 10u);
    if (spec.turn > 1) {
      EXPECT_EQ(spec.messages[spec.messages.size() - 2]["content"].get<std::string>().size(), 7u);
    }
    const int user = std::stoi(spec.session.substr(1));
    EXPECT_EQ(spec.system_prompt, user % o.num_system_prompts);
    sessions_by_user[user].insert(spec.session);
    auto it = last_by_session.find(spec.session);
    if (spec.turn == 1) {
      EXPECT_EQ(it, last_by_session.end()) << spec.session;
    } else {
      // The previous turn's prompt is a strict prefix of this one.
      ASSERT_NE(it, last_by_session.end()) << spec.session;
      EXPECT_EQ(it->second.turn, spec.turn - 1);
      const std::string prev = Flatten(it->second);
      EXPECT_EQ(Flatten(spec).substr(0, prev.size()), prev);
    }
    EXPECT_LE(spec.turn, o.turns);
    last_by_session[spec.session] = spec;
  }
  // 200 requests over 5 users with 3 turns each: users started new conversations.
  for (const auto& [user, sessions] : sessions_by_user) EXPECT_GT(sessions.size(), 1u) << user;
}

TEST(SyntheticWorkloadTest, SystemPromptsAreDistinctAsciiOfTheAskedLength) {
  SyntheticOptions o = SmallOptions();
  o.num_system_prompts = 8;
  o.system_prompt_len = 64;
  SyntheticWorkload w(o);
  std::set<std::string> seen;
  for (int i = 0; i < 8; ++i) {
    const std::string& p = w.system_prompt(i);
    EXPECT_EQ(p.size(), 64u);
    for (char c : p) EXPECT_TRUE((c >= 'a' && c <= 'z') || c == ' ') << static_cast<int>(c);
    // Distinct from the first block on (16 tokens), so prompts share no cache block.
    EXPECT_TRUE(seen.insert(p.substr(0, 16)).second);
  }
}

TEST(SyntheticWorkloadTest, CompletionsApiRendersAGrowingTextPrompt) {
  SyntheticOptions o = SmallOptions();
  o.api = Api::kCompletions;
  o.num_users = 1;
  SyntheticWorkload w(o);
  RequestSpec t1 = w.Next();
  RequestSpec t2 = w.Next();
  EXPECT_EQ(t1.api, Api::kCompletions);
  EXPECT_TRUE(t1.prompt.starts_with("system: " + w.system_prompt(0) + "\nuser: "));
  EXPECT_TRUE(t1.prompt.ends_with("\nassistant: "));
  EXPECT_TRUE(t2.prompt.starts_with(t1.prompt));  // the reply follows the previous prompt
  json body = t2.Body("m");
  EXPECT_EQ(body["prompt"], t2.prompt);
  EXPECT_EQ(body["model"], "m");
  EXPECT_EQ(body["stream"], true);
  EXPECT_EQ(body["stream_options"]["include_usage"], true);
  EXPECT_FALSE(body.contains("messages"));
}

TEST(SyntheticWorkloadTest, ValidateNamesTheBadField) {
  SyntheticOptions o = SmallOptions();
  o.num_users = 0;
  absl::Status st = o.Validate();
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("users"), absl::string_view::npos);
  o = SmallOptions();
  o.reply_len = -1;
  EXPECT_FALSE(o.Validate().ok());
  EXPECT_TRUE(SmallOptions().Validate().ok());
}

TEST(PoissonArrivalsTest, IncreasingSeededWithTheRightMean) {
  PoissonArrivals a(50.0, 7);
  PoissonArrivals b(50.0, 7);
  double prev = 0;
  const int n = 20000;
  double sum_sq = 0;
  double last = 0;
  for (int i = 0; i < n; ++i) {
    const double t = a.Next();
    EXPECT_EQ(t, b.Next());
    ASSERT_GT(t, prev);
    const double gap = t - prev;
    sum_sq += gap * gap;
    prev = t;
    last = t;
  }
  // Mean gap 1/50 s within 3%; exponential gaps have E[g^2] = 2/rate^2.
  EXPECT_NEAR(last / n, 0.02, 0.02 * 0.03);
  EXPECT_NEAR(sum_sq / n, 2.0 / (50.0 * 50.0), 2.0 / 2500.0 * 0.1);
}

TEST(TraceTest, ParsesPromptAndMessagesLines) {
  absl::StatusOr<RequestSpec> a =
      ParseTraceLine(R"({"timestamp_ms": 1500, "prompt": "hello", "max_tokens": 3,
                         "model": "m2", "extra": 1})",
                     1, 16);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->api, Api::kCompletions);
  EXPECT_EQ(a->prompt, "hello");
  EXPECT_EQ(a->max_tokens, 3);
  EXPECT_EQ(a->model, "m2");
  EXPECT_DOUBLE_EQ(a->arrival_s, 1.5);

  absl::StatusOr<RequestSpec> b =
      ParseTraceLine(R"({"messages": [{"role": "user", "content": "hi"}]})", 2, 16);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->api, Api::kChat);
  EXPECT_EQ(b->max_tokens, 16);
  EXPECT_EQ(b->arrival_s, -1);
  EXPECT_EQ(b->Body("dflt")["model"], "dflt");
  EXPECT_EQ(b->Body("dflt")["messages"][0]["content"], "hi");
}

TEST(TraceTest, BadLinesNameTheLineAndTheProblem) {
  struct Case {
    const char* line;
    const char* expect;
  };
  const Case cases[] = {
      {"{not json", "not valid JSON"},
      {"[1, 2]", "not a JSON object"},
      {R"({"max_tokens": 3})", "exactly one of"},
      {R"({"prompt": "a", "messages": []})", "exactly one of"},
      {R"({"prompt": ""})", "non-empty string"},
      {R"({"prompt": 5})", "non-empty string"},
      {R"({"messages": []})", "non-empty array"},
      {R"({"messages": [{"role": "user"}]})", "messages[0]"},
      {R"({"prompt": "a", "max_tokens": 0})", "max_tokens"},
      {R"({"prompt": "a", "max_tokens": 1.5})", "max_tokens"},
      {R"({"prompt": "a", "timestamp_ms": -1})", "timestamp_ms"},
      {R"({"prompt": "a", "model": 3})", "model"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<RequestSpec> r = ParseTraceLine(c.line, 7, 16);
    ASSERT_FALSE(r.ok()) << c.line;
    const std::string msg(r.status().message());
    EXPECT_NE(msg.find("line 7: "), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.line << " -> " << msg;
  }
}

class TraceFileTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& text) { return dir_.Write("trace.jsonl", text); }

 private:
  aibrix::testing::TempDir dir_{"trace"};
};

TEST_F(TraceFileTest, LoadsRelativeTimestampsSkippingBlankLines) {
  const std::string path = Write(
      "{\"timestamp_ms\": 1000, \"prompt\": \"a\"}\n\n"
      "{\"timestamp_ms\": 1250, \"prompt\": \"b\"}\n"
      "  \n{\"timestamp_ms\": 3000, \"messages\": [{\"role\": \"user\", \"content\": \"c\"}]}\n");
  absl::StatusOr<Trace> t = LoadTrace(path, 9);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->requests.size(), 3u);
  EXPECT_TRUE(t->all_timestamped);
  EXPECT_DOUBLE_EQ(t->requests[0].arrival_s, 0);
  EXPECT_DOUBLE_EQ(t->requests[1].arrival_s, 0.25);
  EXPECT_DOUBLE_EQ(t->requests[2].arrival_s, 2.0);
  EXPECT_EQ(t->requests[2].index, 2u);
  EXPECT_EQ(t->requests[2].max_tokens, 9);
}

TEST_F(TraceFileTest, ErrorsNameFileAndLine) {
  const std::string path = Write("{\"prompt\": \"a\"}\n\n{\"prompt\": 3}\n");
  absl::StatusOr<Trace> t = LoadTrace(path, 9);
  ASSERT_FALSE(t.ok());
  const std::string msg(t.status().message());
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("line 3"), std::string::npos) << msg;

  const std::string back = Write(
      "{\"timestamp_ms\": 10, \"prompt\": \"a\"}\n{\"timestamp_ms\": 5, \"prompt\": \"b\"}\n");
  t = LoadTrace(back, 9);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(std::string(t.status().message()).find("backwards"), std::string::npos);

  EXPECT_FALSE(LoadTrace(Write("\n\n"), 9).ok());
  EXPECT_EQ(LoadTrace("/nonexistent/trace.jsonl", 9).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(TraceFileTest, UntimedLinesAreFlagged) {
  absl::StatusOr<Trace> t =
      LoadTrace(Write("{\"timestamp_ms\": 1, \"prompt\": \"a\"}\n{\"prompt\": \"b\"}\n"), 9);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_FALSE(t->all_timestamped);
}

}  // namespace
}  // namespace aibrix::loadgen
