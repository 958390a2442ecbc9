#include "aibrix/tracking/output_predictor.h"

#include <atomic>
#include <chrono>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace aibrix::tracking {
namespace {

using std::chrono::seconds;

OutputPredictor::Options WithWindow(std::chrono::nanoseconds window) {
  OutputPredictor::Options options;
  options.window = window;
  return options;
}

TEST(OutputPredictorTest, RingSlotsFollowTheWindow) {
  common::FakeClock clock;
  EXPECT_EQ(OutputPredictor(clock, WithWindow(seconds(60))).ring_slots(), 7);
  EXPECT_EQ(OutputPredictor(clock, WithWindow(seconds(65))).ring_slots(), 8);
  EXPECT_EQ(OutputPredictor(clock, WithWindow(seconds(240))).ring_slots(), 25);
  // A window below one period is raised to one period.
  EXPECT_EQ(OutputPredictor(clock, WithWindow(seconds(0))).ring_slots(), 2);
}

TEST(OutputPredictorTest, BucketCountsAndSlotShape) {
  common::FakeClock clock;
  OutputPredictor::Options options;
  options.max_input_tokens = 8;
  options.max_output_tokens = 16;
  OutputPredictor small(clock, options);
  EXPECT_EQ(small.input_buckets(), 4);
  EXPECT_EQ(small.output_buckets(), 5);
  EXPECT_EQ(small.cells_per_slot(), 20);
  EXPECT_EQ(small.BucketIndex(0, 0), 0);
  EXPECT_EQ(small.BucketIndex(1, 0), 5);
  EXPECT_EQ(small.BucketIndex(3, 4), 19);

  OutputPredictor store_default(clock, OutputPredictor::Options{});
  EXPECT_EQ(store_default.input_buckets(), 21);
  EXPECT_EQ(store_default.output_buckets(), 21);
}

TEST(OutputPredictorTest, TokenToBucketRoundsLog2AndClamps) {
  EXPECT_EQ(OutputPredictor::TokenToBucket(0, 21), 0);
  EXPECT_EQ(OutputPredictor::TokenToBucket(-3, 21), 0);
  EXPECT_EQ(OutputPredictor::TokenToBucket(1, 21), 0);
  EXPECT_EQ(OutputPredictor::TokenToBucket(4, 21), 2);
  EXPECT_EQ(OutputPredictor::TokenToBucket(5, 21), 2);
  EXPECT_EQ(OutputPredictor::TokenToBucket(6, 21), 3);
  EXPECT_EQ(OutputPredictor::TokenToBucket(7, 21), 3);
  EXPECT_EQ(OutputPredictor::TokenToBucket(1 << 20, 21), 20);
  EXPECT_EQ(OutputPredictor::TokenToBucket(int64_t{1} << 40, 21), 20);
  EXPECT_EQ(OutputPredictor::TokenToBucket(1000, 4), 3);
}

TEST(OutputPredictorTest, AddTraceUpdatesSummaryAndInputSum) {
  common::FakeClock clock;
  OutputPredictor predictor(clock, OutputPredictor::Options{});
  predictor.AddTrace(100, 50, 1);
  EXPECT_EQ(predictor.Count(100, 50), 1);
  EXPECT_EQ(predictor.InputCount(100), 1);
  // Same buckets (round(log2) of 100 and 120 is 7; of 50 and 60 is 6).
  predictor.AddTrace(120, 60, 2);
  EXPECT_EQ(predictor.Count(100, 50), 3);
  predictor.AddTrace(100, 1000, 4);
  EXPECT_EQ(predictor.Count(100, 1000), 4);
  EXPECT_EQ(predictor.InputCount(100), 7);
  EXPECT_EQ(predictor.InputCount(10), 0);
  // Non-positive counts are ignored.
  predictor.AddTrace(100, 50, 0);
  predictor.AddTrace(100, 50, -2);
  EXPECT_EQ(predictor.InputCount(100), 7);
}

TEST(OutputPredictorTest, ColdStartStrategies) {
  common::FakeClock clock;
  OutputPredictor::Options options;
  OutputPredictor optimistic(clock, options);
  EXPECT_EQ(optimistic.Predict(500), 1);
  EXPECT_EQ(optimistic.Predict(0), 1);

  options.cold_start = ColdStart::kInput;
  EXPECT_EQ(OutputPredictor(clock, options).Predict(500), 500);
  EXPECT_EQ(OutputPredictor(clock, options).Predict(-1), 1);
  options.cold_start = ColdStart::kPessimistic;
  EXPECT_EQ(OutputPredictor(clock, options).Predict(500), 4096);
  options.cold_start = ColdStart::kRandom;
  OutputPredictor random(clock, options);
  for (int i = 0; i < 1000; ++i) {
    const int64_t guess = random.Predict(500);
    EXPECT_GE(guess, 1);
    EXPECT_LE(guess, 4096);
  }
}

TEST(OutputPredictorTest, ColdWhenOnlyOtherInputBucketsHaveHistory) {
  common::FakeClock clock;
  OutputPredictor predictor(clock, OutputPredictor::Options{});
  predictor.AddTrace(1000, 300, 5);
  EXPECT_EQ(predictor.Predict(10), 1);
}

TEST(OutputPredictorTest, SingleOutputBucketIsAlwaysPredicted) {
  common::FakeClock clock;
  OutputPredictor predictor(clock, OutputPredictor::Options{});
  predictor.AddTrace(100, 256, 3);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(predictor.Predict(100), 256);
}

TEST(OutputPredictorTest, WeightedDrawMatchesCounts) {
  common::FakeClock clock;
  OutputPredictor::Options options;
  options.seed = 42;
  OutputPredictor predictor(clock, options);
  predictor.AddTrace(100, 2, 1);
  predictor.AddTrace(100, 8, 3);
  predictor.AddTrace(100, 64, 6);
  constexpr int kDraws = 20000;
  int twos = 0, eights = 0, sixty_fours = 0;
  for (int i = 0; i < kDraws; ++i) {
    switch (predictor.Predict(100)) {
      case 2:
        ++twos;
        break;
      case 8:
        ++eights;
        break;
      case 64:
        ++sixty_fours;
        break;
      default:
        ADD_FAILURE() << "unexpected prediction";
    }
  }
  EXPECT_NEAR(twos / double{kDraws}, 0.1, 0.02);
  EXPECT_NEAR(eights / double{kDraws}, 0.3, 0.02);
  EXPECT_NEAR(sixty_fours / double{kDraws}, 0.6, 0.02);
}

TEST(OutputPredictorTest, SameSeedSameSequence) {
  common::FakeClock clock;
  OutputPredictor::Options options;
  options.seed = 7;
  OutputPredictor a(clock, options), b(clock, options);
  for (int out : {1, 4, 16, 64, 256}) {
    a.AddTrace(100, out, out);
    b.AddTrace(100, out, out);
  }
  for (int i = 0; i < 200; ++i) EXPECT_EQ(a.Predict(100), b.Predict(100));
}

// Rotation: window 60 s → 7 slots; a trace stays while fewer than 6 whole periods passed.
class OutputPredictorRotationTest : public ::testing::Test {
 protected:
  static constexpr int kWindowPeriods = 6;
  void Pass(int periods) { clock_.Advance(seconds(10) * periods); }
  // One trace in each of `periods` consecutive periods, leaving the clock in the last one.
  void FillPeriods(int periods) {
    for (int i = 0; i < periods; ++i) {
      if (i > 0) Pass(1);
      predictor_.AddTrace(100, 100, 1);
    }
  }
  int64_t Live() { return predictor_.InputCount(100); }

  common::FakeClock clock_;
  OutputPredictor predictor_{clock_, WithWindow(seconds(60))};
};

TEST_F(OutputPredictorRotationTest, WithinWindowKeepsData) {
  predictor_.AddTrace(100, 100, 1);
  clock_.Advance(seconds(5));
  EXPECT_EQ(Live(), 1);
  clock_.Advance(seconds(5));
  EXPECT_EQ(Live(), 1);
  Pass(kWindowPeriods - 2);
  EXPECT_EQ(Live(), 1);
  EXPECT_EQ(predictor_.Predict(100), 128);
}

TEST_F(OutputPredictorRotationTest, ExistOnePassWindow) {
  FillPeriods(1);
  Pass(kWindowPeriods - 1);
  EXPECT_EQ(Live(), 1);
  Pass(1);
  EXPECT_EQ(Live(), 0);
  EXPECT_EQ(predictor_.Count(100, 100), 0);
  EXPECT_EQ(predictor_.Predict(100), 1);  // cold again
}

TEST_F(OutputPredictorRotationTest, ExistTwoPassWindowMinusOne) {
  FillPeriods(2);
  Pass(kWindowPeriods - 1);
  EXPECT_EQ(Live(), 1);
}

TEST_F(OutputPredictorRotationTest, ExistWindowPassOne) {
  FillPeriods(kWindowPeriods);
  EXPECT_EQ(Live(), kWindowPeriods);
  Pass(1);
  EXPECT_EQ(Live(), kWindowPeriods - 1);
}

TEST_F(OutputPredictorRotationTest, ExistWindowPassWindowMinusOne) {
  FillPeriods(kWindowPeriods);
  Pass(kWindowPeriods - 1);
  EXPECT_EQ(Live(), 1);
}

TEST_F(OutputPredictorRotationTest, ExistWindowPassWindow) {
  FillPeriods(kWindowPeriods);
  Pass(kWindowPeriods);
  EXPECT_EQ(Live(), 0);
}

TEST_F(OutputPredictorRotationTest, ExistWindowPassWindowPlusOne) {
  FillPeriods(kWindowPeriods);
  Pass(kWindowPeriods + 1);
  EXPECT_EQ(Live(), 0);
  // The ring is usable afterwards.
  predictor_.AddTrace(100, 100, 2);
  EXPECT_EQ(Live(), 2);
}

TEST_F(OutputPredictorRotationTest, ExistWindowPlusOnePassWindowMinusOne) {
  FillPeriods(kWindowPeriods + 1);
  EXPECT_EQ(Live(), kWindowPeriods);
  Pass(kWindowPeriods - 1);
  EXPECT_EQ(Live(), 1);
}

TEST_F(OutputPredictorRotationTest, ExistWindowPlusTwoPassWindowMinusOne) {
  FillPeriods(kWindowPeriods + 2);
  EXPECT_EQ(Live(), kWindowPeriods);
  Pass(kWindowPeriods - 1);
  EXPECT_EQ(Live(), 1);
}

TEST_F(OutputPredictorRotationTest, SparsePeriods) {
  // Traces in periods 0 and 2, none in 1.
  predictor_.AddTrace(100, 100, 1);
  Pass(2);
  predictor_.AddTrace(100, 100, 1);
  Pass(1);
  EXPECT_EQ(Live(), 2);
  Pass(kWindowPeriods - 2);  // now 5 periods after the second trace
  EXPECT_EQ(Live(), 1);
  Pass(1);
  EXPECT_EQ(Live(), 0);
}

TEST_F(OutputPredictorRotationTest, PredictRetiresWithoutNewTraces) {
  predictor_.AddTrace(100, 100, 1);
  EXPECT_EQ(predictor_.Predict(100), 128);
  Pass(kWindowPeriods);
  EXPECT_EQ(predictor_.Predict(100), 1);
}

// Randomised schedule checked against a list of every trace (seeded, so deterministic).
TEST(OutputPredictorModelTest, MatchesBruteForceRetention) {
  for (int window_s : {10, 60, 65, 240}) {
    common::FakeClock clock;
    OutputPredictor::Options options;
    options.max_input_tokens = 16;
    options.max_output_tokens = 16;
    options.window = seconds(window_s);
    OutputPredictor predictor(clock, options);
    const int64_t kept = predictor.ring_slots() - 1;
    struct Trace {
      int64_t period, in, out, count;
    };
    std::vector<Trace> traces;
    std::mt19937_64 rng(window_s);
    int64_t elapsed_ms = 0;
    for (int step = 0; step < 3000; ++step) {
      const int kind = static_cast<int>(rng() % 10);
      if (kind < 6) {
        const int64_t in = static_cast<int64_t>(rng() % 20), out = static_cast<int64_t>(rng() % 20);
        const int64_t count = 1 + static_cast<int64_t>(rng() % 3);
        predictor.AddTrace(in, out, count);
        traces.push_back({elapsed_ms / 10000, in, out, count});
      } else {
        const int64_t ms =
            kind == 9 ? static_cast<int64_t>(rng() % 400000) : static_cast<int64_t>(rng() % 15000);
        clock.Advance(std::chrono::milliseconds(ms));
        elapsed_ms += ms;
      }
      if (step % 50 != 0) continue;
      const int64_t now = elapsed_ms / 10000;
      for (int64_t in : {0, 1, 3, 9, 19}) {
        int64_t expected = 0;
        const int bucket = OutputPredictor::TokenToBucket(in, predictor.input_buckets());
        for (const Trace& t : traces) {
          if (now - t.period < kept &&
              OutputPredictor::TokenToBucket(t.in, predictor.input_buckets()) == bucket) {
            expected += t.count;
          }
        }
        ASSERT_EQ(predictor.InputCount(in), expected)
            << "window " << window_s << "s step " << step << " input " << in;
      }
    }
  }
}

TEST(OutputPredictorConcurrencyTest, ConcurrentAddTraceAndPredict) {
  common::FakeClock clock;
  OutputPredictor predictor(clock, OutputPredictor::Options{});
  constexpr int kAdders = 4, kPredictors = 4, kPerThread = 20000;
  std::atomic<bool> bad_prediction{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kAdders; ++t) {
    threads.emplace_back([&predictor, t] {
      for (int i = 0; i < kPerThread; ++i) predictor.AddTrace(100, int64_t{1} << (i % 10 + t), 1);
    });
  }
  for (int t = 0; t < kPredictors; ++t) {
    threads.emplace_back([&predictor, &bad_prediction] {
      for (int i = 0; i < kPerThread; ++i) {
        const int64_t guess = predictor.Predict(100);
        // Cold (1) or a power of two that was added.
        if (guess < 1 || (guess & (guess - 1)) != 0 || guess > (int64_t{1} << 13)) {
          bad_prediction = true;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_FALSE(bad_prediction);
  EXPECT_EQ(predictor.InputCount(100), kAdders * kPerThread);
}

TEST(OutputPredictorConcurrencyTest, ConcurrentRotationKeepsSummariesConsistent) {
  common::FakeClock clock;
  OutputPredictor::Options options;
  options.max_input_tokens = 64;
  options.max_output_tokens = 64;
  options.window = seconds(30);
  OutputPredictor predictor(clock, options);
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&predictor, t] {
      for (int i = 0; i < 20000; ++i) {
        predictor.AddTrace(i % 64, (i * 7 + t) % 64, 1);
        predictor.Predict(i % 64);
      }
    });
  }
  threads.emplace_back([&clock, &stop] {
    while (!stop) {
      clock.Advance(std::chrono::seconds(3));
      std::this_thread::yield();
    }
  });
  for (int t = 0; t < 4; ++t) threads[static_cast<size_t>(t)].join();
  stop = true;
  threads.back().join();
  // Per input bucket, the summary row adds up to the input sum and nothing is negative.
  for (int in_bucket = 0; in_bucket < predictor.input_buckets(); ++in_bucket) {
    const int64_t in_tokens = int64_t{1} << in_bucket;
    int64_t row = 0;
    for (int out_bucket = 0; out_bucket < predictor.output_buckets(); ++out_bucket) {
      const int64_t cell = predictor.Count(in_tokens, int64_t{1} << out_bucket);
      EXPECT_GE(cell, 0);
      row += cell;
    }
    EXPECT_EQ(row, predictor.InputCount(in_tokens)) << "input bucket " << in_bucket;
  }
  // Once the window has passed, everything is gone.
  clock.Advance(seconds(40));
  for (int in_bucket = 0; in_bucket < predictor.input_buckets(); ++in_bucket) {
    EXPECT_EQ(predictor.InputCount(int64_t{1} << in_bucket), 0);
  }
}

}  // namespace
}  // namespace aibrix::tracking
