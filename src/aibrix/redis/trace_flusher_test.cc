#include "aibrix/redis/trace_flusher.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "prometheus/registry.h"
#include "tests/util/poll.h"
#include "tests/util/redis_server.h"

namespace aibrix::redis {
namespace {

using ::testing::ElementsAre;

class TraceFlusherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = testing::RedisServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    redis_ = std::move(*server);
    options_.connection.address = *ParseAddress(redis_->address());
    options_.connection.clock = &clock_;  // reconnect backoff on the test's time
    reader_ = std::make_unique<Connection>(options_.connection);
    // Wall time 1,700,000,003 s: 3 s into the interval that started at 1,700,000,000.
    clock_.Advance(std::chrono::seconds(1'700'000'002));
  }

  nlohmann::json ReadJson(const std::string& key) {
    auto reply = reader_->Command({"GET", key});
    EXPECT_TRUE(reply.ok() && reply->is_string()) << key;
    if (!reply.ok() || !reply->is_string()) return nullptr;
    return nlohmann::json::parse(reply->str);
  }

  common::FakeClock clock_;
  prometheus::Registry registry_;
  std::unique_ptr<testing::RedisServer> redis_;
  TraceFlusherOptions options_;
  std::unique_ptr<Connection> reader_;
};

TEST_F(TraceFlusherTest, WritesEachActiveModelUnderTheIntervalKeyWithTtlAndMeta) {
  tracking::RequestTracker tracker(clock_);
  TraceFlusher flusher(tracker, clock_, options_, registry_);
  for (int i = 0; i < 3; ++i) tracker.OnAdmitted("llama");
  tracker.OnFinished("llama", 20, 1);      // bucket (43, 0): the reference writes 42:0
  tracker.OnFinished("llama", 274, 1024);  // (81, 100): the reference writes 80:100
  tracker.OnAdmitted("org/model");
  tracker.OnFinished("org/model", 1, 1);

  auto written = flusher.FlushNow();
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(*written, 2u);
  EXPECT_EQ(TraceFlusher::Key("llama", clock_.WallNow() - std::chrono::seconds(3)),
            "aibrix:llama_request_trace_1700000000");

  const nlohmann::json llama = ReadJson("aibrix:llama_request_trace_1700000000");
  EXPECT_EQ(llama["43:0"], 1);
  EXPECT_EQ(llama["81:100"], 1);
  EXPECT_FALSE(llama.contains("42:0"));
  EXPECT_EQ(llama["meta_v"], 4);
  EXPECT_EQ(llama["meta_interval_sec"], 10);
  EXPECT_EQ(llama["meta_precision"], 10);
  EXPECT_EQ(llama["meta_total_reqs"], 3);
  EXPECT_EQ(llama["meta_pending_reqs"], 1);
  EXPECT_EQ(llama["meta_queueing_reqs"], 0);
  EXPECT_EQ(llama.size(), 8u);
  // Model names with '/' are written as they are.
  EXPECT_EQ(ReadJson("aibrix:org/model_request_trace_1700000000")["0:0"], 1);

  auto ttl = reader_->Command({"TTL", "aibrix:llama_request_trace_1700000000"});
  ASSERT_TRUE(ttl.ok());
  EXPECT_GT(ttl->integer, 590);
  EXPECT_LE(ttl->integer, 600);

  // The next interval: only what happened since, and nothing for a quiet model.
  clock_.Advance(std::chrono::seconds(10));
  tracker.OnFinished("llama", 1024, 2);
  written = flusher.FlushNow();
  ASSERT_TRUE(written.ok());
  EXPECT_EQ(*written, 1u);
  const nlohmann::json next = ReadJson("aibrix:llama_request_trace_1700000010");
  EXPECT_EQ(next["100:10"], 1);
  EXPECT_EQ(next["meta_total_reqs"], 0);
  EXPECT_EQ(next["meta_pending_reqs"], 0);
  auto keys = reader_->Scan("aibrix:org/model_request_trace_*", 100, 100);
  ASSERT_TRUE(keys.ok());
  EXPECT_THAT(*keys, ElementsAre("aibrix:org/model_request_trace_1700000000"));
  EXPECT_EQ(flusher.metrics().syncs(), 2);
}

TEST_F(TraceFlusherTest, RedisDownDropsTheIntervalCountsAndRecovers) {
  tracking::RequestTracker tracker(clock_);
  TraceFlusher flusher(tracker, clock_, options_, registry_);
  tracker.OnAdmitted("m");
  ASSERT_TRUE(flusher.FlushNow().ok());
  redis_->Kill();
  tracker.OnAdmitted("m");
  clock_.Advance(std::chrono::seconds(10));
  auto failed = flusher.FlushNow();
  EXPECT_FALSE(failed.ok());
  const double errors = flusher.metrics().errors("io") + flusher.metrics().errors("unavailable");
  EXPECT_GE(errors, 1);
  ASSERT_TRUE(redis_->Restart().ok());
  tracker.OnAdmitted("m");
  clock_.Advance(std::chrono::seconds(10));
  // The lost connection reconnects on the next flush.
  auto written = flusher.FlushNow();
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(*written, 1u);
  EXPECT_EQ(ReadJson("aibrix:m_request_trace_1700000020")["meta_total_reqs"], 1);
  EXPECT_EQ(flusher.metrics().connects(), 2);
}

TEST_F(TraceFlusherTest, TheThreadFlushesAtPeriodBoundariesOfTheWallClock) {
  tracking::RequestTracker tracker(common::SystemClock::Instance());
  options_.period = std::chrono::seconds(1);
  options_.connection.clock = &common::SystemClock::Instance();
  TraceFlusher flusher(tracker, common::SystemClock::Instance(), options_, registry_);
  flusher.Start();
  std::vector<std::string> keys;
  ASSERT_TRUE(testing::Eventually(
      [&] {
        tracker.OnAdmitted("live");
        auto found = reader_->Scan("aibrix:live_request_trace_*", 100, 100);
        if (found.ok()) keys = *found;
        return keys.size() >= 2;
      },
      std::chrono::seconds(20), std::chrono::milliseconds(50)));
  flusher.Stop();
  for (const std::string& key : keys) {
    const nlohmann::json trace = ReadJson(key);
    EXPECT_EQ(trace["meta_interval_sec"], 1);
    EXPECT_GE(trace["meta_total_reqs"], 1);
  }
}

}  // namespace
}  // namespace aibrix::redis
