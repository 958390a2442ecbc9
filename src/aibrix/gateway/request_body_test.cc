#include "aibrix/gateway/request_body.h"

#include <functional>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aibrix::gateway {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Runs `check` with each reader of compact id windows this CPU has: SSE2 always, AVX-512
// VBMI when present (left on afterwards, the default).
void ForEachWindowReader(const std::function<void()>& check) {
  internal::SetWideTokenWindows(false);
  check();
  if (internal::SetWideTokenWindows(true)) check();
}

TEST(RequestBodyTest, ReadsRoutingFields) {
  auto body = ParseRequestBody(
      R"({"model":"llama","algorithm":"kv-aware","request_id":"r1","stream":true,)"
      R"("token_ids":[1,2,4294967295],"max_tokens":5,"extra":{"nested":[1,{"a":null}]}})");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(body->model, "llama");
  EXPECT_EQ(body->algorithm, "kv-aware");
  EXPECT_EQ(body->request_id, "r1");
  EXPECT_TRUE(body->stream);
  EXPECT_THAT(*body->token_ids, ElementsAre(1u, 2u, 4294967295u));
}

TEST(RequestBodyTest, AcceptsWhatOpenAiClientsSend) {
  // A UTF-8 byte-order mark, "stream": null, an integer past 64 bits in an ignored field, a
  // null lora — on both parse paths (token-id fast path and DOM).
  for (const std::string prompt : {R"("prompt":[1,2,3])", R"("prompt":"hi")"}) {
    auto body = ParseRequestBody(
        "\xEF\xBB\xBF{\"model\":\"m\",\"stream\":null,\"seed\":"
        "123456789012345678901234567890,\"logit_bias\":{\"50256\":-100},"
        "\"lora\":null," +
        prompt + "}");
    ASSERT_TRUE(body.ok()) << prompt << ": " << body.status();
    EXPECT_EQ(body->model, "m");
    EXPECT_FALSE(body->stream);
    EXPECT_FALSE(body->lora.has_value());
  }
  auto lora = ParseRequestBody(R"({"model":"m","lora":"sql-adapter","prompt":"x"})");
  ASSERT_TRUE(lora.ok());
  EXPECT_EQ(lora->lora, "sql-adapter");
  EXPECT_FALSE(ParseRequestBody(R"({"model":"m","stream":"yes"})").ok());
  EXPECT_FALSE(ParseRequestBody("\xEF\xBB{}").ok());
}

TEST(RequestBodyTest, ReadsTheEndUserOnBothPaths) {
  for (const std::string prompt : {R"("prompt":[1,2,3])", R"("prompt":"hi")"}) {
    auto body = ParseRequestBody(R"({"model":"m","user":"alice",)" + prompt + "}");
    ASSERT_TRUE(body.ok()) << prompt << ": " << body.status();
    EXPECT_EQ(body->user, "alice");
    body = ParseRequestBody(R"({"model":"m","user":null,)" + prompt + "}");
    ASSERT_TRUE(body.ok()) << prompt;
    EXPECT_FALSE(body->user.has_value());
    body = ParseRequestBody(R"({"model":"m","user":7,)" + prompt + "}");
    ASSERT_FALSE(body.ok()) << prompt;
    EXPECT_EQ(std::string(body.status().message()), "'user' must be a string");
  }
}

TEST(RequestBodyTest, PromptFormsAndMessages) {
  auto text = ParseRequestBody(R"({"model":"m","prompt":"hi \u00e9"})");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->prompt, "hi \xc3\xa9");
  auto ids = ParseRequestBody(R"({"model":"m","prompt":[7,8]})");
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids->token_ids, ElementsAre(7u, 8u));
  auto chat = ParseRequestBody(R"({"model":"m","messages":[{"role":"user","content":"x"}]})");
  ASSERT_TRUE(chat.ok());
  ASSERT_TRUE(chat->messages.has_value());
  EXPECT_THAT(*chat->messages, ElementsAre(tokenizer::ChatMessage{"user", "x"}));
  auto done = ParseRequestBody(R"({"request_id":"r","input_tokens":3,"output_tokens":4})");
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->output_tokens, 4u);
}

// `messages` becomes ChatMessages with ParseChatMessages' rules (tokenizer/chat_json.h).
TEST(RequestBodyTest, ChatMessages) {
  auto body = ParseRequestBody(
      R"({"model":"m","messages":[)"
      R"({"role":"system","content":"be \"terse\"\n"},)"
      R"({"role":"assistant","content":null,"tool_calls":[{"id":"t"}]},)"
      R"({"role":"assistant"},)"
      R"({"role":"user","content":[{"type":"text","text":"a"},)"
      R"({"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b\u00e9"},)"
      R"({"type":"text"},{"text":"untyped"},{"type":"text","text":5}]},)"
      R"({"role":"user","content":[]}]})");
  ASSERT_TRUE(body.ok()) << body.status();
  using tokenizer::ChatMessage;
  EXPECT_THAT(*body->messages,
              ElementsAre(ChatMessage{"system", "be \"terse\"\n"}, ChatMessage{"assistant", ""},
                          ChatMessage{"assistant", ""}, ChatMessage{"user", "ab\xc3\xa9"},
                          ChatMessage{"user", ""}));
  EXPECT_FALSE(body->prompt.has_value());
  EXPECT_FALSE(body->token_ids.has_value());
  // The same words as ParseChatMessages, with the index of the bad message.
  struct Case {
    const char* messages;
    const char* message;
  };
  for (const Case& c : std::vector<Case>{
           {"{}", "'messages' must be an array of messages"},
           {"\"hi\"", "'messages' must be an array of messages"},
           {"[]", "`messages` must not be empty"},
           {"[1]", "messages[0] must be an object"},
           {R"([{"role":"user","content":"x"},{"content":"x"}])",
            "messages[1].role must be a string"},
           {R"([{"role":5,"content":"x"}])", "messages[0].role must be a string"},
           {R"([{"role":"user","content":5}])",
            "messages[0].content must be a string, an array of parts or null"},
           {R"([{"role":"user","content":{"text":"x"}}])",
            "messages[0].content must be a string, an array of parts or null"},
           {R"([{"role":"user","content":[5]}])", "messages[0].content parts must be objects"},
       }) {
    const std::string json = std::string(R"({"model":"m","messages":)") + c.messages + "}";
    auto bad = ParseRequestBody(json);
    ASSERT_FALSE(bad.ok()) << json;
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << json;
    EXPECT_EQ(std::string(bad.status().message()), c.message) << json;
  }
}

TEST(RequestBodyTest, RejectsGarbageWithTheField) {
  struct Case {
    const char* body;
    const char* message;
  };
  for (const Case& c : std::vector<Case>{
           {"", "malformed JSON"},
           {"{", "malformed JSON"},
           {"[1]", "must be a JSON object"},
           {"{\"model\": 3}", "'model' must be a string"},
           {"{\"model\":\"m\",\"token_ids\":[1,-2]}", "token ids must be integers"},
           {"{\"model\":\"m\",\"token_ids\":[4294967296]}", "token ids must be integers"},
           {"{\"model\":\"m\",\"token_ids\":\"abc\"}", "'token_ids' must be an array"},
           {"{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}", "batched prompts"},
           {"{\"model\":\"m\",\"prompt\":{}}", "'prompt' must be"},
           {"{\"model\":\"m\",\"stream\":\"yes\"}", "'stream' must be a boolean"},
           {"{\"model\":\"m\",\"messages\":{}}", "'messages' must be an array"},
           {"{\"model\":\"m\"} trailing", "malformed JSON"},
           {"{\"output_tokens\":-1}", "non-negative integer"},
           {"\xff\xfe{}", "malformed JSON"},
       }) {
    auto body = ParseRequestBody(c.body);
    ASSERT_FALSE(body.ok()) << c.body;
    EXPECT_THAT(std::string(body.status().message()), HasSubstr(c.message)) << c.body;
  }
}

TEST(RequestBodyTest, LargeTokenArray) {
  std::string json = R"({"model":"m","token_ids":[)";
  for (int i = 0; i < 8192; ++i) json += (i ? "," : "") + std::to_string(i * 7);
  json += "]}";
  auto body = ParseRequestBody(json);
  ASSERT_TRUE(body.ok());
  ASSERT_EQ(body->token_ids->size(), 8192u);
  EXPECT_EQ((*body->token_ids)[8191], 8191u * 7);
}

// The split fast path must mean exactly what the whole-body DOM means, on every shape of
// token array and every way of breaking one.
TEST(RequestBodyTest, FastPathAgreesWithTheDom) {
  const std::vector<std::string> bodies = {
      R"({"model":"m","token_ids":[]})",
      R"({"model":"m","token_ids":[0]})",
      R"({"model":"m","token_ids":[1,22,333,4444,55555,666666,7777777,88888888]})",
      R"({"model":"m","token_ids":[999999999,4294967295,1]})",
      R"( { "model" : "m" , "token_ids" : [ 1 , 2 ,3, 4 ] , "stream" : true } )",
      "{\"model\":\"m\",\"token_ids\":[1,\n\t2\r\n]}",
      R"({"token_ids":[5,6],"model":"m","request_id":"r","algorithm":"kv-aware"})",
      R"({"model":"m","prompt":[7,8],"extra":{"a":["]",{"b":"}"}],"c":"\"]"}})",
      R"({"model":"m","prompt":"text","token_ids":[1]})",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"token_ids":[3]})",
      // Everything below must fail or fall back, with the DOM's words.
      R"({"model":"m","token_ids":[01]})",
      R"({"model":"m","token_ids":[1.5]})",
      R"({"model":"m","token_ids":[1e3]})",
      R"({"model":"m","token_ids":[-1]})",
      R"({"model":"m","token_ids":[4294967296]})",
      R"({"model":"m","token_ids":[12345678901]})",
      R"({"model":"m","token_ids":[1,]})",
      R"({"model":"m","token_ids":[,1]})",
      R"({"model":"m","token_ids":[1 2]})",
      R"({"model":"m","token_ids":[1,"2"]})",
      R"({"model":"m","token_ids":[1],"token_ids":[2]})",
      R"({"model":"m","prompt":[1],"token_ids":[2]})",
      R"({"model":"m","token_ids":[1])",
      R"({"model":"m","token_ids":[1]} x)",
      R"({"model":"m","token_ids":[1],})",
      R"({"model":"m" "token_ids":[1]})",
      R"({"model":m,"token_ids":[1]})",
      R"({"mo\u0064el":"m","token_ids":[1]})",
      R"({"model":"m","token_ids":[1],"x":[}})",
      R"({"model":"m","token_ids":[1],"x":"\q"})",
      "{\"model\":\"\xff\",\"token_ids\":[1]}",
      R"({"model":3,"token_ids":[1]})",
      R"({"model":"m","token_ids":[123)",
      R"({"model":"m","token_ids":[12345678)",
  };
  for (const std::string& json : bodies) {
    const auto fast = ParseRequestBody(json);
    const auto dom = internal::ParseRequestBodyDom(json);
    ASSERT_EQ(fast.ok(), dom.ok()) << json;
    if (!fast.ok()) {
      EXPECT_EQ(fast.status(), dom.status()) << json;
      continue;
    }
    EXPECT_EQ(fast->model, dom->model) << json;
    EXPECT_EQ(fast->algorithm, dom->algorithm) << json;
    EXPECT_EQ(fast->request_id, dom->request_id) << json;
    EXPECT_EQ(fast->stream, dom->stream) << json;
    EXPECT_EQ(fast->token_ids, dom->token_ids) << json;
    EXPECT_EQ(fast->prompt, dom->prompt) << json;
    EXPECT_EQ(fast->messages, dom->messages) << json;
  }
}

// Long arrays in random layouts (ids of every length, both separators, the odd other
// whitespace or defect) cross the bulk reader's 64-byte windows everywhere.
TEST(RequestBodyTest, LongRandomArraysAgreeWithTheDom) {
  ForEachWindowReader([] {
    std::mt19937_64 rng(11);
    const std::vector<std::string> separators = {",", ", ", ",", ", ", " , ", ",\n", ",  "};
    for (int round = 0; round < 300; ++round) {
      std::string json = R"({"model":"m","token_ids":[)";
      const int count = static_cast<int>(rng() % 400);
      const int layout = static_cast<int>(rng() % separators.size());
      std::vector<uint32_t> want;
      for (int i = 0; i < count; ++i) {
        const uint32_t id = static_cast<uint32_t>(rng() >> (rng() % 64));
        if (i > 0) json += separators[rng() % 20 == 0 ? rng() % separators.size() : layout];
        json += std::to_string(id);
        want.push_back(id);
      }
      if (rng() % 10 == 0) json += rng() % 2 ? "," : ",01";  // a defect now and then
      json += R"(],"stream":false})";
      const auto fast = ParseRequestBody(json);
      const auto dom = internal::ParseRequestBodyDom(json);
      ASSERT_EQ(fast.ok(), dom.ok()) << json;
      if (!fast.ok()) {
        EXPECT_EQ(fast.status(), dom.status());
        continue;
      }
      EXPECT_EQ(*fast->token_ids, *dom->token_ids) << json;
      EXPECT_EQ(*fast->token_ids, want) << json;
    }
  });
}

// Every id width the windows fold (1 to 8 digits, their extremes) and the widths they hand
// to the scalar reader (9 and 10 digits), at every offset in a window, in the separator
// layouts clients send (and two that are rare but valid).
TEST(RequestBodyTest, CompactWindowsReadEveryWidth) {
  ForEachWindowReader([] {
    const std::vector<uint32_t> cycle = {0,         7,         10,          99,       100,
                                         999,       1000,      65535,       100000,   999999,
                                         1000000,   9999999,   10000000,    12345678, 99999999,
                                         100000000, 987654321, 4294967295u, 1,        42};
    for (const std::string separator : {",", ", ", " ,", " ,  "}) {
      std::string json = R"({"model":"m","token_ids":[)";
      std::vector<uint32_t> want;
      for (int i = 0; i < 700; ++i) {
        const uint32_t id = cycle[static_cast<size_t>(i * 7 + i / 20) % cycle.size()];
        if (i > 0) json += separator;
        json += std::to_string(id);
        want.push_back(id);
      }
      json += "]}";
      const auto body = ParseRequestBody(json);
      ASSERT_TRUE(body.ok()) << body.status();
      EXPECT_EQ(*body->token_ids, want) << '"' << separator << '"';
    }
  });
}

// Long compact arrays ("1,22,333": the 64-byte window reader) with ids of 1 to 8 digits,
// and now and then something the windows must hand back to the scalar reader at the right
// place: a 9- or 10-digit id, a space, a leading zero, an empty id, a sign.
TEST(RequestBodyTest, CompactWindowsAgreeWithTheDomAndHandOffExactly) {
  ForEachWindowReader([] {
    std::mt19937_64 rng(23);
    const std::vector<std::string> defects = {"1234567890", "123456789", " 7", "07", "", "-1"};
    for (int round = 0; round < 400; ++round) {
      std::string json = R"({"model":"m","token_ids":[)";
      const int count = 1 + static_cast<int>(rng() % 600);
      std::vector<uint32_t> want;
      bool valid = true;
      for (int i = 0; i < count; ++i) {
        if (i > 0) json += ',';
        if (rng() % 200 == 0) {
          const std::string& d = defects[rng() % defects.size()];
          json += d;
          if (d == "1234567890" || d == "123456789" || d == " 7") {
            want.push_back(static_cast<uint32_t>(std::stoul(d)));
          } else {
            valid = false;
          }
          continue;
        }
        const int digits = 1 + static_cast<int>(rng() % 8);
        uint32_t id = static_cast<uint32_t>(rng() % 10);
        for (int d = 1; d < digits; ++d) id = id * 10 + static_cast<uint32_t>(rng() % 10);
        json += std::to_string(id);
        want.push_back(static_cast<uint32_t>(std::stoul(std::to_string(id))));
      }
      json += R"(],"stream":true})";
      const auto fast = ParseRequestBody(json);
      const auto dom = internal::ParseRequestBodyDom(json);
      ASSERT_EQ(fast.ok(), dom.ok()) << json;
      ASSERT_EQ(fast.ok(), valid) << json;
      if (!fast.ok()) {
        EXPECT_EQ(fast.status(), dom.status());
        continue;
      }
      EXPECT_EQ(*fast->token_ids, *dom->token_ids) << json;
      EXPECT_EQ(*fast->token_ids, want) << json;
      EXPECT_TRUE(fast->stream);
    }
  });
}

}  // namespace
}  // namespace aibrix::gateway
