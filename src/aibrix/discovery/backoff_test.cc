#include "aibrix/discovery/backoff.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace aibrix::discovery {
namespace {

using std::chrono::milliseconds;

TEST(BackoffTest, JitteredDoublingUpToTheCapThenReset) {
  Backoff backoff(milliseconds(100), milliseconds(1000), 42);
  int64_t step = 100;
  for (int i = 0; i < 8; ++i) {
    const milliseconds delay = backoff.Next();
    EXPECT_GE(delay.count(), step / 2) << i;
    EXPECT_LE(delay.count(), step) << i;
    step = std::min<int64_t>(step * 2, 1000);
  }
  backoff.Reset();
  const milliseconds delay = backoff.Next();
  EXPECT_GE(delay.count(), 50);
  EXPECT_LE(delay.count(), 100);
}

TEST(BackoffTest, SeedsGiveDifferentJitter) {
  bool differ = false;
  for (uint64_t seed = 1; seed < 20 && !differ; ++seed) {
    Backoff a(milliseconds(1000), milliseconds(1000), seed);
    Backoff b(milliseconds(1000), milliseconds(1000), seed + 100);
    differ = a.Next() != b.Next();
  }
  EXPECT_TRUE(differ);  // replicas that failed together do not retry in lockstep
}

}  // namespace
}  // namespace aibrix::discovery
