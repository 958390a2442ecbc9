#include "aibrix/tracking/request_trace.h"

#include <chrono>
#include <cmath>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aibrix::tracking {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

TEST(RequestTraceTest, BucketIndexIsTheRoundedPrecisionTenBucket) {
  EXPECT_EQ(RequestTrace::BucketIndex(0), 0);
  EXPECT_EQ(RequestTrace::BucketIndex(-7), 0);
  EXPECT_EQ(RequestTrace::BucketIndex(1), 0);
  EXPECT_EQ(RequestTrace::BucketIndex(2), 10);
  EXPECT_EQ(RequestTrace::BucketIndex(1024), 100);
  EXPECT_EQ(RequestTrace::BucketIndex(3), 16);  // log2(3) = 1.585 → 16
}

TEST(RequestTraceTest, BucketIndicesTheReferenceTruncatesAreWrittenRounded) {
  // The indices spec §3.3 lists as written one too low by the reference. For each, the token
  // count n = round(2^(k/10)) lands in bucket k (10·log2(n) rounds to k), and every bucket
  // index from 0 to 200 is reachable and rounded, never truncated.
  for (int k : {43, 81, 86, 91, 162, 167, 172, 177, 182, 187}) {
    const auto n = static_cast<int64_t>(std::llround(std::exp2(k / 10.0)));
    EXPECT_EQ(RequestTrace::BucketIndex(n), k) << "n=" << n;
  }
  EXPECT_EQ(RequestTrace::BucketIndex(20), 43);   // the reference writes 42
  EXPECT_EQ(RequestTrace::BucketIndex(274), 81);  // the reference writes 80
  for (int64_t n = 1; n <= (int64_t{1} << 20); n = n * 3 / 2 + 1) {
    const double exact = 10 * std::log2(static_cast<double>(n));
    EXPECT_LE(std::abs(RequestTrace::BucketIndex(n) - exact), 0.5) << "n=" << n;
  }
}

TEST(RequestTraceTest, CountsRequestsAndBuckets) {
  common::FakeClock clock;
  RequestTrace trace(clock);
  trace.AddRequest();
  trace.AddRequest();
  trace.AddRequest();
  EXPECT_EQ(trace.pending_requests(), 3);
  trace.DoneRequestTrace(1, 1);
  trace.DoneRequestTrace(1, 1);
  trace.DoneRequest();  // no token counts: no bucket
  const TraceSnapshot snapshot = trace.Snapshot();
  EXPECT_EQ(snapshot.total_requests, 3);
  EXPECT_EQ(snapshot.completed_requests, 3);
  EXPECT_EQ(snapshot.pending_requests, 0);
  EXPECT_THAT(snapshot.buckets, ElementsAre(Pair("0:0", 2)));
}

TEST(RequestTraceTest, ToMapHasBucketsAndAllMetaKeys) {
  common::FakeClock clock;
  RequestTrace trace(clock);
  for (int i = 0; i < 3; ++i) trace.AddRequest();
  trace.DoneRequestTrace(1024, 1);
  EXPECT_THAT(
      trace.ToMap(/*queueing_requests=*/5),
      ElementsAre(Pair("100:0", 1), Pair("meta_interval_sec", 10), Pair("meta_pending_reqs", 2),
                  Pair("meta_precision", 10), Pair("meta_queueing_reqs", 5),
                  Pair("meta_total_reqs", 3), Pair("meta_v", 4)));
}

TEST(RequestTraceTest, PendingNeverNegative) {
  common::FakeClock clock;
  RequestTrace trace(clock);
  trace.DoneRequest();
  trace.DoneRequestTrace(10, 10);
  EXPECT_EQ(trace.pending_requests(), 0);
  EXPECT_EQ(trace.ToMap().at("meta_pending_reqs"), 0);
  trace.AddRequest();
  EXPECT_EQ(trace.pending_requests(), 1);
}

TEST(RequestTraceTest, SwapResetsIntervalButKeepsPending) {
  common::FakeClock clock;
  RequestTrace trace(clock);
  const auto first_term = clock.WallNow();
  trace.AddRequest();
  trace.AddRequest();
  trace.DoneRequestTrace(4, 8);
  clock.Advance(std::chrono::seconds(10));
  const TraceSnapshot old = trace.Swap();
  EXPECT_EQ(old.term, first_term);
  EXPECT_EQ(old.total_requests, 2);
  EXPECT_EQ(old.completed_requests, 1);
  EXPECT_EQ(old.pending_requests, 1);
  EXPECT_THAT(old.buckets, ElementsAre(Pair("20:30", 1)));

  const TraceSnapshot fresh = trace.Snapshot();
  EXPECT_EQ(fresh.term, clock.WallNow());
  EXPECT_EQ(fresh.total_requests, 0);
  EXPECT_EQ(fresh.completed_requests, 0);
  EXPECT_TRUE(fresh.buckets.empty());
  EXPECT_EQ(fresh.pending_requests, 1);  // the request admitted earlier is still running
  trace.DoneRequestTrace(4, 8);
  EXPECT_EQ(trace.Snapshot().pending_requests, 0);
  EXPECT_THAT(trace.Snapshot().buckets, ElementsAre(Pair("20:30", 1)));
}

TEST(RequestTraceTest, NoLostCountsUnderConcurrentSwaps) {
  common::FakeClock clock;
  RequestTrace trace(clock);
  constexpr int kThreads = 4, kPerThread = 50000;
  std::atomic<int> running{kThreads};
  int64_t swapped_total = 0, swapped_completed = 0, swapped_bucket = 0;
  std::thread swapper([&] {
    auto take = [&] {
      const TraceSnapshot s = trace.Swap();
      swapped_total += s.total_requests;
      swapped_completed += s.completed_requests;
      for (const auto& [key, count] : s.buckets) swapped_bucket += count;
    };
    while (running.load() > 0) take();
    take();
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        trace.AddRequest();
        trace.DoneRequestTrace(i % 4096 + 1, t + 1);
      }
      running.fetch_sub(1);
    });
  }
  for (auto& worker : workers) worker.join();
  swapper.join();
  EXPECT_EQ(swapped_total, kThreads * kPerThread);
  EXPECT_EQ(swapped_completed, kThreads * kPerThread);
  EXPECT_EQ(swapped_bucket, kThreads * kPerThread);
  EXPECT_EQ(trace.pending_requests(), 0);
}

TEST(RequestTraceTest, ConcurrentAddAndDoneLeavePendingZero) {
  common::FakeClock clock;
  RequestTrace trace(clock);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&trace] {
      for (int i = 0; i < 20000; ++i) {
        trace.AddRequest();
        trace.DoneRequest();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(trace.pending_requests(), 0);
  EXPECT_EQ(trace.Snapshot().total_requests, 8 * 20000);
  EXPECT_EQ(trace.Snapshot().completed_requests, 8 * 20000);
}

}  // namespace
}  // namespace aibrix::tracking
