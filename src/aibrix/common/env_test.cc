#include "aibrix/common/env.h"

#include <cstdlib>

#include "gtest/gtest.h"

namespace aibrix::common {
namespace {

using std::chrono::nanoseconds;

TEST(EnvTest, GoBoolAcceptsExactlyGoSpellings) {
  for (const char* yes : {"1", "t", "T", "TRUE", "true", "True"}) EXPECT_EQ(ParseGoBool(yes), true);
  for (const char* no : {"0", "f", "F", "FALSE", "false", "False"})
    EXPECT_EQ(ParseGoBool(no), false);
  for (const char* bad : {"", "yes", "tRUE", "2", " true"})
    EXPECT_EQ(ParseGoBool(bad), std::nullopt);
}

TEST(EnvTest, PositiveIntRejectsEverythingElse) {
  EXPECT_EQ(ParsePositiveInt("250"), 250);
  EXPECT_EQ(ParsePositiveInt("9223372036854775807"), INT64_MAX);
  for (const char* bad : {"0", "-3", "abc", "12ms", "", " 5", "5 ", "+5", "9223372036854775808"}) {
    EXPECT_EQ(ParsePositiveInt(bad), std::nullopt) << bad;
  }
}

TEST(EnvTest, GoDurations) {
  using namespace std::chrono_literals;
  EXPECT_EQ(ParseGoDuration("0"), nanoseconds(0));
  EXPECT_EQ(ParseGoDuration("5s"), nanoseconds(5s));
  EXPECT_EQ(ParseGoDuration("300ms"), nanoseconds(300ms));
  EXPECT_EQ(ParseGoDuration("1.5s"), nanoseconds(1500ms));
  EXPECT_EQ(ParseGoDuration(".5m"), nanoseconds(30s));
  EXPECT_EQ(ParseGoDuration("2h45m"), nanoseconds(2h + 45min));
  EXPECT_EQ(ParseGoDuration("1h1m1s1ms1us1ns"), nanoseconds(1h + 1min + 1s + 1ms + 1us + 1ns));
  EXPECT_EQ(ParseGoDuration("10\xC2\xB5s"), nanoseconds(10us));
  EXPECT_EQ(ParseGoDuration("-1.5h"), -nanoseconds(90min));
  EXPECT_EQ(ParseGoDuration("+7ns"), nanoseconds(7));
  for (const char* bad :
       {"", "5", "s", "1.s.", "5 s", "5sec", "1d", "-", ".s", "3000000h", "1e3s", "5s ", "5S"}) {
    EXPECT_EQ(ParseGoDuration(bad), std::nullopt) << bad;
  }
}

TEST(EnvTest, FiniteNumbersParseAndGarbageDoesNot) {
  EXPECT_EQ(ParseFiniteNumber("0.25"), 0.25);
  EXPECT_EQ(ParseFiniteNumber("-2e1"), -20);
  for (const char* bad : {"", "x", "1.5x", " ", "inf", "nan", "1e999"}) {
    EXPECT_EQ(ParseFiniteNumber(bad), std::nullopt) << bad;
  }
}

TEST(EnvTest, EmptyStringIsUnset) {
  setenv("AIBRIX_TEST_STR", "", 1);
  EXPECT_EQ(EnvString("AIBRIX_TEST_STR"), std::nullopt);
  setenv("AIBRIX_TEST_STR", "x", 1);
  EXPECT_EQ(EnvString("AIBRIX_TEST_STR"), "x");
  unsetenv("AIBRIX_TEST_STR");
}

TEST(EnvTest, AnySpellingAndConflicts) {
  unsetenv("AIBRIX_TEST_A");
  unsetenv("AIBRIX_TEST_B");
  auto none = EnvAny({"AIBRIX_TEST_A", "AIBRIX_TEST_B"});
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());

  setenv("AIBRIX_TEST_B", "true", 1);
  auto second = EnvAny({"AIBRIX_TEST_A", "AIBRIX_TEST_B"});
  ASSERT_TRUE(second.ok() && second->has_value());
  EXPECT_EQ((*second)->name, "AIBRIX_TEST_B");
  EXPECT_EQ((*second)->value, "true");

  setenv("AIBRIX_TEST_A", "true", 1);  // both, agreeing: the preferred spelling is named
  auto both = EnvAny({"AIBRIX_TEST_A", "AIBRIX_TEST_B"});
  ASSERT_TRUE(both.ok() && both->has_value());
  EXPECT_EQ((*both)->name, "AIBRIX_TEST_A");

  setenv("AIBRIX_TEST_A", "false", 1);
  auto conflict = EnvAny({"AIBRIX_TEST_A", "AIBRIX_TEST_B"});
  ASSERT_FALSE(conflict.ok());
  EXPECT_NE(conflict.status().message().find("AIBRIX_TEST_A=false"), std::string::npos);
  EXPECT_NE(conflict.status().message().find("AIBRIX_TEST_B=true"), std::string::npos);

  // Values that mean the same, per the caller, are no conflict.
  auto same_bool = EnvAny(
      {"AIBRIX_TEST_A", "AIBRIX_TEST_B"},
      [](std::string_view a, std::string_view b) { return ParseGoBool(a) == ParseGoBool(b); });
  EXPECT_FALSE(same_bool.ok());  // false vs true
  setenv("AIBRIX_TEST_A", "1", 1);
  same_bool = EnvAny(
      {"AIBRIX_TEST_A", "AIBRIX_TEST_B"},
      [](std::string_view a, std::string_view b) { return ParseGoBool(a) == ParseGoBool(b); });
  ASSERT_TRUE(same_bool.ok());
  EXPECT_EQ((*same_bool)->value, "1");

  setenv("AIBRIX_TEST_A", "", 1);  // empty is unset: no conflict
  EXPECT_TRUE(EnvAny({"AIBRIX_TEST_A", "AIBRIX_TEST_B"}).ok());
  unsetenv("AIBRIX_TEST_A");
  unsetenv("AIBRIX_TEST_B");
}

}  // namespace
}  // namespace aibrix::common
