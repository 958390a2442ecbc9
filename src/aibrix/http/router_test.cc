#include "aibrix/http/router.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aibrix::http {
namespace {

using ::testing::ElementsAre;

TEST(RouterTest, MatchesLiteralAndParameterSegments) {
  Router router;
  ASSERT_TRUE(router.Add("GET", "/cache/pods").ok());
  ASSERT_TRUE(router.Add("GET", "/cache/pods/{namespace}/{name}").ok());
  Router::Miss miss;
  auto all = router.Find("GET", "/cache/pods", &miss);
  ASSERT_TRUE(all);
  EXPECT_EQ(all->route, 0u);
  auto one = router.Find("GET", "/cache/pods/default/a%20b", &miss);
  ASSERT_TRUE(one);
  EXPECT_EQ(one->route, 1u);
  EXPECT_THAT(one->params, ElementsAre("default", "a b"));
  EXPECT_EQ(router.pattern(1), "/cache/pods/{namespace}/{name}");
}

TEST(RouterTest, MissesSayWhy) {
  Router router;
  ASSERT_TRUE(router.Add("POST", "/cache/route").ok());
  Router::Miss miss;
  EXPECT_FALSE(router.Find("GET", "/cache/route", &miss));
  EXPECT_EQ(miss, Router::Miss::kWrongMethod);
  for (const char* path : {"/cache", "/cache/route/", "/cache/route/x", "", "cache/route", "/"}) {
    EXPECT_FALSE(router.Find("POST", path, &miss)) << path;
    EXPECT_EQ(miss, Router::Miss::kNoPath) << path;
  }
}

TEST(RouterTest, ParametersAreNeverEmpty) {
  Router router;
  ASSERT_TRUE(router.Add("GET", "/a/{x}/{y}").ok());
  Router::Miss miss;
  EXPECT_FALSE(router.Find("GET", "/a//b", &miss));
  EXPECT_FALSE(router.Find("GET", "/a/b/", &miss));
  EXPECT_TRUE(router.Find("GET", "/a/b/c", &miss));
}

TEST(RouterTest, HugePathsAreLinearNotRecursive) {
  // The regression: a 40,000-byte segment once crashed std::regex_match.
  Router router;
  ASSERT_TRUE(router.Add("GET", "/cache/pods/{namespace}/{name}").ok());
  Router::Miss miss;
  const std::string name(400000, 'a');
  auto match = router.Find("GET", "/cache/pods/default/" + name, &miss);
  ASSERT_TRUE(match);
  EXPECT_EQ(match->params[1].size(), name.size());
  EXPECT_FALSE(router.Find("GET", "/" + std::string(400000, '/'), &miss));
}

TEST(RouterTest, RejectsMalformedPatternsAndDuplicates) {
  Router router;
  EXPECT_FALSE(router.Add("GET", "nope").ok());
  EXPECT_FALSE(router.Add("GET", "/a/{x").ok());
  EXPECT_FALSE(router.Add("GET", "/a/b{x}").ok());
  EXPECT_FALSE(router.Add("GET", "/a/{}").ok());
  ASSERT_TRUE(router.Add("GET", "/a").ok());
  EXPECT_FALSE(router.Add("GET", "/a").ok());
  EXPECT_TRUE(router.Add("POST", "/a").ok());
}

}  // namespace
}  // namespace aibrix::http
