#include "aibrix/redis/replica_sync.h"

#include <string>

#include "aibrix/store/test_pods.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "tests/util/redis_server.h"

namespace aibrix::redis {
namespace {

using store::testing::MakePod;

// One gateway replica: its own Store (the same pods as the others) and sync.
struct Replica {
  Replica(const std::string& id, const Address& address, const common::Clock& clock) {
    for (const char* name : {"p1", "p2"}) store.AddPod(MakePod(name, "llama"));
    ReplicaSyncOptions options;
    options.connection.address = address;
    options.gateway_id = id;
    options.connection.clock = &clock;
    sync = std::make_unique<ReplicaSync>(store, options, registry);
  }
  int32_t Remote(const std::string& pod) {
    return (*store.GetPod("default", pod))->state->remote_running();
  }
  void Add(const std::string& id, const std::string& pod) {
    ASSERT_TRUE(store.AddRequest(id, "default/" + pod, "llama").ok());
  }

  prometheus::Registry registry;
  store::Store store;
  std::unique_ptr<ReplicaSync> sync;
};

class ReplicaSyncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = testing::RedisServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    redis_ = std::move(*server);
    address_ = *ParseAddress(redis_->address());
    ConnectionOptions options;
    options.address = address_;
    direct_ = std::make_unique<Connection>(options);
  }

  common::FakeClock clock_;
  std::unique_ptr<testing::RedisServer> redis_;
  Address address_;
  std::unique_ptr<Connection> direct_;
};

TEST_F(ReplicaSyncTest, EachReplicaSeesTheOthersCountsAndNotItsOwn) {
  Replica a("gw-a", address_, clock_);
  Replica b("gw-b", address_, clock_);
  for (const char* id : {"a1", "a2", "a3"}) a.Add(id, "p1");
  b.Add("b1", "p1");
  b.Add("b2", "p1");
  b.Add("b3", "p2");
  ASSERT_TRUE(a.sync->SyncOnce().ok());
  ASSERT_TRUE(b.sync->SyncOnce().ok());
  ASSERT_TRUE(a.sync->SyncOnce().ok());
  EXPECT_EQ(a.Remote("p1"), 2);
  EXPECT_EQ(a.Remote("p2"), 1);
  EXPECT_EQ(b.Remote("p1"), 3);
  EXPECT_EQ(b.Remote("p2"), 0);
  // What the routers read: local + remote.
  EXPECT_EQ((*a.store.GetPod("default", "p1"))->state->total_running(), 5);

  // The published hash carries the reference's fields and expires within 500 ms.
  const std::string key = ReplicaSync::Key("gw-a", "default", "p1");
  EXPECT_EQ(key, "aibrix:pod:gw-a:default:p1");
  auto fields = direct_->Command({"HGETALL", key});
  ASSERT_TRUE(fields.ok());
  std::map<std::string, std::string> map;
  for (size_t i = 0; i + 1 < fields->elements.size(); i += 2) {
    map[fields->elements[i].str] = fields->elements[i + 1].str;
  }
  EXPECT_EQ(map["gateway_instance_id"], "gw-a");
  EXPECT_EQ(map["pod_uid"], "uid-p1");
  EXPECT_EQ(map["pod_name"], "p1");
  EXPECT_EQ(map["namespace"], "default");
  EXPECT_EQ(map["requests_running"], "3");
  EXPECT_EQ(map["seq"], "0");
  EXPECT_EQ(map["update_time"].size(), 12u);  // HH:MM:SS.mmm
  EXPECT_TRUE(map.contains("node_name"));
  auto pttl = direct_->Command({"PTTL", key});
  ASSERT_TRUE(pttl.ok());
  EXPECT_GT(pttl->integer, 0);
  EXPECT_LE(pttl->integer, 500);
  // Indexed with its expiry (wall ms) for the readers.
  auto score = direct_->Command({"ZSCORE", "aibrix:pod_index", key});
  ASSERT_TRUE(score.ok() && score->is_string());
  const auto now_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(clock_.WallNow().time_since_epoch())
          .count();
  EXPECT_EQ(std::stoll(score->str), now_ms + 500);
  // Pods without local requests are not published.
  EXPECT_EQ(direct_->Command({"EXISTS", ReplicaSync::Key("gw-a", "default", "p2")})->integer, 0);

  // A's requests end: its next round publishes 0 once, and B reads 0.
  for (const char* id : {"a1", "a2", "a3"}) ASSERT_TRUE(a.store.DoneRequest(id).ok());
  ASSERT_TRUE(a.sync->SyncOnce().ok());
  EXPECT_EQ(direct_->Command({"HGET", key, "requests_running"})->str, "0");
  EXPECT_EQ(direct_->Command({"HGET", key, "seq"})->str, "3");
  ASSERT_TRUE(b.sync->SyncOnce().ok());
  EXPECT_EQ(b.Remote("p1"), 0);
}

TEST_F(ReplicaSyncTest, GarbageEntriesAreSkippedAndCounted) {
  Replica a("gw-a", address_, clock_);
  ASSERT_TRUE(direct_
                  ->Command({"HSET", "aibrix:pod:gw-x:default:p1", "gateway_instance_id", "gw-x",
                             "namespace", "default", "pod_name", "p1", "requests_running", "abc"})
                  .ok());
  ASSERT_TRUE(direct_->Command({"SET", "aibrix:pod:gw-y:default:p1", "a string"}).ok());
  ASSERT_TRUE(direct_
                  ->Command({"HSET", "aibrix:pod:gw-z:default:p1", "gateway_instance_id", "gw-z",
                             "namespace", "default", "pod_name", "p1", "requests_running", "4"})
                  .ok());
  ASSERT_TRUE(direct_
                  ->Command({"HSET", "aibrix:pod:gw-w:default:gone", "gateway_instance_id", "gw-w",
                             "namespace", "default", "pod_name", "gone", "requests_running", "9"})
                  .ok());
  ASSERT_TRUE(a.sync->SyncOnce().ok());
  EXPECT_EQ(a.Remote("p1"), 4);  // gw-z's; gw-x's and gw-y's are garbage
  EXPECT_EQ(a.sync->metrics().errors("garbage"), 2);
}

TEST_F(ReplicaSyncTest, StaleCountsResetWhileRedisIsDownAndReturnAfterARestart) {
  Replica a("gw-a", address_, clock_);
  Replica b("gw-b", address_, clock_);
  b.Add("b1", "p1");
  ASSERT_TRUE(b.sync->SyncOnce().ok());
  ASSERT_TRUE(a.sync->SyncOnce().ok());
  EXPECT_EQ(a.Remote("p1"), 1);

  redis_->Kill();
  EXPECT_FALSE(a.sync->SyncOnce().ok());
  EXPECT_EQ(a.Remote("p1"), 1);  // kept while recent
  clock_.Advance(std::chrono::milliseconds(1500));
  EXPECT_FALSE(a.sync->SyncOnce().ok());
  EXPECT_EQ(a.Remote("p1"), 0);  // stale: local counts only
  EXPECT_GE(a.sync->metrics().errors("io") + a.sync->metrics().errors("unavailable"), 2);

  ASSERT_TRUE(redis_->Restart().ok());
  clock_.Advance(std::chrono::seconds(10));  // past any reconnect backoff
  ASSERT_TRUE(b.sync->SyncOnce().ok());
  ASSERT_TRUE(a.sync->SyncOnce().ok());
  EXPECT_EQ(a.Remote("p1"), 1);
  EXPECT_EQ(a.sync->metrics().connects(), 2);
}

TEST_F(ReplicaSyncTest, KeysOutsideTheIndexAreFoundByThePeriodicScan) {
  Replica a("gw-a", address_, clock_);
  const auto hset = [&](const std::string& gw, const std::string& n) {
    ASSERT_TRUE(direct_
                    ->Command({"HSET", ReplicaSync::Key(gw, "default", "p1"), "gateway_instance_id",
                               gw, "namespace", "default", "pod_name", "p1", "requests_running", n})
                    .ok());
  };
  ASSERT_TRUE(a.sync->SyncOnce().ok());  // round 0 scans: nothing yet
  hset("go-gateway", "2");               // a reference gateway: no index entry
  for (int round = 1; round < 10; ++round) {
    ASSERT_TRUE(a.sync->SyncOnce().ok());
    EXPECT_EQ(a.Remote("p1"), 0) << round;  // not scanned since
  }
  ASSERT_TRUE(a.sync->SyncOnce().ok());  // round 10 scans
  EXPECT_EQ(a.Remote("p1"), 2);
  hset("go-gateway", "5");  // read every round from now on
  ASSERT_TRUE(a.sync->SyncOnce().ok());
  EXPECT_EQ(a.Remote("p1"), 5);
  ASSERT_TRUE(direct_->Command({"DEL", ReplicaSync::Key("go-gateway", "default", "p1")}).ok());
  ASSERT_TRUE(a.sync->SyncOnce().ok());
  EXPECT_EQ(a.Remote("p1"), 0);
}

TEST_F(ReplicaSyncTest, ExpiredIndexMembersAreDropped) {
  Replica a("gw-a", address_, clock_);
  Replica b("gw-b", address_, clock_);
  b.Add("b1", "p1");
  ASSERT_TRUE(b.sync->SyncOnce().ok());
  ASSERT_TRUE(a.sync->SyncOnce().ok());
  EXPECT_EQ(a.Remote("p1"), 1);
  // B is gone: past its entries' expiry the index drops them (the key may linger in Redis'
  // lazy expiry; the index score decides).
  clock_.Advance(std::chrono::milliseconds(600));
  ASSERT_TRUE(a.sync->SyncOnce().ok());
  EXPECT_EQ(a.Remote("p1"), 0);
  EXPECT_EQ(direct_->Command({"ZCARD", "aibrix:pod_index"})->integer, 0);
}

TEST(ReplicaEntryTest, ParsesTheFieldsAndRejectsGarbage) {
  const auto hash = [](std::vector<std::string> kv) {
    Reply r;
    r.type = Reply::Type::kArray;
    for (std::string& s : kv) {
      Reply e;
      e.type = Reply::Type::kString;
      e.str = std::move(s);
      r.elements.push_back(std::move(e));
    }
    return r;
  };
  auto ok = ParseReplicaEntry(hash({"gateway_instance_id", "g", "namespace", "n", "pod_name", "p",
                                    "requests_running", "12", "extra", "x"}));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->gateway, "g");
  EXPECT_EQ(ok->ns, "n");
  EXPECT_EQ(ok->pod, "p");
  EXPECT_EQ(ok->requests_running, 12);
  EXPECT_FALSE(ParseReplicaEntry(hash({"gateway_instance_id", "g"})).ok());
  EXPECT_FALSE(ParseReplicaEntry(hash({"gateway_instance_id", "g", "namespace", "n", "pod_name",
                                       "p", "requests_running", "-1"}))
                   .ok());
  EXPECT_FALSE(ParseReplicaEntry(hash({"gateway_instance_id", "g", "namespace", "n", "pod_name",
                                       "p", "requests_running", "99999999999"}))
                   .ok());
  EXPECT_FALSE(ParseReplicaEntry(hash({"gateway_instance_id", "g", "namespace"})).ok());
  Reply not_array;
  not_array.type = Reply::Type::kString;
  EXPECT_FALSE(ParseReplicaEntry(not_array).ok());
}

}  // namespace
}  // namespace aibrix::redis
