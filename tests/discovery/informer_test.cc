// The informer against the fake API server (tests/util/fake_kube_api.h): one test per
// protocol feature and fault — pagination, chunks split anywhere, the recorded chunked
// vector, bookmarks, 410 expiry (event and status), expired continue tokens, abrupt
// disconnects, slow streams, malformed lines, a 1 GB line, a server that never answers,
// error statuses, a missing CRD, and the API server going away and coming back.
#include "aibrix/discovery/informer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "tests/util/fake_kube_api.h"
#include "tests/util/poll.h"

namespace aibrix::discovery {
namespace {

using aibrix::testing::Eventually;
using aibrix::testing::FakeKubeApi;
using aibrix::testing::kModelAdaptersPath;
using aibrix::testing::kPodsPath;
using aibrix::testing::SimplePod;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

// Keeps the state the informer hands over, as a store would.
class Recorder : public InformerHandler {
 public:
  void OnList(Resource, std::vector<K8sObject> objects, std::vector<std::string> deleted) override {
    std::lock_guard lock(mu_);
    state_.clear();
    for (K8sObject& object : objects) {
      std::string key = ObjectKey(object);
      state_.emplace(std::move(key), std::move(object));
    }
    ++lists_;
    deleted_.insert(deleted_.end(), deleted.begin(), deleted.end());
  }
  void OnEvents(Resource, std::vector<WatchEvent> events) override {
    std::lock_guard lock(mu_);
    EXPECT_FALSE(events.empty());
    for (WatchEvent& event : events) {
      const std::string key = ObjectKey(*event.object);
      if (event.type == EventType::kDeleted) {
        state_.erase(key);
      } else {
        state_.insert_or_assign(key, std::move(*event.object));
      }
      ++events_;
    }
  }
  std::vector<std::string> Keys() {
    std::lock_guard lock(mu_);
    std::vector<std::string> keys;
    for (const auto& [key, object] : state_) keys.push_back(key);
    return keys;
  }
  std::string Ip(const std::string& key) {
    std::lock_guard lock(mu_);
    auto it = state_.find(key);
    return it == state_.end() ? "" : std::get<store::PodObject>(it->second).ip;
  }
  std::vector<std::string> Instances(const std::string& key) {
    std::lock_guard lock(mu_);
    auto it = state_.find(key);
    return it == state_.end() ? std::vector<std::string>{}
                              : std::get<store::ModelAdapterObject>(it->second).instances;
  }
  int lists() {
    std::lock_guard lock(mu_);
    return lists_;
  }
  int events() {
    std::lock_guard lock(mu_);
    return events_;
  }
  std::vector<std::string> deleted() {
    std::lock_guard lock(mu_);
    return deleted_;
  }

 private:
  std::mutex mu_;
  std::map<std::string, K8sObject> state_;
  int lists_ = 0;
  int events_ = 0;
  std::vector<std::string> deleted_;
};

std::string Ip(int i) { return "10.0.0." + std::to_string(i); }
std::string PodName(int i) { return "pod-" + std::to_string(i); }

class InformerTest : public ::testing::Test {
 protected:
  InformerTest() : api_(std::make_unique<FakeKubeApi>()) {}
  ~InformerTest() override { StopInformer(); }

  void StartInformer(InformerOptions options = {}, KubeClientOptions client_options = {}) {
    options.backoff_initial = 10ms;
    options.backoff_max = 100ms;
    KubeConfig config;
    config.origin = "test";
    config.https = false;
    config.host = "127.0.0.1";
    config.port = api_->port();
    config.token = "test-token";
    client_ = std::move(*KubeClient::Create(config, client_options, clock_));
    resource_ = options.resource;
    informer_ =
        std::make_unique<Informer>(io_, *client_, options, recorder_, metrics_.For(resource_));
    thread_ = std::thread([this] { io_.run(); });
    boost::asio::post(io_, [this] { informer_->Start(); });
  }

  void StopInformer() {
    if (!informer_) return;
    boost::asio::post(io_, [this] { informer_->Stop(); });
    guard_.reset();
    thread_.join();
    informer_.reset();
  }

  void AddPods(int from, int to) {
    for (int i = from; i < to; ++i) api_->Upsert(kPodsPath, SimplePod(PodName(i), "llama", Ip(i)));
  }
  std::vector<std::string> Keys(int from, int to) {
    std::vector<std::string> keys;
    for (int i = from; i < to; ++i) keys.push_back("default/" + PodName(i));
    std::sort(keys.begin(), keys.end());
    return keys;
  }
  bool WaitForKeys(const std::vector<std::string>& keys) {
    return Eventually([&] { return recorder_.Keys() == keys; });
  }
  bool WaitForWatch() {
    return Eventually([&] { return api_->OpenWatches(PathOf()) == 1; });
  }
  const char* PathOf() const {
    return resource_ == Resource::kPods ? kPodsPath : kModelAdaptersPath;
  }
  double Errors(ErrorReason reason) { return metrics_.For(resource_).error(reason).Value(); }
  double Watches() { return metrics_.For(resource_).watches->Value(); }
  bool Synced() {
    std::promise<bool> synced;
    boost::asio::post(io_, [&] { synced.set_value(informer_->synced()); });
    return synced.get_future().get();
  }
  // The resourceVersion of the last watch request.
  // WATCH requests the server has received (the informer counts its own before they arrive).
  size_t WatchRequests() {
    size_t n = 0;
    for (const std::string& target : api_->Requests())
      n += target.find("watch=true") != std::string::npos;
    return n;
  }
  std::string LastWatchVersion() {
    std::string version;
    for (const std::string& target : api_->Requests()) {
      if (target.find("watch=true") == std::string::npos) continue;
      const size_t at = target.find("resourceVersion=") + 16;
      version = target.substr(at, target.find('&', at) - at);
    }
    return version;
  }
  int CountRequests(const std::string& part) {
    int n = 0;
    for (const std::string& target : api_->Requests()) n += target.find(part) != std::string::npos;
    return n;
  }

  std::unique_ptr<FakeKubeApi> api_;
  common::FakeClock clock_;
  prometheus::Registry registry_;
  DiscoveryMetrics metrics_{registry_};
  Recorder recorder_;
  boost::asio::io_context io_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guard_{
      io_.get_executor()};
  std::unique_ptr<KubeClient> client_;
  std::unique_ptr<Informer> informer_;
  Resource resource_ = Resource::kPods;
  std::thread thread_;
};

TEST_F(InformerTest, ListsInPagesThenWatchesFromTheListVersion) {
  AddPods(0, 7);
  api_->SetMaxPage(3);
  StartInformer();
  ASSERT_TRUE(WaitForKeys(Keys(0, 7)));
  ASSERT_TRUE(WaitForWatch());
  const auto requests = api_->Requests();
  ASSERT_GE(requests.size(), 4u);
  EXPECT_EQ(requests[0], "/api/v1/pods?limit=500");
  EXPECT_EQ(requests[1], "/api/v1/pods?limit=500&continue=c1007-3");
  EXPECT_EQ(requests[2], "/api/v1/pods?limit=500&continue=c1007-6");
  EXPECT_THAT(requests[3], HasSubstr("/api/v1/pods?watch=true&resourceVersion=1007&"
                                     "allowWatchBookmarks=true&timeoutSeconds="));
  EXPECT_EQ(api_->LastAuthorization(), "Bearer test-token");
  EXPECT_TRUE(Synced());
  EXPECT_EQ(recorder_.lists(), 1);

  api_->Upsert(kPodsPath, SimplePod(PodName(1), "llama", "10.9.9.9"));
  api_->Remove(kPodsPath, "default", PodName(2));
  AddPods(7, 8);
  std::vector<std::string> want = Keys(0, 8);
  want.erase(std::find(want.begin(), want.end(), "default/" + PodName(2)));
  ASSERT_TRUE(WaitForKeys(want));
  EXPECT_EQ(recorder_.Ip("default/pod-1"), "10.9.9.9");
  EXPECT_EQ(metrics_.For(resource_).event(EventType::kAdded).Value(), 1);
  EXPECT_EQ(metrics_.For(resource_).event(EventType::kModified).Value(), 1);
  EXPECT_EQ(metrics_.For(resource_).event(EventType::kDeleted).Value(), 1);
  EXPECT_EQ(metrics_.For(resource_).objects->Value(), 7);
}

TEST_F(InformerTest, ChunksSplitAtAnyByteAcrossAndWithinLines) {
  StartInformer();
  ASSERT_TRUE(WaitForWatch());
  size_t expected = 0;
  for (size_t max_chunk : {size_t{1}, size_t{2}, size_t{3}, size_t{17}, size_t{4096}}) {
    api_->SetChunking({max_chunk, max_chunk * 7919, 0us});
    const int base = static_cast<int>(max_chunk) * 100;
    for (int i = base; i < base + 5; ++i) {
      api_->Upsert(kPodsPath, aibrix::testing::RealisticPod(i, "llama"));
    }
    expected += 5;
    ASSERT_TRUE(Eventually([&] { return recorder_.Keys().size() == expected; }))
        << "chunks of up to " << max_chunk << " bytes";
  }
  ASSERT_TRUE(Eventually([&] { return recorder_.Keys().size() == 25u; }));
  EXPECT_EQ(recorder_.events(), 25);
  for (ErrorReason reason : {ErrorReason::kMalformed, ErrorReason::kReset,
                             ErrorReason::kBadResponse, ErrorReason::kLineTooLong}) {
    EXPECT_EQ(Errors(reason), 0) << ErrorReasonName(reason);
  }
  EXPECT_EQ(Watches(), 1);  // one stream carried them all
}

TEST_F(InformerTest, RecordedChunkedResponseVectorByteForByte) {
  std::ifstream in(std::string(AIBRIX_TESTDATA_DIR) + "/k8s/watch_http_chunked_sample.txt",
                   std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  const std::string sample = text.str();
  const std::string response = sample.substr(sample.find("HTTP/1.1 200 OK"));
  api_->ScriptNextWatch(response);
  StartInformer();
  // ADDED (Pending), MODIFIED (Running), MODIFIED (Ready), BOOKMARK 48399; then the server
  // closes and the informer watches again from the bookmark.
  ASSERT_TRUE(Eventually([&] { return recorder_.events() == 3; }));
  EXPECT_THAT(recorder_.Keys(), ElementsAre("default/llama-3-1-8b-7d9c6b5f8d-q7w2z"));
  EXPECT_EQ(recorder_.Ip("default/llama-3-1-8b-7d9c6b5f8d-q7w2z"), "10.244.3.18");
  ASSERT_TRUE(Eventually([&] { return LastWatchVersion() == "48399"; }));
  EXPECT_EQ(metrics_.For(resource_).event(EventType::kBookmark).Value(), 1);
  EXPECT_EQ(Errors(ErrorReason::kMalformed), 0);
}

TEST_F(InformerTest, BookmarksAdvanceTheVersionAWatchResumesFrom) {
  AddPods(0, 2);
  StartInformer();
  ASSERT_TRUE(WaitForWatch());
  EXPECT_EQ(LastWatchVersion(), "1002");
  api_->RemoveSilently(kPodsPath, "default", "nothing");  // the server's version moves on
  api_->RemoveSilently(kPodsPath, "default", "nothing");
  api_->Bookmark(kPodsPath);
  ASSERT_TRUE(
      Eventually([&] { return metrics_.For(resource_).event(EventType::kBookmark).Value() == 1; }));
  api_->EndWatches();  // the server's timeout: watch again, from the bookmark
  // The informer's own count moves before its request reaches the server, and the ended
  // watch can still count as open for a moment: wait for the second request itself.
  ASSERT_TRUE(
      Eventually([&] { return WatchRequests() == 2 && api_->OpenWatches(kPodsPath) == 1; }));
  EXPECT_EQ(LastWatchVersion(), "1004");
  EXPECT_EQ(recorder_.lists(), 1);  // no relist
}

TEST_F(InformerTest, ExpiredWatchRelistsAndReconcilesMissedDeletes) {
  AddPods(0, 4);
  StartInformer();
  ASSERT_TRUE(WaitForWatch());
  // An event lost to compaction: pod-1 went away while the watch was down. Compacting
  // before the drop makes every re-watch from the old version expire, however fast the
  // informer comes back; pod-9 then arrives by the relist or by the new watch.
  api_->RemoveSilently(kPodsPath, "default", PodName(1));
  api_->Compact();
  api_->DropWatches();
  AddPods(9, 10);
  std::vector<std::string> want = Keys(0, 4);
  want.erase(want.begin() + 1);
  want.push_back("default/pod-9");
  ASSERT_TRUE(WaitForKeys(want));
  EXPECT_EQ(recorder_.lists(), 2);
  EXPECT_THAT(recorder_.deleted(), ElementsAre("default/pod-1"));
  EXPECT_GE(Errors(ErrorReason::kExpired), 1);
  ASSERT_TRUE(WaitForWatch());
  EXPECT_EQ(LastWatchVersion(), std::to_string(api_->resource_version()));
}

TEST_F(InformerTest, ExpiredAsHttp410AlsoRelists) {
  api_->ExpiryAs(FakeKubeApi::Expiry::kHttp410);
  AddPods(0, 3);
  StartInformer();
  ASSERT_TRUE(WaitForWatch());
  api_->RemoveSilently(kPodsPath, "default", PodName(0));
  api_->Compact();
  api_->EndWatches();
  ASSERT_TRUE(WaitForKeys(Keys(1, 3)));
  EXPECT_EQ(recorder_.lists(), 2);
  EXPECT_GE(Errors(ErrorReason::kExpired), 1);
}

TEST_F(InformerTest, ExpiredContinueTokenRestartsTheList) {
  AddPods(0, 5);
  api_->SetMaxPage(2);
  api_->ExpireNextContinue();
  StartInformer();
  ASSERT_TRUE(WaitForKeys(Keys(0, 5)));
  EXPECT_EQ(recorder_.lists(), 1);  // the partial list was never handed over
  EXPECT_EQ(Errors(ErrorReason::kExpired), 1);
  // Page 1, page 2 (410), then page 1, 2 and 3 again.
  EXPECT_EQ(CountRequests("?limit=500"), 5);
  EXPECT_EQ(CountRequests("&continue="), 3);
}

TEST_F(InformerTest, AbruptDisconnectWatchesAgainFromTheLastVersion) {
  AddPods(0, 2);
  StartInformer();
  ASSERT_TRUE(WaitForWatch());
  AddPods(2, 3);
  ASSERT_TRUE(WaitForKeys(Keys(0, 3)));
  const std::string seen = std::to_string(api_->resource_version());
  api_->DropWatches();  // a chunk cut in the middle, then a reset
  ASSERT_TRUE(
      Eventually([&] { return WatchRequests() == 2 && api_->OpenWatches(kPodsPath) == 1; }));
  EXPECT_EQ(LastWatchVersion(), seen);
  EXPECT_EQ(Errors(ErrorReason::kReset) + Errors(ErrorReason::kBadResponse), 1);
  AddPods(3, 4);
  ASSERT_TRUE(WaitForKeys(Keys(0, 4)));
  EXPECT_EQ(recorder_.lists(), 1);
}

TEST_F(InformerTest, SlowStreamByteByByte) {
  StartInformer();
  ASSERT_TRUE(WaitForWatch());
  api_->SetChunking({1, 42, 50us});  // one byte per chunk, a pause after each
  api_->Upsert(kPodsPath, aibrix::testing::RealisticPod(1, "llama"));
  api_->Upsert(kPodsPath, SimplePod("slow", "llama", "10.1.1.1"));
  ASSERT_TRUE(Eventually([&] { return recorder_.Keys().size() == 2; }, 60s));
  EXPECT_EQ(recorder_.Ip("default/slow"), "10.1.1.1");
  EXPECT_EQ(Watches(), 1);
}

TEST_F(InformerTest, MalformedLinesAreSkippedCountedAndTheWatchGoesOn) {
  StartInformer();
  ASSERT_TRUE(WaitForWatch());
  api_->SendRaw(kPodsPath, "this is not json\n");
  api_->SendRaw(kPodsPath, "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"p\"\n");
  api_->SendRaw(kPodsPath, R"({"type":"RESIZED","object":{}})"
                           "\n");
  api_->SendRaw(
      kPodsPath,
      R"({"type":"ADDED","object":{"kind":"Service","metadata":{"name":"s","namespace":"default"}}})"
      "\n");
  api_->SendRaw(kPodsPath,
                R"({"type":"ADDED","object":{"kind":"Pod","metadata":{"namespace":"default"}}})"
                "\n");
  api_->SendRaw(
      kPodsPath,
      R"({"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"x","namespace":"default","labels":{"a":[1]}}}})"
      "\n\r\n\n");
  AddPods(0, 1);
  ASSERT_TRUE(WaitForKeys(Keys(0, 1)));
  EXPECT_EQ(Errors(ErrorReason::kMalformed), 3);
  EXPECT_EQ(Errors(ErrorReason::kUnknownType), 1);
  EXPECT_EQ(Errors(ErrorReason::kWrongKind), 1);
  EXPECT_EQ(Errors(ErrorReason::kMissingField), 1);
  EXPECT_EQ(Watches(), 1);  // the same stream went on
  EXPECT_EQ(recorder_.events(), 1);
}

TEST_F(InformerTest, OneGigabyteLineIsCutOffAndTheWatchResumes) {
  StartInformer();  // the default cap: 16 MiB
  ASSERT_TRUE(WaitForWatch());
  api_->SendHugeLine(kPodsPath, uint64_t{1} << 30);
  ASSERT_TRUE(Eventually([&] { return Errors(ErrorReason::kLineTooLong) == 1; }, 60s));
  ASSERT_TRUE(Eventually([&] { return Watches() == 2 && api_->OpenWatches(kPodsPath) == 1; }, 60s));
  AddPods(0, 1);
  ASSERT_TRUE(WaitForKeys(Keys(0, 1)));
  // Read up to the cap and dropped: the rest of the gigabyte was never taken.
  EXPECT_LT(api_->huge_bytes_sent(), uint64_t{256} << 20);
  EXPECT_EQ(recorder_.lists(), 1);
}

TEST_F(InformerTest, ServerThatNeverAnswersTimesOutAndIsRetried) {
  AddPods(0, 1);
  api_->Hang(true);
  KubeClientOptions client;
  client.request_timeout = 200ms;
  StartInformer({}, client);
  ASSERT_TRUE(Eventually([&] { return Errors(ErrorReason::kTimeout) >= 2; }));
  EXPECT_FALSE(Synced());
  api_->Hang(false);
  ASSERT_TRUE(WaitForKeys(Keys(0, 1)));
  EXPECT_TRUE(Synced());
}

TEST_F(InformerTest, ErrorStatusesAreRetriedWithBackoff) {
  AddPods(0, 2);
  api_->FailNext(500, 2);
  StartInformer();
  ASSERT_TRUE(WaitForKeys(Keys(0, 2)));
  EXPECT_EQ(Errors(ErrorReason::kHttpStatus), 2);
  ASSERT_TRUE(WaitForWatch());
  api_->FailNext(403, 1);
  api_->EndWatches();  // the next watch is refused once, then goes through
  ASSERT_TRUE(Eventually([&] { return Watches() == 3 && api_->OpenWatches(kPodsPath) == 1; }));
  EXPECT_EQ(Errors(ErrorReason::kHttpStatus), 3);
  EXPECT_EQ(recorder_.lists(), 1);
}

TEST_F(InformerTest, WatchErrorEventOtherThanGoneWatchesAgain) {
  StartInformer();
  ASSERT_TRUE(WaitForWatch());
  api_->SendRaw(
      kPodsPath,
      R"({"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"internal error","reason":"InternalError","code":500}})"
      "\n");
  ASSERT_TRUE(Eventually([&] { return Watches() == 2 && api_->OpenWatches(kPodsPath) == 1; }));
  EXPECT_EQ(Errors(ErrorReason::kWatchError), 1);
  EXPECT_EQ(recorder_.lists(), 1);
}

TEST_F(InformerTest, ModelAdaptersWithoutTheCrdCountAsEmptyUntilItAppears) {
  api_->FailNext(404, 1);
  InformerOptions options;
  options.resource = Resource::kModelAdapters;
  StartInformer(options);
  ASSERT_TRUE(Eventually([&] { return Synced(); }));
  EXPECT_EQ(Errors(ErrorReason::kHttpStatus), 1);
  api_->Upsert(kModelAdaptersPath, aibrix::testing::ModelAdapter("sql-lora", {"pod-1", "pod-2"}));
  ASSERT_TRUE(Eventually([&] { return recorder_.Keys().size() == 1; }));
  EXPECT_THAT(recorder_.Instances("default/sql-lora"), ElementsAre("pod-1", "pod-2"));
  ASSERT_TRUE(WaitForWatch());
  api_->Upsert(kModelAdaptersPath, aibrix::testing::ModelAdapter("sql-lora", {"pod-3"}));
  ASSERT_TRUE(Eventually([&] { return recorder_.Instances("default/sql-lora").size() == 1; }));
}

TEST_F(InformerTest, NamespaceAndLabelSelectorReachTheServer) {
  api_->Upsert(kPodsPath, SimplePod("a", "llama", "10.0.0.1", true, "ml"));
  api_->Upsert(kPodsPath, SimplePod("b", "other", "10.0.0.2", true, "ml"));
  api_->Upsert(kPodsPath, SimplePod("c", "llama", "10.0.0.3", true, "default"));
  InformerOptions options;
  options.ns = "ml";
  options.label_selector = "model.aibrix.ai/name=llama";
  StartInformer(options);
  ASSERT_TRUE(WaitForKeys({"ml/a"}));
  EXPECT_EQ(api_->Requests()[0],
            "/api/v1/namespaces/ml/pods?limit=500&labelSelector=model.aibrix.ai%2Fname%3Dllama");
  ASSERT_TRUE(Eventually([&] { return api_->OpenWatches(kPodsPath) == 1; }));
  api_->Upsert(kPodsPath, SimplePod("d", "llama", "10.0.0.4", true, "ml"));
  api_->Upsert(kPodsPath, SimplePod("e", "llama", "10.0.0.5", true, "default"));
  ASSERT_TRUE(WaitForKeys({"ml/a", "ml/d"}));
}

TEST_F(InformerTest, ApiServerRestartOnTheSamePortConverges) {
  AddPods(0, 5);
  StartInformer();
  ASSERT_TRUE(WaitForWatch());
  ASSERT_TRUE(WaitForKeys(Keys(0, 5)));
  const uint16_t port = api_->port();
  api_.reset();  // the API server goes away: watches break, connections are refused
  ASSERT_TRUE(Eventually([&] { return Errors(ErrorReason::kConnect) >= 1; }));
  // It comes back (etcd kept counting) with what changed meanwhile: pod-0 gone, pod-7 new,
  // pod-3 moved; its watch cache starts now, so the old version is expired. It answers only
  // once all of that is in place, however soon the informer reconnects.
  api_ = std::make_unique<FakeKubeApi>(port, /*serve=*/false);
  api_->SetResourceVersion(5000);
  for (int i : {1, 2, 4, 7}) api_->Upsert(kPodsPath, SimplePod(PodName(i), "llama", Ip(i)));
  api_->Upsert(kPodsPath, SimplePod(PodName(3), "llama", "10.3.3.3"));
  api_->Compact();
  api_->Serve();
  ASSERT_TRUE(WaitForKeys(
      {"default/pod-1", "default/pod-2", "default/pod-3", "default/pod-4", "default/pod-7"}));
  EXPECT_EQ(recorder_.Ip("default/pod-3"), "10.3.3.3");
  EXPECT_THAT(recorder_.deleted(), ElementsAre("default/pod-0"));
  ASSERT_TRUE(WaitForWatch());
  EXPECT_EQ(LastWatchVersion(), "5005");
  api_->Upsert(kPodsPath, SimplePod(PodName(8), "llama", Ip(8)));
  ASSERT_TRUE(Eventually([&] { return recorder_.Keys().size() == 6; }));
}

}  // namespace
}  // namespace aibrix::discovery
