#include "aibrix/http/parser.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aibrix::http {
namespace {

using ::testing::HasSubstr;
using ::testing::Pair;

TEST(HttpParserTest, HeadSizeWaitsForTheBlankLine) {
  EXPECT_EQ(RequestHeadSize("GET / HTTP/1.1\r\nHost: x\r\n"), 0u);
  EXPECT_EQ(RequestHeadSize("GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"), 27u);
}

TEST(HttpParserTest, ParsesRequestLineHeadersAndFraming) {
  auto head = ParseRequestHead(
      "POST /cache/route?x=1 HTTP/1.1\r\nHost: a\r\ncontent-length:  12 \r\n"
      "Expect: 100-continue\r\nX-Empty:\r\n\r\n");
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->method, "POST");
  EXPECT_EQ(head->target, "/cache/route?x=1");
  EXPECT_EQ(head->minor_version, 1);
  EXPECT_EQ(head->content_length, 12u);
  EXPECT_FALSE(head->chunked);
  EXPECT_TRUE(head->expect_continue);
  EXPECT_TRUE(head->keep_alive);
  EXPECT_THAT(head->headers, ::testing::Contains(Pair("content-length", "12")));
  EXPECT_THAT(head->headers, ::testing::Contains(Pair("X-Empty", "")));
}

TEST(HttpParserTest, KeepAliveRules) {
  EXPECT_FALSE(
      ParseRequestHead("GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n")->keep_alive);
  EXPECT_FALSE(ParseRequestHead("GET / HTTP/1.0\r\n\r\n")->keep_alive);
  EXPECT_TRUE(ParseRequestHead("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")->keep_alive);
  EXPECT_TRUE(
      ParseRequestHead("GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")->chunked);
}

TEST(HttpParserTest, RejectsMalformedHeadsWithTheReason) {
  struct Case {
    const char* head;
    const char* reason;
  };
  for (const Case& c : std::vector<Case>{
           {"GET /\r\n\r\n", "request line"},
           {"GET  / HTTP/1.1\r\n\r\n", "request line"},
           {"G(T / HTTP/1.1\r\n\r\n", "method"},
           {"GET x HTTP/1.1\r\n\r\n", "target"},
           {"GET /a\x01 HTTP/1.1\r\n\r\n", "target"},
           {"GET / HTTP/2.0\r\n\r\n", "version"},
           {"GET / HTTP/1.1\r\nNoColon\r\n\r\n", "without name"},
           {"GET / HTTP/1.1\r\n: v\r\n\r\n", "without name"},
           {"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n", "header name"},
           {"GET / HTTP/1.1\r\nX: a\x01\r\n\r\n", "control character"},
           {"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "Content-Length"},
           {"GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", "Content-Length"},
           {"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", "Content-Length"},
           {"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "conflicting"},
           {"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding"},
           {"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n", "both"},
           {"GET / HTTP/1.1\r\nX: y\r\n\r\n", "without Host"},
           {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "more than one Host"},
       }) {
    auto head = ParseRequestHead(c.head);
    ASSERT_FALSE(head.ok()) << c.head;
    EXPECT_THAT(std::string(head.status().message()), HasSubstr(c.reason)) << c.head;
  }
}

TEST(HttpParserTest, ChunkedBodyDecodesAcrossArbitrarySplits) {
  const std::string wire = "5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\n";
  for (size_t split = 0; split <= wire.size(); ++split) {
    ChunkedDecoder decoder(1024);
    std::string body, pending;
    for (const std::string& part : {wire.substr(0, split), wire.substr(split)}) {
      pending += part;
      auto used = decoder.Feed(pending, &body);
      ASSERT_TRUE(used.ok()) << used.status();
      pending.erase(0, *used);
    }
    EXPECT_TRUE(decoder.done()) << split;
    EXPECT_EQ(body, "hello, world") << split;
  }
}

TEST(HttpParserTest, ChunkedBodyErrors) {
  std::string body;
  EXPECT_EQ(ChunkedDecoder(1024).Feed("zz\r\n", &body).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ChunkedDecoder(1024).Feed("2\r\nabc\r\n", &body).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ChunkedDecoder(4).Feed("5\r\nhello\r\n", &body).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(ChunkedDecoder(1024).Feed(std::string(5000, '1'), &body).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(HttpParserTest, HostIsOptionalInHttp10AndEmptyLinesAreCounted) {
  EXPECT_TRUE(ParseRequestHead("GET / HTTP/1.0\r\n\r\n").ok());
  EXPECT_EQ(LeadingEmptyLines("\r\n\nGET"), 3u);
  EXPECT_EQ(LeadingEmptyLines("GET"), 0u);
  EXPECT_EQ(LeadingEmptyLines("\r"), 0u);
}

TEST(HttpParserTest, ReasonPhrases) {
  EXPECT_EQ(ReasonPhrase(200), "OK");
  EXPECT_EQ(ReasonPhrase(413), "Content Too Large");
  EXPECT_EQ(ReasonPhrase(599), "Unknown");
}

}  // namespace
}  // namespace aibrix::http
