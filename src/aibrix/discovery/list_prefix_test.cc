#include "aibrix/discovery/list_prefix.h"

#include <gtest/gtest.h>

#include <string>

namespace aibrix::discovery {
namespace {

using State = ListPrefix::State;

constexpr std::string_view kPage =
    R"({"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1007","continue":"c1007-3","remainingItemCount":4},"items":[{"metadata":{"name":"a"}}]})";

TEST(ListPrefixTest, NeedsMoreUntilTheMetadataEndsThenFindsTheToken) {
  const size_t metadata_end = kPage.find("},\"items\"") + 1;
  for (size_t n = 0; n <= kPage.size(); ++n) {
    const ListPrefix prefix = ScanListPrefix(kPage.substr(0, n));
    if (n < metadata_end) {
      EXPECT_EQ(prefix.state, State::kNeedMore) << n;
    } else {
      ASSERT_EQ(prefix.state, State::kFound) << n;
      EXPECT_EQ(prefix.continue_token, "c1007-3");
    }
  }
}

TEST(ListPrefixTest, TheLastPageHasNoToken) {
  for (std::string_view page :
       {R"({"metadata":{"resourceVersion":"9"},"items":[])",
        R"( { "metadata" : { "continue" : null , "resourceVersion" : "9" } )", R"({"metadata":{}})",
        R"({"metadata":{"continue":""},"items")"}) {
    const ListPrefix prefix = ScanListPrefix(page);
    EXPECT_EQ(prefix.state, State::kFound) << page;
    EXPECT_EQ(prefix.continue_token, "") << page;
  }
}

TEST(ListPrefixTest, SkipsFieldsOfAnyShapeBeforeTheMetadata) {
  const ListPrefix prefix =
      ScanListPrefix(R"({"kind":"P\"}{[","x":{"a":[1,{"b":"]}"}],"c":null},"n":-1.5e3,"t":true,)"
                     R"("metadata":{"labels":{"k":"}"},"continue":"tok","continue":"last"}})");
  EXPECT_EQ(prefix.state, State::kFound);
  EXPECT_EQ(prefix.continue_token, "last");  // the last of duplicates, as the decoder reads
}

TEST(ListPrefixTest, UnknownWhenItCannotBeToldFromThePrefix) {
  for (std::string_view page : {
           R"({"items":[],"metadata":{"continue":"c"}})",  // the items come first
           R"([1,2])",                                     // not an object
           R"(garbage)",
           R"({"metadata":{"continue":"a\"b"}})",  // escapes: left to the decoder
           R"({"metadata":{"continue":5}})",       // not a string
           R"({"metadata":[]})",
           R"({"kind":"PodList"})",  // no metadata at all
           R"({"kind" "PodList")",
           R"({"kind":"PodList";)",
       }) {
    EXPECT_EQ(ScanListPrefix(page).state, State::kUnknown) << page;
  }
}

TEST(ListPrefixTest, GivesUpAfterTheScanLimit) {
  std::string page = R"({"kind":")" + std::string(kMaxListPrefixScanBytes, 'x');
  EXPECT_EQ(ScanListPrefix(page.substr(0, kMaxListPrefixScanBytes)).state, State::kNeedMore);
  EXPECT_EQ(ScanListPrefix(page).state, State::kUnknown);
}

}  // namespace
}  // namespace aibrix::discovery
