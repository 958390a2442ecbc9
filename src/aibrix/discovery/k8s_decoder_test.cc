#include "aibrix/discovery/k8s_decoder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "aibrix/discovery/line_assembler.h"
#include "aibrix/store/pod.h"

namespace aibrix::discovery {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

std::string ReadVector(const std::string& name) {
  std::ifstream in(std::string(AIBRIX_TESTDATA_DIR) + "/k8s/" + name, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The decoder reads kJsonPadding bytes past the end: tests hand it padded copies.
class Padded {
 public:
  explicit Padded(std::string_view json) : buffer_(json) {
    buffer_.append(kJsonPadding, '\0');
    size_ = json.size();
  }
  std::string_view view() const { return std::string_view(buffer_.data(), size_); }

 private:
  std::string buffer_;
  size_t size_ = 0;
};

absl::StatusOr<WatchEvent> DecodeEvent(K8sDecoder& decoder, std::string_view json) {
  return decoder.DecodeEvent(Padded(json).view());
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

const store::PodObject& PodOf(const WatchEvent& event) {
  return std::get<store::PodObject>(*event.object);
}

TEST(K8sDecoderTest, PodSampleFieldsAsTheCacheReadsThem) {
  K8sDecoder decoder(Resource::kPods);
  const std::string pod = ReadVector("pod_sample.json");
  auto event = DecodeEvent(decoder, R"({"type":"ADDED","object":)" + pod + "}");
  ASSERT_TRUE(event.ok()) << event.status();
  EXPECT_EQ(event->type, EventType::kAdded);
  EXPECT_EQ(event->resource_version, "48213");
  const store::PodObject& p = PodOf(*event);
  EXPECT_EQ(p.Key(), "default/llama-3-1-8b-7d9c6b5f8d-x2k9p");
  EXPECT_EQ(p.uid, "6f1c2a0e-3b4d-4c1e-9a7f-2d5e8b9c0a11");
  EXPECT_EQ(p.ip, "10.244.3.17");
  EXPECT_EQ(p.phase, "Running");
  EXPECT_TRUE(p.ready_condition);
  EXPECT_FALSE(p.deletion_timestamp.has_value());
  EXPECT_EQ(p.node_name, "gpu-node-3");
  EXPECT_EQ(p.deployment, "llama-3-1-8b");
  EXPECT_EQ(store::PodModelName(p), "llama-3-1-8b");
  EXPECT_TRUE(store::PodKvEventsEnabled(p));
  EXPECT_TRUE(store::IsPodReady(p));
  EXPECT_EQ(p.labels.size(), 9u);
  EXPECT_THAT(p.annotations, ElementsAre(Pair("prometheus.io/path", "/metrics"),
                                         Pair("prometheus.io/port", "8000"),
                                         Pair("prometheus.io/scrape", "true")));
  ASSERT_EQ(p.containers.size(), 1u);
  EXPECT_EQ(p.containers[0].name, "vllm-openai");
  ASSERT_EQ(p.containers[0].ports.size(), 3u);
  EXPECT_EQ(p.containers[0].ports[1], (store::ContainerPort{"kv-events", 5557, "TCP"}));
  EXPECT_THAT(p.containers[0].env, ElementsAre(Pair("PYTHONHASHSEED", "0")));
}

TEST(K8sDecoderTest, WatchStreamSampleEventByEvent) {
  K8sDecoder decoder(Resource::kPods);
  const auto lines = Lines(ReadVector("watch_stream_sample.jsonl"));
  ASSERT_EQ(lines.size(), 7u);
  std::vector<WatchEvent> events;
  for (const std::string& line : lines) {
    auto event = DecodeEvent(decoder, line);
    ASSERT_TRUE(event.ok()) << event.status();
    events.push_back(std::move(*event));
  }
  EXPECT_EQ(events[0].type, EventType::kAdded);
  EXPECT_EQ(PodOf(events[0]).phase, "Pending");
  EXPECT_EQ(PodOf(events[0]).ip, "");
  EXPECT_FALSE(store::IsPodReady(PodOf(events[0])));
  EXPECT_EQ(events[1].type, EventType::kModified);
  EXPECT_EQ(PodOf(events[1]).phase, "Running");
  EXPECT_FALSE(PodOf(events[1]).ready_condition);
  EXPECT_EQ(PodOf(events[1]).ip, "10.244.3.18");
  EXPECT_TRUE(PodOf(events[2]).ready_condition);
  EXPECT_TRUE(store::IsPodReady(PodOf(events[2])));
  EXPECT_EQ(events[3].type, EventType::kBookmark);
  EXPECT_EQ(events[3].resource_version, "48399");
  EXPECT_FALSE(events[3].object.has_value());
  EXPECT_TRUE(PodOf(events[4]).deletion_timestamp.has_value());
  EXPECT_FALSE(store::IsPodReady(PodOf(events[4])));
  EXPECT_EQ(events[5].type, EventType::kDeleted);
  EXPECT_EQ(ObjectKey(*events[5].object), "default/llama-3-1-8b-7d9c6b5f8d-q7w2z");
  EXPECT_EQ(events[6].type, EventType::kError);
  EXPECT_EQ(events[6].status.code, 410);
  EXPECT_EQ(events[6].status.reason, "Expired");
  EXPECT_TRUE(events[6].status.Expired());
  EXPECT_EQ(events[6].status.message, "too old resource version: 48251 (48990)");
}

TEST(K8sDecoderTest, ListPageSample) {
  K8sDecoder decoder(Resource::kPods);
  const std::string json = ReadVector("podlist_page_sample.json");
  auto page = decoder.DecodeList(Padded(json).view());
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->resource_version, "48250");
  EXPECT_EQ(page->continue_token.substr(0, 12), "eyJ2IjoibWV0");
  EXPECT_EQ(page->remaining_items, 3u);
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_EQ(ObjectKey(page->items[0]), "default/llama-3-1-8b-7d9c6b5f8d-x2k9p");
  EXPECT_TRUE(page->skipped.empty());
}

TEST(K8sDecoderTest, ModelAdapterSampleInstances) {
  K8sDecoder decoder(Resource::kModelAdapters);
  auto event = DecodeEvent(
      decoder, R"({"type":"MODIFIED","object":)" + ReadVector("modeladapter_sample.json") + "}");
  ASSERT_TRUE(event.ok()) << event.status();
  const auto& adapter = std::get<store::ModelAdapterObject>(*event->object);
  EXPECT_EQ(adapter.ns, "default");
  EXPECT_EQ(adapter.name, "sql-lora");
  EXPECT_THAT(adapter.instances,
              ElementsAre("llama-3-1-8b-7d9c6b5f8d-x2k9p", "llama-3-1-8b-7d9c6b5f8d-q7w2z"));
  EXPECT_EQ(event->resource_version, "48777");
}

TEST(K8sDecoderTest, UnknownFieldsOfAnyShapeAndAnyOrderAreTolerated) {
  K8sDecoder decoder(Resource::kPods);
  auto event = DecodeEvent(decoder, R"({
    "object": {"future": {"deep": [1, {"x": null}, 1e300, 123456789012345678901234567890]},
               "status": {"podIP": "10.0.0.9", "extra": [true], "conditions": [
                   {"type": "Ready", "status": "True", "new": {}}]},
               "metadata": {"namespace": "ns", "name": "p", "managedFields": [{"a": 1}],
                            "labels": {"model.aibrix.ai/name": "m"}, "annotations": null},
               "spec": {"containers": [{"name": "c", "env": [
                   {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s"}}},
                   {"name": "EMPTY"}, {"name": "data-parallel-size", "value": "2"}]}]}},
    "somethingNew": "x",
    "type": "MODIFIED"})");
  ASSERT_TRUE(event.ok()) << event.status();
  const store::PodObject& pod = PodOf(*event);
  EXPECT_EQ(pod.Key(), "ns/p");
  EXPECT_EQ(pod.ip, "10.0.0.9");
  EXPECT_TRUE(pod.ready_condition);
  EXPECT_TRUE(pod.annotations.empty());
  ASSERT_EQ(pod.containers.size(), 1u);
  EXPECT_THAT(pod.containers[0].env,
              ElementsAre(Pair("EMPTY", ""), Pair("data-parallel-size", "2")));
  EXPECT_EQ(store::PodDataParallelSize(pod), 2);
}

TEST(K8sDecoderTest, BadInputIsClassified) {
  K8sDecoder decoder(Resource::kPods);
  const auto reason = [&](std::string_view json) {
    auto event = DecodeEvent(decoder, json);
    return event.ok() ? std::string("ok")
                      : std::string(DecodeErrorName(DecodeErrorOf(event.status())));
  };
  EXPECT_EQ(reason(""), "malformed");
  EXPECT_EQ(reason("{"), "malformed");
  EXPECT_EQ(reason(R"({"type":"ADDED","object":{"metadata":{"name":"p","namespace":"n"}}} x)"),
            "malformed");
  EXPECT_EQ(reason("[1,2]"), "malformed");
  EXPECT_EQ(reason("null"), "malformed");
  EXPECT_EQ(reason(R"({"type":"ADDED","object":{"metadata":{"name":"p","namespace":"n",
      "labels":{"a":1}}}})"),
            "malformed");
  EXPECT_EQ(reason(R"({"type":"ADDED","object":{"metadata":{"name":7,"namespace":"n"}}})"),
            "malformed");
  EXPECT_EQ(reason(R"({"type":"ADDED","object":{"metadata":{"name":"p","namespace":"n"},
      "spec":{"containers":{"name":"c"}}}})"),
            "malformed");
  EXPECT_EQ(reason(R"({"type":"ADDED","object":{"metadata":{"name":"p","namespace":"n"},
      "spec":{"containers":[{"ports":[{"containerPort":99999999999}]}]}}})"),
            "malformed");
  EXPECT_EQ(reason(R"({"type":"RENAMED","object":{}})"), "unknown_type");
  EXPECT_EQ(reason(R"({"type":"ADDED","object":{"kind":"Deployment",
      "metadata":{"name":"p","namespace":"n"}}})"),
            "wrong_kind");
  EXPECT_EQ(reason(R"({"type":"ADDED","object":{"kind":"Pod","metadata":{"namespace":"n"}}})"),
            "missing_field");
  EXPECT_EQ(reason(R"({"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"p"}}})"),
            "missing_field");
  EXPECT_EQ(reason(R"({"object":{"kind":"Pod","metadata":{"name":"p","namespace":"n"}}})"),
            "missing_field");
  EXPECT_EQ(reason(R"({"type":"ADDED"})"), "missing_field");
  EXPECT_EQ(reason(R"({"type":"BOOKMARK","object":{"kind":"Pod","metadata":{}}})"),
            "missing_field");
  EXPECT_EQ(reason(R"({"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"p",
      "namespace":"n","deletionTimestamp":null,"labels":null},"status":null,"spec":null}})"),
            "ok");
}

TEST(K8sDecoderTest, ListSkipsUnusableItemsAndRejectsMalformedPages) {
  K8sDecoder decoder(Resource::kModelAdapters);
  const std::string json = R"({"kind":"ModelAdapterList","metadata":{"resourceVersion":"9"},
      "items":[{"metadata":{"name":"a","namespace":"n"},"status":{"instances":["p1"]}},
               {"metadata":{"namespace":"n"}},
               {"kind":"Pod","metadata":{"name":"b","namespace":"n"}},
               {"metadata":{"name":"c","namespace":"n"},"status":{"instances":[1]}}]})";
  auto page = decoder.DecodeList(Padded(json).view());
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->resource_version, "9");
  EXPECT_EQ(page->continue_token, "");
  EXPECT_EQ(page->remaining_items, 0u);
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_EQ(ObjectKey(page->items[0]), "n/a");
  ASSERT_EQ(page->skipped.size(), 3u);
  EXPECT_EQ(DecodeErrorOf(page->skipped[0]), DecodeError::kMissingField);
  EXPECT_EQ(DecodeErrorOf(page->skipped[1]), DecodeError::kWrongKind);
  EXPECT_EQ(DecodeErrorOf(page->skipped[2]), DecodeError::kMalformed);

  EXPECT_FALSE(decoder.DecodeList(Padded(R"({"items":[}")").view()).ok());
  EXPECT_FALSE(decoder.DecodeList(Padded(R"({"items":[]})").view()).ok());  // no version
}

TEST(K8sDecoderTest, RemainingItemCountIsAHintOfAnyShape) {
  K8sDecoder decoder(Resource::kPods);
  for (const auto& [count, want] : std::vector<std::pair<std::string, uint64_t>>{
           {"12", 12}, {"-1", 0}, {"\"5\"", 0}, {"null", 0}, {"1.5", 0}, {"{}", 0}}) {
    auto page =
        decoder.DecodeList(Padded(R"({"metadata":{"resourceVersion":"9","remainingItemCount":)" +
                                  count + R"(},"items":[]})")
                               .view());
    ASSERT_TRUE(page.ok()) << count << ": " << page.status();
    EXPECT_EQ(page->remaining_items, want) << count;
  }
}

TEST(K8sDecoderTest, ErrorResponseBodyStatus) {
  K8sDecoder decoder(Resource::kPods);
  auto status = decoder.DecodeStatus(
      Padded(R"({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
      "message":"pods is forbidden","reason":"Forbidden","code":403})")
          .view());
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->code, 403);
  EXPECT_EQ(status->reason, "Forbidden");
  EXPECT_FALSE(decoder.DecodeStatus(Padded("not json").view()).has_value());
  EXPECT_FALSE(decoder.DecodeStatus(Padded(R"({"kind":"Pod"})").view()).has_value());
}

TEST(K8sDecoderTest, DeploymentNameFollowsTheReferenceOrder) {
  DecodeOptions options;
  std::map<std::string, std::string> labels;
  const std::vector<OwnerRef> replica_set{{"ReplicaSet", "llama-7d9c6b5f8d"}};
  const std::vector<OwnerRef> ray{{"RayCluster", "fleet-a-raycluster-x1"}};
  EXPECT_EQ(DeploymentName(labels, {}, options), "");
  EXPECT_EQ(DeploymentName(labels, replica_set, options), "llama");
  EXPECT_EQ(DeploymentName(labels, ray, options), "fleet-a");
  EXPECT_EQ(DeploymentName(labels, {{"ReplicaSet", "nodash"}}, options), "");
  labels["app.kubernetes.io/name"] = "from-label";
  EXPECT_EQ(DeploymentName(labels, replica_set, options), "from-label");
  labels["ray.io/is-ray-node"] = "yes";
  EXPECT_EQ(DeploymentName(labels, replica_set, options), "llama");
  labels["orchestration.aibrix.ai/raycluster-fleet-name"] = "fleet";
  EXPECT_EQ(DeploymentName(labels, replica_set, options), "fleet");
  options.fleet_label = "my/fleet";
  options.deployment_label = "my/deployment";
  labels.erase("ray.io/is-ray-node");
  labels["my/deployment"] = "mine";
  EXPECT_EQ(DeploymentName(labels, replica_set, options), "mine");
}

TEST(K8sDecoderTest, LargeDocumentThenSmallOnesStillDecode) {
  K8sDecoder decoder(Resource::kPods);
  std::string big = R"({"type":"ADDED","object":{"metadata":{"name":"p","namespace":"n",)"
                    R"("annotations":{"blob":")" +
                    std::string(5 << 20, 'x') + R"("}}}})";
  auto event = DecodeEvent(decoder, big);
  ASSERT_TRUE(event.ok()) << event.status();
  EXPECT_EQ(PodOf(*event).annotations.at("blob").size(), 5u << 20);
  auto small = DecodeEvent(
      decoder, R"({"type":"DELETED","object":{"metadata":{"name":"q","namespace":"n"}}})");
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(ObjectKey(*small->object), "n/q");
}

}  // namespace
}  // namespace aibrix::discovery
