#include "aibrix/discovery/line_assembler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace aibrix::discovery {
namespace {

using ::testing::ElementsAre;
using Outcome = LineAssembler::Outcome;

struct Collected {
  std::vector<std::string> lines;
  bool padded = true;  // every line was followed by kJsonPadding readable zero bytes
};

// Feeds `bytes` in pieces of `step` bytes and collects the lines.
Collected FeedInSteps(LineAssembler& assembler, std::string_view bytes, size_t step) {
  Collected out;
  for (size_t at = 0; at < bytes.size(); at += step) {
    auto result = assembler.Feed(bytes.substr(at, step), [&](std::string_view line) {
      out.lines.emplace_back(line);
      for (size_t i = 0; i < kJsonPadding; ++i) out.padded &= line.data()[line.size() + i] == 0;
      return true;
    });
    EXPECT_EQ(result.outcome, Outcome::kConsumed);
  }
  return out;
}

TEST(LineAssemblerTest, WatchSampleSplitAtEveryByteBoundary) {
  std::ifstream in(std::string(AIBRIX_TESTDATA_DIR) + "/k8s/watch_stream_sample.jsonl");
  std::stringstream text;
  text << in.rdbuf();
  const std::string stream = text.str();
  std::vector<std::string> expected;
  std::stringstream lines(stream);
  for (std::string line; std::getline(lines, line);) expected.push_back(line);
  ASSERT_EQ(expected.size(), 7u);
  for (size_t step :
       {size_t{1}, size_t{2}, size_t{3}, size_t{7}, size_t{64}, size_t{4093}, stream.size()}) {
    LineAssembler assembler(1 << 20);
    Collected got = FeedInSteps(assembler, stream, step);
    EXPECT_EQ(got.lines, expected) << "step " << step;
    EXPECT_TRUE(got.padded);
    EXPECT_EQ(assembler.buffered(), 0u);
  }
}

TEST(LineAssemblerTest, CarriageReturnsAndEmptyLines) {
  LineAssembler assembler(100);
  Collected got = FeedInSteps(assembler, "a\r\n\n\r\nb\nc\r", 1);
  EXPECT_THAT(got.lines, ElementsAre("a", "b"));
  EXPECT_EQ(assembler.buffered(), 2u);  // "c\r" waits for its newline
  got = FeedInSteps(assembler, "\n", 1);
  EXPECT_THAT(got.lines, ElementsAre("c"));
}

TEST(LineAssemblerTest, StopLeavesTheRestUnread) {
  LineAssembler assembler(100);
  std::vector<std::string> lines;
  auto result = assembler.Feed("one\ntwo\nthree\n", [&](std::string_view line) {
    lines.emplace_back(line);
    return line != "two";
  });
  EXPECT_EQ(result.outcome, Outcome::kStopped);
  EXPECT_EQ(result.consumed, 8u);
  EXPECT_THAT(lines, ElementsAre("one", "two"));
}

TEST(LineAssemblerTest, LineOverTheCapIsCutAndTheNextLineComesThrough) {
  LineAssembler assembler(8);
  std::vector<std::string> lines;
  auto collect = [&](std::string_view line) {
    lines.emplace_back(line);
    return true;
  };
  // Exactly at the cap passes.
  EXPECT_EQ(assembler.Feed("12345678\n", collect).outcome, Outcome::kConsumed);
  // Over the cap within one chunk: reported with the bytes up to its newline consumed.
  auto result = assembler.Feed("123456789\nnext\n", collect);
  EXPECT_EQ(result.outcome, Outcome::kLineTooLong);
  EXPECT_EQ(result.consumed, 10u);
  EXPECT_EQ(assembler.Feed(std::string_view("123456789\nnext\n").substr(10), collect).outcome,
            Outcome::kConsumed);
  // Over the cap across chunks: noticed as soon as the cap is passed, the rest of that line
  // dropped without being held.
  EXPECT_EQ(assembler.Feed("12345", collect).outcome, Outcome::kConsumed);
  result = assembler.Feed("6789abcdef", collect);
  EXPECT_EQ(result.outcome, Outcome::kLineTooLong);
  EXPECT_EQ(assembler.buffered(), 0u);
  EXPECT_EQ(assembler.Feed(std::string(1000, 'z'), collect).outcome, Outcome::kConsumed);
  EXPECT_EQ(assembler.buffered(), 0u);
  EXPECT_EQ(assembler.Feed("zz\nlast\n", collect).outcome, Outcome::kConsumed);
  EXPECT_THAT(lines, ElementsAre("12345678", "next", "last"));
}

TEST(LineAssemblerTest, ResetForgetsThePartialLine) {
  LineAssembler assembler(8);
  std::vector<std::string> lines;
  auto collect = [&](std::string_view line) {
    lines.emplace_back(line);
    return true;
  };
  assembler.Feed("half", collect);
  assembler.Reset();
  assembler.Feed("whole\n", collect);
  EXPECT_THAT(lines, ElementsAre("whole"));
}

}  // namespace
}  // namespace aibrix::discovery
