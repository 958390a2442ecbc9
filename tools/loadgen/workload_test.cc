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

TraceOptions Jsonl() {
  TraceOptions o;
  o.default_max_tokens = 9;
  return o;
}

TraceOptions Mooncake(int block_tokens) {
  TraceOptions o;
  o.format = TraceFormat::kMooncake;
  o.block_tokens = block_tokens;
  return o;
}

TEST(MooncakeTest, SharedHashIdsShareExactlyThoseBlocks) {
  const BlockPrompt a{{1, 2, 3}, 10, 4, 1};  // blocks 1, 2 and half of 3
  const BlockPrompt b{{1, 2, 7}, 12, 4, 2};
  const BlockPrompt c{{1, 2, 3}, 12, 4, 3};
  const std::vector<uint32_t> ta = a.Tokens(), tb = b.Tokens(), tc = c.Tokens();
  ASSERT_EQ(ta.size(), 10u);
  ASSERT_EQ(tb.size(), 12u);
  EXPECT_TRUE(std::equal(ta.begin(), ta.begin() + 8, tb.begin()));
  // Block 3 differs from block 7 (a collision of all four ids would be a broken hash).
  EXPECT_FALSE(std::equal(ta.begin() + 8, ta.end(), tb.begin() + 8));
  // The partial last block is the head of the full one.
  EXPECT_TRUE(std::equal(ta.begin(), ta.end(), tc.begin()));
  for (uint32_t t : tc) EXPECT_LT(t, kBlockPromptVocab);
  // Blocks differ from one another, and the same ids give the same tokens in every call.
  EXPECT_FALSE(std::equal(tc.begin(), tc.begin() + 4, tc.begin() + 4));
  EXPECT_EQ(BlockPrompt(a).Tokens(), ta);
  // Text: one character per token, shared exactly where the tokens are.
  const std::string xa = a.Text(), xb = b.Text();
  ASSERT_EQ(xa.size(), 10u);
  EXPECT_EQ(xa.substr(0, 8), xb.substr(0, 8));
  EXPECT_NE(xa.substr(8), xb.substr(8, 2));
  EXPECT_EQ(xa.find_first_not_of("abcdefghijklmnopqrstuvwxyz "), std::string::npos);
}

TEST(MooncakeTest, FillerBlocksPastTheListedIdsAreUniquePerLine) {
  const BlockPrompt a{{5}, 8, 4, 1};
  const BlockPrompt b{{5}, 8, 4, 2};
  const std::vector<uint32_t> ta = a.Tokens(), tb = b.Tokens();
  ASSERT_EQ(ta.size(), 8u);
  EXPECT_TRUE(std::equal(ta.begin(), ta.begin() + 4, tb.begin()));
  EXPECT_FALSE(std::equal(ta.begin() + 4, ta.end(), tb.begin() + 4));
}

TEST(MooncakeTest, BadLinesNameTheLineAndTheProblem) {
  struct Case {
    const char* line;
    const char* expect;
  };
  const Case cases[] = {
      {"{", "not valid JSON"},
      {"[1]", "not a JSON object"},
      {R"({"input_length": 5, "output_length": 1, "hash_ids": [1]})", "timestamp"},
      {R"({"timestamp": -1, "input_length": 5, "output_length": 1, "hash_ids": [1]})", "timestamp"},
      {R"({"timestamp": 0, "output_length": 1, "hash_ids": [1]})", "input_length"},
      {R"({"timestamp": 0, "input_length": 0, "output_length": 1, "hash_ids": [1]})",
       "input_length"},
      {R"({"timestamp": 0, "input_length": 99999999999, "output_length": 1, "hash_ids": []})",
       "input_length"},
      {R"({"timestamp": 0, "input_length": 5, "output_length": 1.5, "hash_ids": [1]})",
       "output_length"},
      {R"({"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": 3})", "hash_ids"},
      {R"({"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": [-1]})", "hash_ids"},
      {R"({"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": ["a"]})", "hash_ids"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<MooncakeRecord> r = ParseMooncakeLine(c.line, 4);
    ASSERT_FALSE(r.ok()) << c.line;
    const std::string msg(r.status().message());
    EXPECT_NE(msg.find("line 4: "), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.line << " -> " << msg;
  }
  absl::StatusOr<MooncakeRecord> r = ParseMooncakeLine(
      R"({"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59]})",
      1);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_DOUBLE_EQ(r->timestamp_ms, 27482);
  EXPECT_EQ(r->input_length, 6955);
  EXPECT_EQ(r->output_length, 52);
  EXPECT_EQ(r->hash_ids.size(), 14u);
  EXPECT_EQ(r->hash_ids[13], 59u);
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
  absl::StatusOr<Trace> t = LoadTrace(path, Jsonl());
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
  absl::StatusOr<Trace> t = LoadTrace(path, Jsonl());
  ASSERT_FALSE(t.ok());
  const std::string msg(t.status().message());
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("line 3"), std::string::npos) << msg;

  const std::string back = Write(
      "{\"timestamp_ms\": 10, \"prompt\": \"a\"}\n{\"timestamp_ms\": 5, \"prompt\": \"b\"}\n");
  t = LoadTrace(back, Jsonl());
  ASSERT_FALSE(t.ok());
  EXPECT_NE(std::string(t.status().message()).find("backwards"), std::string::npos);

  EXPECT_FALSE(LoadTrace(Write("\n\n"), Jsonl()).ok());
  EXPECT_EQ(LoadTrace("/nonexistent/trace.jsonl", Jsonl()).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(TraceFileTest, MooncakeLinesBecomeBlockPromptsAndBadLinesAreSkippedAndCounted) {
  TraceOptions o = Mooncake(4);
  o.max_output_tokens = 20;
  const std::string path =
      Write(R"({"timestamp": 500, "input_length": 7, "output_length": 30, "hash_ids": [1, 2]})"
            "\n"
            R"({"timestamp": 400, "input_length": 7, "output_length": 3, "hash_ids": [1, 2]})"
            "\n"
            "not json\n\n"
            R"({"timestamp": 1500, "input_length": 8, "output_length": 0, "hash_ids": [1, 3]})"
            "\n");
  absl::StatusOr<Trace> t = LoadTrace(path, o);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->requests.size(), 2u);
  EXPECT_EQ(t->bad_lines, 2u);  // the backwards timestamp and the garbage
  ASSERT_EQ(t->bad_line_samples.size(), 2u);
  EXPECT_NE(t->bad_line_samples[0].find("line 2: the timestamp goes backwards"), std::string::npos)
      << t->bad_line_samples[0];
  EXPECT_NE(t->bad_line_samples[1].find("line 3: not valid JSON"), std::string::npos);
  const RequestSpec& a = t->requests[0];
  const RequestSpec& b = t->requests[1];
  EXPECT_DOUBLE_EQ(a.arrival_s, 0);
  EXPECT_DOUBLE_EQ(b.arrival_s, 1.0);
  EXPECT_EQ(a.max_tokens, 20);  // capped
  EXPECT_EQ(b.max_tokens, 1);   // at least one token
  EXPECT_EQ(a.api, Api::kCompletions);
  const json body = a.Body("m");
  ASSERT_TRUE(body["prompt"].is_array());
  EXPECT_EQ(body["prompt"].size(), 7u);
  EXPECT_EQ(body["max_tokens"], 20);
  const std::vector<uint32_t> bt = b.Body("m")["prompt"].get<std::vector<uint32_t>>();
  EXPECT_TRUE(std::equal(bt.begin(), bt.begin() + 4, body["prompt"].begin()));

  o.text_prompts = true;
  t = LoadTrace(path, o);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->requests[0].Body("m")["prompt"].get<std::string>().size(), 7u);

  absl::StatusOr<Trace> none = LoadTrace(Write("garbage\n"), o);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(std::string(none.status().message()).find("1 bad lines"), std::string::npos);
}

TEST_F(TraceFileTest, UntimedLinesAreFlagged) {
  absl::StatusOr<Trace> t =
      LoadTrace(Write("{\"timestamp_ms\": 1, \"prompt\": \"a\"}\n{\"prompt\": \"b\"}\n"), Jsonl());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_FALSE(t->all_timestamped);
}

}  // namespace
}  // namespace aibrix::loadgen
