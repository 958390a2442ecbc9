#include "aibrix/tokenizer/byte_tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "aibrix/tokenizer/chat_json.h"
#include "nlohmann/json.hpp"

namespace aibrix::tokenizer {
namespace {

using ::testing::ElementsAre;

std::vector<ChatMessage> Messages(const std::string& json) {
  auto parsed = ParseChatMessages(nlohmann::json::parse(json));
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? std::move(*parsed) : std::vector<ChatMessage>{};
}

TEST(ByteTokenizerTest, OneTokenPerUtf8Byte) {
  ByteTokenizer tok;
  auto ids = tok.Tokenize("Hi é");
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre('H', 'i', ' ', 0xC3, 0xA9));
  EXPECT_TRUE(tok.Tokenize("")->empty());
}

TEST(ByteTokenizerTest, DetokenizeRoundTripsAndRejectsOutOfVocab) {
  ByteTokenizer tok;
  const std::string text = "Hello, world \xF0\x9F\x98\x80";
  auto ids = tok.Tokenize(text);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*tok.Detokenize(*ids), text);
  TokenIds bad = {72, 256};
  auto st = tok.Detokenize(bad);
  EXPECT_EQ(st.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.status().message()), ::testing::HasSubstr("256"));
}

TEST(ByteTokenizerTest, ChatTemplateIsDocumentedLayout) {
  ByteTokenizer tok;
  auto messages =
      Messages(R"([{"role":"system","content":"You are terse."},{"role":"user","content":"Hi"}])");
  auto ids = tok.TokenizeChat(messages, ChatOptions{});
  ASSERT_TRUE(ids.ok());
  const std::string expected = "<|system|>\nYou are terse.\n<|user|>\nHi\n<|assistant|>\n";
  EXPECT_EQ(*ids, ByteTokenizer::Encode(expected));

  ChatOptions no_gen{.add_generation_prompt = false};
  EXPECT_EQ(*tok.TokenizeChat(messages, no_gen),
            ByteTokenizer::Encode("<|system|>\nYou are terse.\n<|user|>\nHi\n"));

  ChatOptions cont{.add_generation_prompt = false, .continue_final_message = true};
  EXPECT_EQ(*tok.TokenizeChat(messages, cont),
            ByteTokenizer::Encode("<|system|>\nYou are terse.\n<|user|>\nHi"));

  ChatOptions both{.add_generation_prompt = true, .continue_final_message = true};
  EXPECT_EQ(tok.TokenizeChat(messages, both).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ByteTokenizerTest, MultiTurnPromptExtendsPreviousPromptPlusReply) {
  // The property prefix caching relies on: turn 2's prompt starts with turn 1's prompt
  // followed by the generated reply.
  ByteTokenizer tok;
  auto turn1 = Messages(R"([{"role":"user","content":"Q1"}])");
  auto turn2 = Messages(
      R"([{"role":"user","content":"Q1"},{"role":"assistant","content":"A1"},
          {"role":"user","content":"Q2"}])");
  TokenIds p1 = *tok.TokenizeChat(turn1, ChatOptions{});
  TokenIds reply = ByteTokenizer::Encode("A1");
  p1.insert(p1.end(), reply.begin(), reply.end());
  TokenIds p2 = *tok.TokenizeChat(turn2, ChatOptions{});
  ASSERT_GT(p2.size(), p1.size());
  EXPECT_TRUE(std::equal(p1.begin(), p1.end(), p2.begin()));
}

TEST(ByteTokenizerTest, ContentPartsAndNullContent) {
  auto messages = nlohmann::json::parse(
      R"([{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{}},
          {"type":"text","text":"b"}]},{"role":"assistant","content":null}])");
  auto parsed = ParseChatMessages(messages);
  ASSERT_TRUE(parsed.ok());
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ((*parsed)[0].content, "ab");
  EXPECT_EQ((*parsed)[1].content, "");
}

TEST(ByteTokenizerTest, MalformedMessagesAreInvalidArgument) {
  ByteTokenizer tok;
  for (const char* bad :
       {R"({})", R"([])", R"([1])", R"([{"content":"x"}])", R"([{"role":5,"content":"x"}])",
        R"([{"role":"user","content":5}])", R"([{"role":"user","content":[5]}])"}) {
    auto st = ParseChatMessages(nlohmann::json::parse(bad));
    EXPECT_EQ(st.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(tok.TokenizeChat({}, ChatOptions{}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace aibrix::tokenizer
