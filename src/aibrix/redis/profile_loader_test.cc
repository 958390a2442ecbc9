#include "aibrix/redis/profile_loader.h"

#include <string>

#include "fmt/format.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "tests/util/poll.h"
#include "tests/util/redis_server.h"

namespace aibrix::redis {
namespace {

std::string ProfileJson(double created, const std::string& gpu = "a100", double tput = 4) {
  return fmt::format(R"({{"gpu": "{}", "created": {}, "indexes": [[1, 8], [8, 64]],
                          "tputs": [[{}, 1], [1, 1]], "e2e": [[0.5, 1], [1, 2]]}})",
                     gpu, created, tput);
}

class ProfileLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = testing::RedisServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    redis_ = std::move(*server);
    options_.connection.address = *ParseAddress(redis_->address());
    writer_ = std::make_unique<Connection>(options_.connection);
  }

  void Set(const std::string& key, const std::string& value) {
    auto reply = writer_->Command({"SET", key, value});
    ASSERT_TRUE(reply.ok() && !reply->is_error());
  }

  prometheus::Registry registry_;
  std::unique_ptr<testing::RedisServer> redis_;
  ProfileLoaderOptions options_;
  std::unique_ptr<Connection> writer_;
  profile::ProfileCache cache_;
};

TEST_F(ProfileLoaderTest, LoadsUpdatesByCreatedAndForgetsDeletedKeys) {
  ProfileLoader loader(cache_, options_, registry_);
  Set("aibrix:profile_llama_a100", ProfileJson(100));
  Set("aibrix:profile_llama_h100", ProfileJson(100, "h100"));
  Set("aibrix:pod:unrelated", "x");
  ASSERT_TRUE(loader.LoadOnce().ok());
  EXPECT_EQ(cache_.size(), 2u);
  ASSERT_NE(cache_.Find("llama", "a100"), nullptr);
  EXPECT_EQ((*cache_.Find("llama", "a100")->tputs)[0][0], 4);
  EXPECT_EQ(cache_.Find("llama", "a100")->indexes[1][1], 6);  // log2(64)

  // Newer `created` replaces; an older one does not.
  Set("aibrix:profile_llama_a100", ProfileJson(200, "a100", 9));
  Set("aibrix:profile_llama_h100", ProfileJson(50, "h100", 9));
  ASSERT_TRUE(loader.LoadOnce().ok());
  EXPECT_EQ((*cache_.Find("llama", "a100")->tputs)[0][0], 9);
  EXPECT_EQ((*cache_.Find("llama", "h100")->tputs)[0][0], 4);

  // Deleted from Redis: gone from the cache (the reference kept it forever).
  ASSERT_TRUE(writer_->Command({"DEL", "aibrix:profile_llama_h100"}).ok());
  ASSERT_TRUE(loader.LoadOnce().ok());
  EXPECT_EQ(cache_.Find("llama", "h100"), nullptr);
  EXPECT_EQ(cache_.size(), 1u);
  EXPECT_EQ(loader.metrics().syncs(), 3);
}

TEST_F(ProfileLoaderTest, GarbageValuesAreSkippedAndCountedAndKeepTheLastGoodProfile) {
  options_.max_value_bytes = 4096;
  ProfileLoader loader(cache_, options_, registry_);
  Set("aibrix:profile_m_good", ProfileJson(1));
  Set("aibrix:profile_m_later", ProfileJson(1));
  Set("aibrix:profile_m_notjson", "{{{ not json");
  Set("aibrix:profile_m_shape", R"({"indexes": "nope"})");
  Set("aibrix:profile_m_big", std::string(5000, ' '));
  ASSERT_TRUE(writer_->Command({"HSET", "aibrix:profile_m_hash", "f", "v"}).ok());
  ASSERT_TRUE(loader.LoadOnce().ok());  // skipped values do not fail the round
  EXPECT_EQ(cache_.size(), 2u);
  EXPECT_EQ(loader.metrics().errors("garbage"), 2);
  EXPECT_EQ(loader.metrics().errors("too_large"), 1);
  EXPECT_EQ(loader.metrics().errors("reply"), 1);  // WRONGTYPE

  // A good key turned bad keeps its last good profile; it leaves only when deleted.
  Set("aibrix:profile_m_later", "garbage now");
  ASSERT_TRUE(loader.LoadOnce().ok());
  EXPECT_NE(cache_.Find("m", "later"), nullptr);
  EXPECT_EQ(loader.metrics().errors("garbage"), 5);
}

TEST_F(ProfileLoaderTest, RedisDownKeepsTheCacheAndTheThreadRecovers) {
  options_.period = std::chrono::milliseconds(50);
  ProfileLoader loader(cache_, options_, registry_);
  Set("aibrix:profile_m_a100", ProfileJson(1));
  loader.Start();
  ASSERT_TRUE(testing::Eventually([&] { return cache_.size() == 1; }));
  redis_->Kill();
  ASSERT_TRUE(testing::Eventually(
      [&] { return loader.metrics().errors("io") + loader.metrics().errors("unavailable") >= 2; }));
  EXPECT_EQ(cache_.size(), 1u);  // routing keeps the last known profiles
  ASSERT_TRUE(redis_->Restart().ok());
  writer_ = std::make_unique<Connection>(options_.connection);
  Set("aibrix:profile_m_h100", ProfileJson(1, "h100"));
  // The restarted Redis lost a100: the refresh drops it and adds h100.
  ASSERT_TRUE(testing::Eventually(
      [&] { return cache_.Find("m", "h100") != nullptr && cache_.Find("m", "a100") == nullptr; }));
  loader.Stop();
  EXPECT_EQ(loader.metrics().connects(), 2);
}

}  // namespace
}  // namespace aibrix::redis
