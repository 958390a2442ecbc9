#include "aibrix/server/cache_api.h"

#include <gtest/gtest.h>

#include <limits>

#include "nlohmann/json.hpp"

namespace aibrix::server {
namespace {

store::Pod MakePod() {
  store::Pod pod;
  pod.object.ns = "default";
  pod.object.name = "llama-0";
  pod.object.ip = "10.0.0.7";
  pod.object.phase = "Running";
  pod.object.labels = {{"model.aibrix.ai/name", "llama"}, {"odd \"label\"", "a\\b\nc"}};
  pod.key = "default/llama-0";
  pod.model = "llama";
  pod.models = {"llama", "lora-1"};
  pod.ready = true;
  pod.state = std::make_shared<store::PodState>();
  store::SimpleMetric running;
  running.value = 3;
  pod.state->SetMetric("num_requests_running", store::MetricValue{running});
  store::SimpleMetric nan;
  nan.value = std::numeric_limits<double>::quiet_NaN();
  pod.state->SetMetric("not_a_number", store::MetricValue{nan});
  store::HistogramMetric ttft;
  ttft.sum = 3;
  ttft.count = 4;
  ttft.buckets = {{0.5, 2}, {1.0, 4}, {std::numeric_limits<double>::infinity(), 4}};
  pod.state->SetMetric("time_to_first_token_seconds", store::MetricValue{ttft});
  return pod;
}

TEST(CacheApiTest, PodJsonIsValidAndComplete) {
  const store::Pod pod = MakePod();
  PodIndexView index;
  prefix::PodIndexStats events;
  events.pod = pod.key;
  events.model = "llama";
  events.blocks = 7;
  events.tiers = {{"GPU", 5}, {"CPU", 2}};
  index.events = events;
  index.kv_events_subscribed = true;
  std::string text = "[";
  AppendPodJson(&text, pod, index);
  text += "]";
  const nlohmann::json json = nlohmann::json::parse(text)[0];  // throws on invalid JSON
  EXPECT_EQ(json["key"], "default/llama-0");
  EXPECT_EQ(json["namespace"], "default");
  EXPECT_EQ(json["name"], "llama-0");
  EXPECT_EQ(json["ip"], "10.0.0.7");
  EXPECT_EQ(json["ready"], true);
  EXPECT_EQ(json["models"], nlohmann::json({"llama", "lora-1"}));
  EXPECT_EQ(json["labels"]["odd \"label\""], "a\\b\nc");
  EXPECT_EQ(json["kv_events_subscribed"], true);
  EXPECT_EQ(json["running_requests"], 0);
  EXPECT_EQ(json["metrics"]["num_requests_running"], 3);
  EXPECT_TRUE(json["metrics"]["not_a_number"].is_null());
  const nlohmann::json& ttft = json["metrics"]["time_to_first_token_seconds"];
  EXPECT_EQ(ttft["type"], "histogram");
  EXPECT_EQ(ttft["count"], 4);
  EXPECT_EQ(ttft["mean"], 0.75);
  EXPECT_TRUE(ttft["p90"].is_number());
  EXPECT_EQ(json["prefix_index"]["events"]["blocks"], 7);
  EXPECT_EQ(json["prefix_index"]["events"]["tiers"], nlohmann::json({{"CPU", 2}, {"GPU", 5}}));
  EXPECT_FALSE(json["prefix_index"].contains("routing"));
  // The top-level keys are written in alphabetical order, as nlohmann wrote them before
  // (items() of the parsed object are sorted; their places in the text must be too).
  size_t previous = 0;
  for (const auto& [key, value] : json.items()) {
    const size_t at = text.find("\"" + key + "\":");
    ASSERT_NE(at, std::string::npos) << key;
    EXPECT_GT(at, previous) << key << " out of order in " << text;
    previous = at;
  }
}

TEST(CacheApiTest, OnlyTheRoutingIndex) {
  PodIndexView index;
  prefix::PodIndexStats routing;
  routing.pod = "default/llama-0";
  routing.source = prefix::MatchSource::kRouting;
  index.routing = routing;
  std::string text;
  AppendPodJson(&text, MakePod(), index);
  const nlohmann::json json = nlohmann::json::parse(text);
  EXPECT_EQ(json["prefix_index"]["routing"]["source"], "routing");
  EXPECT_FALSE(json["prefix_index"].contains("events"));
  EXPECT_EQ(json["kv_events_subscribed"], false);
}

}  // namespace
}  // namespace aibrix::server
