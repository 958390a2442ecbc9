#include "aibrix/gateway/model_tokenizers.h"

#include "aibrix/store/test_pods.h"
#include "aibrix/tokenizer/byte_tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aibrix::gateway {
namespace {

using store::testing::MakePod;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class ModelTokenizersTest : public ::testing::Test {
 protected:
  ModelTokenizersTest() {
    // Three ready vLLM engines (one on IPv6, one on port 9000), one SGLang engine, one
    // unready vLLM engine; and a model served by SGLang only.
    store::PodObject a = MakePod("a", "llama", "10.0.0.1");
    store::PodObject b = MakePod("b", "llama", "fd00::2");
    store::PodObject c = MakePod("c", "llama", "10.0.0.3");
    c.labels[store::kPortLabel] = "9000";
    store::PodObject s = MakePod("s", "llama", "10.0.0.4");
    s.labels[store::kEngineLabel] = "sglang";
    store::PodObject down = MakePod("0-down", "llama", "10.0.0.5");
    down.ready_condition = false;
    store::PodObject other = MakePod("o", "other", "10.0.0.6");
    other.labels[store::kEngineLabel] = "sglang";
    for (const auto& pod : {a, b, c, s, down, other}) store_.AddPod(pod);
  }

  const store::ModelPods* Pods(const std::string& model) {
    held_ = store_.ReadyPods(model);
    return held_.get();
  }

  store::Store store_;
  tokenizer::ByteTokenizer local_;
  store::ModelPodsRef held_;
};

TEST_F(ModelTokenizersTest, LocalAsksNobody) {
  ModelTokenizers tokenizers(local_);
  EXPECT_FALSE(tokenizers.remote());
  EXPECT_EQ(tokenizers.Choice(Pods("llama")), (TokenizerChoice{false, "local byte tokenizer"}));
  EXPECT_THAT(tokenizers.Endpoints(Pods("llama")), IsEmpty());
}

TEST_F(ModelTokenizersTest, RemoteAsksTheFirstTwoReadyVllmEngines) {
  ModelTokenizers tokenizers(local_, store_, RemoteTokenizersOptions{});
  EXPECT_TRUE(tokenizers.Choice(Pods("llama")).remote);
  // Key order: a, b (IPv6, bracketed), c; the SGLang and the unready pods are never asked.
  EXPECT_THAT(tokenizers.Endpoints(Pods("llama")),
              ElementsAre("http://10.0.0.1:8000", "http://[fd00::2]:8000"));

  const TokenizerChoice other = tokenizers.Choice(Pods("other"));
  EXPECT_FALSE(other.remote);
  EXPECT_THAT(other.source, HasSubstr("no vLLM engine serves the model (engines: sglang)"));
  EXPECT_THAT(tokenizers.Endpoints(Pods("other")), IsEmpty());
  EXPECT_FALSE(tokenizers.Choice(nullptr).remote);
}

TEST_F(ModelTokenizersTest, EndpointFirstAndTemplate) {
  RemoteTokenizersOptions options;
  options.endpoint = "http://tokenizer.svc:8000";
  options.endpoint_template = "http://%s:8080/v1";
  ModelTokenizers tokenizers(local_, store_, options);
  EXPECT_THAT(tokenizers.Endpoints(Pods("llama")),
              ElementsAre("http://tokenizer.svc:8000", "http://10.0.0.1:8080/v1",
                          "http://[fd00::2]:8080/v1"));
  // A model without vLLM engines still asks the endpoint.
  EXPECT_TRUE(tokenizers.Choice(Pods("other")).remote);
  EXPECT_THAT(tokenizers.Endpoints(Pods("other")), ElementsAre("http://tokenizer.svc:8000"));
}

}  // namespace
}  // namespace aibrix::gateway
