#include "aibrix/common/net.h"

#include "gtest/gtest.h"

namespace aibrix::common {
namespace {

TEST(NetTest, ParsesHostPortForms) {
  auto v4 = ParseHostPort("10.0.0.5:8000");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->host, "10.0.0.5");
  EXPECT_EQ(v4->port, 8000);
  auto v6 = ParseHostPort("[::1]:5557");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 5557);
  auto bare = ParseHostPort("localhost", 8000);
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->port, 8000);
}

TEST(NetTest, RejectsBadAddressesWithReason) {
  for (const char* bad : {"", ":80", "host:", "host:0", "host:65536", "host:http", "::1:80", "[::1",
                          "[]:80", "[::1]x"}) {
    auto parsed = ParseHostPort(bad);
    EXPECT_FALSE(parsed.ok()) << bad;
  }
  EXPECT_FALSE(ParseHostPort("host").ok());
  auto any = ParseHostPort("127.0.0.1:0", 0, PortZero::kAllowed);
  ASSERT_TRUE(any.ok());
  EXPECT_EQ(any->port, 0);
}

TEST(NetTest, FormatsIpv6Bracketed) {
  EXPECT_EQ(FormatHostPort("::1", 5557), "[::1]:5557");
  EXPECT_EQ(FormatHostPort("10.0.0.1", 80), "10.0.0.1:80");
}

}  // namespace
}  // namespace aibrix::common
