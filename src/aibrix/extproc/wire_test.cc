#include "aibrix/extproc/wire.h"

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace aibrix::extproc {
namespace {

TEST(ExtProcWireTest, HeaderValueReadsRawValueThenValue) {
  core_v3::HeaderMap map;
  auto* a = map.add_headers();
  a->set_key("routing-strategy");
  a->set_raw_value("random");
  auto* b = map.add_headers();
  b->set_key(":path");
  b->set_value("/v1/completions");  // a proxy that sends value only
  auto* c = map.add_headers();
  c->set_key("routing-strategy");
  c->set_raw_value("second");
  EXPECT_EQ(HeaderValue(map, "routing-strategy"), "random");
  EXPECT_EQ(HeaderValue(map, ":path"), "/v1/completions");
  EXPECT_EQ(HeaderValue(map, "Routing-Strategy"), "");  // keys are lower-case on the wire
  EXPECT_EQ(HeaderValue(map, "absent"), "");
}

TEST(ExtProcWireTest, SetHeaderWritesRawValueOnlyAndOverwrites) {
  ext_proc_v3::HeaderMutation mutation;
  SetHeader(mutation, "target-pod", "[fd00::1]:8000");
  ASSERT_EQ(mutation.set_headers_size(), 1);
  const auto& option = mutation.set_headers(0);
  EXPECT_EQ(option.header().key(), "target-pod");
  EXPECT_EQ(option.header().raw_value(), "[fd00::1]:8000");
  EXPECT_TRUE(option.header().value().empty());
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  EXPECT_FALSE(option.has_append());  // unset: Envoy overwrites
#pragma GCC diagnostic pop
}

TEST(ExtProcWireTest, ImmediateErrorIsOpenAIShaped) {
  ext_proc_v3::ImmediateResponse response;
  FillImmediateError(response, 503, "no ready pod", "x-error-no-model-backends");
  EXPECT_EQ(response.status().code(), 503);
  const auto body = nlohmann::json::parse(response.body());
  EXPECT_EQ(body["error"]["message"], "no ready pod");
  EXPECT_TRUE(body["error"]["type"].is_string());
  EXPECT_EQ(HeaderValue(core_v3::HeaderMap(), "x"), "");
  bool content_type = false;
  bool marker = false;
  for (const auto& option : response.headers().set_headers()) {
    EXPECT_TRUE(option.header().value().empty());
    content_type |= option.header().key() == "content-type" &&
                    option.header().raw_value() == "application/json";
    marker |= option.header().key() == "x-error-no-model-backends" &&
              option.header().raw_value() == "true";
  }
  EXPECT_TRUE(content_type);
  EXPECT_TRUE(marker);
}

TEST(ExtProcWireTest, ConstantTimeEquals) {
  EXPECT_TRUE(ConstantTimeEquals("Bearer abc", "Bearer abc"));
  EXPECT_FALSE(ConstantTimeEquals("Bearer abd", "Bearer abc"));
  EXPECT_FALSE(ConstantTimeEquals("Bearer ab", "Bearer abc"));
  EXPECT_FALSE(ConstantTimeEquals("Bearer abcd", "Bearer abc"));
  EXPECT_FALSE(ConstantTimeEquals("", "Bearer abc"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

}  // namespace
}  // namespace aibrix::extproc
