#include "aibrix/gateway/usage_scanner.h"

#include <string>

#include "gtest/gtest.h"

namespace aibrix::gateway {
namespace {

std::optional<int64_t> ScanInPieces(const std::string& text, size_t piece) {
  UsageScanner scanner;
  for (size_t at = 0; at < text.size(); at += piece)
    scanner.Feed(std::string_view(text).substr(at, piece));
  return scanner.output_tokens();
}

TEST(UsageScannerTest, JsonBodyAtEverySplit) {
  const std::string body =
      R"({"id":"x","choices":[{"text":"hi"}],"usage":{"prompt_tokens":12,"completion_tokens" : 345,"total_tokens":357}})";
  for (size_t piece = 1; piece <= body.size(); ++piece) {
    EXPECT_EQ(ScanInPieces(body, piece), 345) << piece;
  }
}

TEST(UsageScannerTest, SseStreamTakesTheLastValue) {
  const std::string stream =
      "data: {\"choices\":[{\"text\":\"a\"}],\"usage\":{\"completion_tokens\":1}}\n\n"
      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":17}}\n\n"
      "data: [DONE]\n\n";
  for (size_t piece : {1, 2, 7, 64, 4096}) EXPECT_EQ(ScanInPieces(stream, piece), 17) << piece;
}

TEST(UsageScannerTest, KeysInsideStringsAndOtherKeysDoNotCount) {
  EXPECT_EQ(ScanInPieces(R"({"text":"\"completion_tokens\": 5"})", 3), std::nullopt);
  EXPECT_EQ(ScanInPieces(R"({"completion_tokens_details":{"reasoning_tokens":4}})", 5),
            std::nullopt);
  EXPECT_EQ(ScanInPieces(R"({"completion_tokens":null})", 5), std::nullopt);
  EXPECT_EQ(ScanInPieces(R"({"completion_tokens":-3})", 5), std::nullopt);
  EXPECT_EQ(ScanInPieces(R"({"completion_tokens":12)", 5), std::nullopt);  // cut mid-number
  EXPECT_EQ(ScanInPieces(R"({"completion_tokens":99999999999999999999})", 5), std::nullopt);
  EXPECT_EQ(ScanInPieces(R"(""completion_tokens":8})", 5), 8);
}

}  // namespace
}  // namespace aibrix::gateway
