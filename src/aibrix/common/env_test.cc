#include "aibrix/common/env.h"

#include <cstdlib>

#include "gtest/gtest.h"

namespace aibrix::common {
namespace {

TEST(EnvTest, GoBoolAcceptsExactlyGoSpellings) {
  for (const char* yes : {"1", "t", "T", "TRUE", "true", "True"}) EXPECT_EQ(ParseGoBool(yes), true);
  for (const char* no : {"0", "f", "F", "FALSE", "false", "False"})
    EXPECT_EQ(ParseGoBool(no), false);
  for (const char* bad : {"", "yes", "tRUE", "2", " true"})
    EXPECT_EQ(ParseGoBool(bad), std::nullopt);
}

TEST(EnvTest, PositiveIntFallsBackOnInvalidValues) {
  setenv("AIBRIX_TEST_INT", "250", 1);
  EXPECT_EQ(EnvPositiveInt("AIBRIX_TEST_INT", 50), 250);
  for (const char* bad : {"0", "-3", "abc", "12ms", ""}) {
    setenv("AIBRIX_TEST_INT", bad, 1);
    EXPECT_EQ(EnvPositiveInt("AIBRIX_TEST_INT", 50), 50) << bad;
  }
  unsetenv("AIBRIX_TEST_INT");
  EXPECT_EQ(EnvPositiveInt("AIBRIX_TEST_INT", 50), 50);
}

TEST(EnvTest, FloatFallsBackOnInvalidValues) {
  setenv("AIBRIX_TEST_FLOAT", "0.25", 1);
  EXPECT_EQ(EnvFloat("AIBRIX_TEST_FLOAT", 1.5), 0.25);
  setenv("AIBRIX_TEST_FLOAT", "-2e1", 1);
  EXPECT_EQ(EnvFloat("AIBRIX_TEST_FLOAT", 1.5), -20);
  for (const char* bad : {"x", "1.5x", " ", "inf", "nan", "1e999"}) {
    setenv("AIBRIX_TEST_FLOAT", bad, 1);
    EXPECT_EQ(EnvFloat("AIBRIX_TEST_FLOAT", 1.5), 1.5) << bad;
  }
  unsetenv("AIBRIX_TEST_FLOAT");
  EXPECT_EQ(EnvFloat("AIBRIX_TEST_FLOAT", 1.5), 1.5);
}

TEST(EnvTest, EmptyStringIsUnset) {
  setenv("AIBRIX_TEST_STR", "", 1);
  EXPECT_EQ(EnvString("AIBRIX_TEST_STR"), std::nullopt);
  setenv("AIBRIX_TEST_STR", "x", 1);
  EXPECT_EQ(EnvString("AIBRIX_TEST_STR"), "x");
  setenv("AIBRIX_TEST_BOOL", "maybe", 1);
  EXPECT_TRUE(EnvBool("AIBRIX_TEST_BOOL", true));
  EXPECT_FALSE(EnvBool("AIBRIX_TEST_BOOL", false));
}

}  // namespace
}  // namespace aibrix::common
