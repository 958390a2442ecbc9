#include "engine.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace aibrix::enginesim {
namespace {

using ::testing::HasSubstr;

// Records every batch; keeps the set of cached hashes the events imply.
class RecordingOutput final : public EventOutput {
 public:
  void Publish(kv::EventBatch batch) override {
    std::lock_guard lock(mu_);
    for (const kv::Event& e : batch.events) {
      if (const auto* s = std::get_if<kv::BlockStored>(&e)) {
        for (auto h : s->block_hashes) {
          EXPECT_TRUE(cached_.insert(h).second) << "stored twice: " << h;
        }
        stored_blocks_ += s->block_hashes.size();
        EXPECT_EQ(s->token_ids.size(), s->block_hashes.size() * s->block_size);
      } else if (const auto* r = std::get_if<kv::BlockRemoved>(&e)) {
        for (auto h : r->block_hashes) EXPECT_EQ(cached_.erase(h), 1u) << "removed unknown " << h;
        ++removed_;
      } else {
        cached_.clear();
        ++cleared_;
      }
    }
    EXPECT_EQ(batch.data_parallel_rank, 3);
    EXPECT_FALSE(batch.events.empty());
    ++batches_;
  }
  void Restart() override {
    std::lock_guard lock(mu_);
    cached_.clear();
    ++restarts_;
  }
  std::set<BlockHash> cached() const {
    std::lock_guard lock(mu_);
    return cached_;
  }
  int batches() const {
    std::lock_guard lock(mu_);
    return batches_;
  }
  int cleared() const {
    std::lock_guard lock(mu_);
    return cleared_;
  }
  int removed() const {
    std::lock_guard lock(mu_);
    return removed_;
  }
  int restarts() const {
    std::lock_guard lock(mu_);
    return restarts_;
  }

 private:
  mutable std::mutex mu_;
  std::set<BlockHash> cached_;
  size_t stored_blocks_ = 0;
  int batches_ = 0, cleared_ = 0, removed_ = 0, restarts_ = 0;
};

EngineOptions FastOptions() {
  EngineOptions o;
  o.block_size = 16;
  o.num_gpu_blocks = 64;
  o.max_model_len = 512;
  o.time_scale = 1e6;  // steps take microseconds
  o.data_parallel_rank = 3;
  return o;
}

std::vector<uint32_t> Prompt(uint32_t salt, int n) {
  std::vector<uint32_t> p(n);
  for (int i = 0; i < n; ++i) p[i] = (salt * 131 + i * 7) % 256;
  return p;
}

std::set<BlockHash> CacheHashes(const Engine& e) {
  std::set<BlockHash> out;
  for (const CachedBlock& b : e.CacheSnapshot().blocks) out.insert(b.hash);
  return out;
}

RequestHandle::Progress RunRequest(Engine& e, std::vector<uint32_t> prompt, int max_tokens,
                                   int* cached = nullptr) {
  RequestArgs a;
  a.prompt = std::move(prompt);
  a.max_tokens = max_tokens;
  a.max_tokens_given = true;
  auto h = e.Submit(std::move(a));
  auto p = h->WaitFinished();
  if (cached != nullptr) *cached = h->cached_tokens();
  return p;
}

TEST(EngineOptionsTest, RejectsModelLenBeyondCache) {
  EngineOptions o = FastOptions();
  o.max_model_len = o.num_gpu_blocks * o.block_size + 1;
  EXPECT_THAT(std::string(o.Validate().message()), HasSubstr("does not fit"));
  o = FastOptions();
  o.time_scale = 0;
  EXPECT_FALSE(o.Validate().ok());
}

TEST(EngineTest, GeneratesDeterministicOutputOfMaxTokens) {
  Engine e(FastOptions(), nullptr);
  ASSERT_TRUE(e.Start().ok());
  auto p1 = RunRequest(e, Prompt(1, 40), 7);
  auto p2 = RunRequest(e, Prompt(1, 40), 7);
  EXPECT_EQ(p1.new_text.size(), 7u);
  EXPECT_EQ(p1.new_text, p2.new_text);
  EXPECT_EQ(p1.reason, FinishReason::kLength);
  EXPECT_TRUE(p1.error.ok());
  EXPECT_NE(kOutputText.find(p1.new_text.substr(0, 3)), std::string_view::npos);

  RequestArgs a;
  a.prompt = Prompt(2, 5);
  a.max_tokens = 3;  // default length, not given by the client: finish "stop"
  auto h = e.Submit(std::move(a));
  EXPECT_EQ(h->WaitFinished().reason, FinishReason::kStop);
}

TEST(EngineTest, SecondRequestHitsThePrefixCache) {
  RecordingOutput out;
  Engine e(FastOptions(), &out);
  ASSERT_TRUE(e.Start().ok());
  int cached = -1;
  RunRequest(e, Prompt(5, 100), 4, &cached);
  EXPECT_EQ(cached, 0);
  RunRequest(e, Prompt(5, 100), 4, &cached);
  EXPECT_EQ(cached, 96);  // 6 full blocks of the 100-token prompt
  RunRequest(e, Prompt(5, 96), 4, &cached);
  EXPECT_EQ(cached, 80);  // at most prompt_len - 1 tokens come from the cache
  std::string metrics;
  e.RenderMetrics(&metrics);
  EXPECT_THAT(
      metrics,
      HasSubstr("vllm:prefix_cache_queries_total{engine=\"3\",model_name=\"engine-sim\"} 296.0"));
  EXPECT_THAT(
      metrics,
      HasSubstr("vllm:prefix_cache_hits_total{engine=\"3\",model_name=\"engine-sim\"} 176.0"));
  EXPECT_EQ(out.cached(), CacheHashes(e));
}

TEST(EngineTest, EventsTrackCacheContentsUnderEvictionAndConcurrency) {
  RecordingOutput out;
  EngineOptions o = FastOptions();
  o.num_gpu_blocks = 40;
  o.max_num_seqs = 4;
  Engine e(o, &out);
  ASSERT_TRUE(e.Start().ok());
  std::vector<std::thread> clients;
  for (int c = 0; c < 6; ++c) {
    clients.emplace_back([&e, c] {
      for (int i = 0; i < 15; ++i) {
        // Shared prefixes across clients, different lengths, so hits and evictions mix.
        auto p = Prompt(static_cast<uint32_t>((c + i) % 5), 60 + 20 * (i % 6));
        auto r = RunRequest(e, p, 5 + i % 7);
        EXPECT_TRUE(r.error.ok());
        EXPECT_EQ(r.new_text.size(), static_cast<size_t>(5 + i % 7));
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_GT(out.removed(), 0);  // 40 blocks cannot hold everything
  EXPECT_EQ(out.cached(), CacheHashes(e));
  CacheView v = e.CacheSnapshot();
  EXPECT_EQ(v.num_free_blocks, v.num_gpu_blocks);  // idle: everything freed
  for (const CachedBlock& b : v.blocks) EXPECT_EQ(b.ref_cnt, 0);
}

TEST(EngineTest, ResetPrefixCachePublishesAllBlocksCleared) {
  RecordingOutput out;
  Engine e(FastOptions(), &out);
  ASSERT_TRUE(e.Start().ok());
  RunRequest(e, Prompt(1, 64), 2);
  ASSERT_FALSE(CacheHashes(e).empty());
  EXPECT_TRUE(e.ResetPrefixCache());
  EXPECT_EQ(out.cleared(), 1);
  EXPECT_TRUE(CacheHashes(e).empty());
  EXPECT_TRUE(out.cached().empty());
}

TEST(EngineTest, RestartEmptiesCacheWithoutEventsAndFailsInFlight) {
  RecordingOutput out;
  EngineOptions o = FastOptions();
  o.time_scale = 1;  // slow enough that the request is in flight
  o.prefill_tokens_per_s = 400;
  Engine e(o, &out);
  ASSERT_TRUE(e.Start().ok());
  RequestArgs a;
  a.prompt = Prompt(1, 100);  // 0.25 s of prefill
  a.max_tokens = 5;
  auto h = e.Submit(std::move(a));
  std::string metrics;
  while (metrics.find("vllm:num_requests_running{engine=\"3\",model_name=\"engine-sim\"} 1.0") ==
         std::string::npos) {
    metrics.clear();
    e.RenderMetrics(&metrics);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const int batches = out.batches();
  e.Restart();
  auto p = h->WaitFinished();
  EXPECT_EQ(p.error.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(out.restarts(), 1);
  EXPECT_EQ(out.cleared(), 0);
  EXPECT_EQ(out.batches(), batches);
  EXPECT_TRUE(CacheHashes(e).empty());
  EXPECT_EQ(e.CacheSnapshot().num_free_blocks, o.num_gpu_blocks);
}

TEST(EngineTest, CachedPrefixShortensTimeToFirstToken) {
  EngineOptions o = FastOptions();
  o.time_scale = 20;
  o.prefill_tokens_per_s = 1000;  // 480 uncached tokens = 0.48 s simulated = 24 ms real
  o.decode_step_ms = 1;
  Engine e(o, nullptr);
  ASSERT_TRUE(e.Start().ok());
  struct Timed {
    std::chrono::steady_clock::duration elapsed;
    int cached_tokens;
  };
  auto timed = [&] {
    RequestArgs a;
    a.prompt = Prompt(9, 480);
    a.max_tokens = 1;
    a.max_tokens_given = true;
    const auto t0 = std::chrono::steady_clock::now();
    auto handle = e.Submit(std::move(a));
    handle->WaitFinished();
    return Timed{std::chrono::steady_clock::now() - t0, handle->cached_tokens()};
  };
  const Timed cold = timed();
  const Timed warm = timed();
  // The cold prompt pays its whole prefill: a lower bound the engine's pacing guarantees.
  EXPECT_EQ(cold.cached_tokens, 0);
  EXPECT_GE(cold.elapsed, std::chrono::milliseconds(20));
  // The warm one is served from the cache (464 of 480 tokens: 16 left to prefill, so its
  // simulated prefill is 30x shorter). Checked on the cache, not with a wall-clock upper
  // bound, which a loaded machine can break.
  EXPECT_EQ(warm.cached_tokens, 464);
}

TEST(EngineTest, StreamingHandleSeesTokensIncrementally) {
  EngineOptions o = FastOptions();
  // Real time: 10 ms per decode step, so a reader cannot miss every step even on a loaded
  // machine under a sanitizer (at 0.1 ms per step it sometimes saw all six at once).
  o.time_scale = 1;
  Engine e(o, nullptr);
  ASSERT_TRUE(e.Start().ok());
  RequestArgs a;
  a.prompt = Prompt(3, 20);
  a.max_tokens = 6;
  a.max_tokens_given = true;
  a.stream = true;
  auto h = e.Submit(std::move(a));
  std::string text;
  int updates = 0;
  while (true) {
    auto p = h->Wait(text.size(), std::chrono::seconds(5));
    text += p.new_text;
    ++updates;
    if (p.finished) break;
  }
  EXPECT_EQ(text.size(), 6u);
  EXPECT_GT(updates, 1);
}

TEST(EngineTest, StopFailsQueuedRequests) {
  EngineOptions o = FastOptions();
  o.time_scale = 1;
  o.prefill_tokens_per_s = 10;
  Engine e(o, nullptr);
  ASSERT_TRUE(e.Start().ok());
  RequestArgs a;
  a.prompt = Prompt(1, 50);
  a.max_tokens = 2;
  auto h = e.Submit(std::move(a));
  e.Stop();
  EXPECT_EQ(h->WaitFinished().error.code(), absl::StatusCode::kUnavailable);
}

// A long prompt ahead of a short one: without a threshold its chunks take every step's whole
// budget and the short one waits for its prefill to end; with one, the short one's chunk
// shares the first steps and it finishes while the long one is still prefilling.
TEST(EngineTest, LongPrefillThresholdLetsAShortPromptThrough) {
  auto short_finishes_first = [](int threshold) {
    EngineOptions o = FastOptions();
    o.time_scale = 20;
    o.max_num_batched_tokens = 256;
    o.prefill_tokens_per_s = 2560;  // a full step = 0.1 s simulated = 5 ms real
    o.long_prefill_token_threshold = threshold;
    Engine e(o, nullptr);
    EXPECT_TRUE(e.Start().ok());
    auto submit = [&](uint32_t salt, int len) {
      RequestArgs a;
      a.prompt = Prompt(salt, len);
      a.max_tokens = 1;
      return e.Submit(std::move(a));
    };
    auto long_one = submit(1000, 500);  // 2 steps without a threshold, 8 with 64
    auto short_one = submit(2000, 40);
    short_one->WaitFinished();
    const bool long_still_prefilling = !long_one->Wait(0, std::chrono::milliseconds(0)).finished;
    long_one->WaitFinished();
    return long_still_prefilling;
  };
  // The engine thread runs steps in order, so these hold however slow the machine is.
  EXPECT_FALSE(short_finishes_first(0));
  EXPECT_TRUE(short_finishes_first(64));
}

TEST(EngineOptionsTest, RejectsNegativeLongPrefillThreshold) {
  EngineOptions o = FastOptions();
  o.long_prefill_token_threshold = -1;
  EXPECT_THAT(std::string(o.Validate().message()), HasSubstr("--long-prefill-token-threshold"));
}

// Two prompts arriving together: with one scheduler the second waits for the first's
// prefill (the step budget holds one of them); with two, both prefill at once.
TEST(EngineSchedulersTest, SecondSchedulerPrefillsInParallel) {
  auto both_first_tokens = [](int schedulers) {
    EngineOptions o = FastOptions();
    o.schedulers = schedulers;
    o.max_num_batched_tokens = 256;
    o.prefill_tokens_per_s = 256;  // one step of 256 tokens = 1 s simulated
    o.time_scale = 20;             // = 50 ms real
    o.decode_step_ms = 1;
    Engine e(o, nullptr);
    EXPECT_TRUE(e.Start().ok());
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::shared_ptr<RequestHandle>> handles;
    for (uint32_t salt : {1u, 2u}) {
      RequestArgs a;
      a.prompt = Prompt(salt * 1000, 256);
      a.max_tokens = 1;
      handles.push_back(e.Submit(std::move(a)));
    }
    for (auto& h : handles) EXPECT_TRUE(h->WaitFinished().error.ok());
    return std::chrono::steady_clock::now() - t0;
  };
  // One scheduler: 2 steps of 50 ms, back to back (at least 100 ms: pacing guarantees it).
  EXPECT_GE(both_first_tokens(1), std::chrono::milliseconds(100));
  // Two: both steps at once. A loaded machine can stretch sleeps, so the bound is generous
  // but still below the serial lower bound.
  EXPECT_LT(both_first_tokens(2), std::chrono::milliseconds(95));
}

// The cache is one: a prompt computed by one scheduler is a hit for every other, and
// events describe the shared pool exactly (RecordingOutput checks each store and removal).
TEST(EngineSchedulersTest, SchedulersShareOneCacheAndOneEventStream) {
  EngineOptions o = FastOptions();
  o.schedulers = 3;
  RecordingOutput out;
  Engine e(o, &out);
  ASSERT_TRUE(e.Start().ok());
  // Many concurrent clients over a few shared prefixes, with eviction (64 blocks).
  std::vector<std::thread> clients;
  std::atomic<int> failures{0};
  for (int c = 0; c < 6; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < 20; ++i) {
        auto p = RunRequest(e, Prompt(static_cast<uint32_t>((c + i) % 4), 100 + i), 3);
        if (!p.error.ok() || p.new_text.size() != 3) ++failures;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failures.load(), 0);
  int cached = 0;
  RunRequest(e, Prompt(0, 100), 1);
  RunRequest(e, Prompt(0, 100), 1, &cached);
  EXPECT_EQ(cached, 96);
  EXPECT_EQ(out.cached(), CacheHashes(e));
  // A command waits for every scheduler to be between steps, then runs once.
  ASSERT_TRUE(e.ResetPrefixCache());
  EXPECT_TRUE(CacheHashes(e).empty());
  EXPECT_TRUE(out.cached().empty());
  e.Restart();
  EXPECT_EQ(out.restarts(), 1);
  EXPECT_EQ(RunRequest(e, Prompt(5, 40), 2).new_text.size(), 2u);
}

TEST(EngineSchedulersTest, MetricsSumRunningRequestsOverSchedulers) {
  EngineOptions o = FastOptions();
  o.schedulers = 2;
  o.time_scale = 1;
  o.prefill_tokens_per_s = 100;  // 50 tokens = 0.5 s: both stay running while we look
  o.max_num_batched_tokens = 50;
  Engine e(o, nullptr);
  ASSERT_TRUE(e.Start().ok());
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (uint32_t salt : {1u, 2u}) {
    RequestArgs a;
    a.prompt = Prompt(salt * 1000, 50);
    a.max_tokens = 5;  // still running when the engine stops
    handles.push_back(e.Submit(std::move(a)));
  }
  std::string text;
  for (int i = 0; i < 100; ++i) {
    text.clear();
    e.RenderMetrics(&text);
    if (text.find("vllm:num_requests_running{engine=\"3\",model_name=\"engine-sim\"} 2") !=
        std::string::npos) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_THAT(text,
              HasSubstr("vllm:num_requests_running{engine=\"3\",model_name=\"engine-sim\"} 2"));
  e.Stop();
  for (auto& h : handles) EXPECT_EQ(h->WaitFinished().error.code(), absl::StatusCode::kUnavailable);
}

TEST(EngineOptionsTest, RejectsNoScheduler) {
  EngineOptions o = FastOptions();
  o.schedulers = 0;
  EXPECT_THAT(std::string(o.Validate().message()), HasSubstr("--schedulers"));
}

}  // namespace
}  // namespace aibrix::enginesim
