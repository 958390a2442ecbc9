#include "aibrix/common/utf8.h"

#include <gtest/gtest.h>

#include <string>

namespace aibrix::common {
namespace {

TEST(Utf8Test, AcceptsWellFormedText) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("meta-llama/Llama-3.1-8B-Instruct, long enough for the word loop"));
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));  // 2, 3, 4 bytes
  EXPECT_TRUE(IsValidUtf8("\xf4\x8f\xbf\xbf"));                           // U+10FFFF
}

TEST(Utf8Test, RejectsMalformedText) {
  EXPECT_FALSE(IsValidUtf8("m\xff"));                       // never a UTF-8 byte
  EXPECT_FALSE(IsValidUtf8("abcdefgh\x80"));                // a lone continuation byte
  EXPECT_FALSE(IsValidUtf8("\xc3"));                        // truncated
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));                    // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));                // a surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));            // past U+10FFFF
  EXPECT_FALSE(IsValidUtf8(std::string("ok\xe2\x82", 4)));  // truncated at the end
}

}  // namespace
}  // namespace aibrix::common
