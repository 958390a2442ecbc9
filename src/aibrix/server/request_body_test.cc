#include "aibrix/server/request_body.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aibrix::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

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

TEST(RequestBodyTest, PromptFormsAndMessages) {
  auto text = ParseRequestBody(R"({"model":"m","prompt":"hi \u00e9"})");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->prompt, "hi \xc3\xa9");
  auto ids = ParseRequestBody(R"({"model":"m","prompt":[7,8]})");
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids->token_ids, ElementsAre(7u, 8u));
  auto chat = ParseRequestBody(R"({"model":"m","messages":[{"role":"user","content":"x"}]})");
  ASSERT_TRUE(chat.ok());
  EXPECT_EQ(chat->messages_json, R"([{"role":"user","content":"x"}])");
  auto done = ParseRequestBody(R"({"request_id":"r","input_tokens":3,"output_tokens":4})");
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->output_tokens, 4u);
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

}  // namespace
}  // namespace aibrix::server
