#include "aibrix/gateway/tokenizer_log.h"

#include <algorithm>
#include <sstream>

#include "aibrix/common/logging.h"
#include "aibrix/store/test_pods.h"
#include "aibrix/tokenizer/byte_tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "spdlog/sinks/ostream_sink.h"

namespace aibrix::gateway {
namespace {

using store::testing::MakePod;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// The "tokenizer" logger's lines while the object lives.
class CapturedLog {
 public:
  CapturedLog() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(out_)) {
    sink_->set_pattern("%v");
    common::Logger("tokenizer")->sinks().push_back(sink_);
  }
  ~CapturedLog() {
    auto& sinks = common::Logger("tokenizer")->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  // The lines logged since the last call.
  std::vector<std::string> Take() {
    std::vector<std::string> lines;
    std::istringstream in(out_.str());
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    out_.str("");
    return lines;
  }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

store::PodObject Sglang(const std::string& name, const std::string& model) {
  store::PodObject pod = MakePod(name, model);
  pod.labels[store::kEngineLabel] = "sglang";
  return pod;
}

TEST(TokenizerLogTest, AnnouncesModelsAndChangesOfChoice) {
  CapturedLog log;
  store::Store store;
  tokenizer::ByteTokenizer local;
  ModelTokenizers tokenizers(local, store, RemoteTokenizersOptions{});
  TokenizerLog announcer(tokenizers, store);
  store.AddListener(&announcer);

  store.AddPod(MakePod("a", "llama"));
  EXPECT_THAT(log.Take(),
              ElementsAre("model 'llama' tokenized by: vLLM /tokenize of the model's engines"));
  store.AddPod(MakePod("b", "llama"));  // nothing new
  store.UpdatePod(MakePod("b", "llama", "10.0.0.9"));
  EXPECT_THAT(log.Take(), IsEmpty());

  store.AddPod(Sglang("s", "other"));
  EXPECT_THAT(log.Take(), ElementsAre(HasSubstr("model 'other' tokenized by: local byte "
                                                "tokenizer: no vLLM engine serves the model")));
  store.AddPod(MakePod("v", "other"));  // a vLLM engine comes
  EXPECT_THAT(log.Take(), ElementsAre("model 'other' now tokenized by: vLLM /tokenize of the "
                                      "model's engines"));
  store.DeletePod("default", "v");  // and goes
  EXPECT_THAT(log.Take(), ElementsAre(HasSubstr("model 'other' now tokenized by: local")));
  store.UpdatePod(MakePod("s", "other"));  // the engine label changes to vllm (absent)
  EXPECT_THAT(log.Take(), ElementsAre(HasSubstr("model 'other' now tokenized by: vLLM")));

  // A model that goes away is forgotten: it is announced again when it comes back.
  store.DeletePod("default", "a");
  store.DeletePod("default", "b");
  EXPECT_THAT(log.Take(), IsEmpty());
  store.AddPod(MakePod("a", "llama"));
  EXPECT_THAT(log.Take(), ElementsAre(HasSubstr("model 'llama' tokenized by")));
  store.RemoveListener(&announcer);
}

TEST(TokenizerLogTest, LocalModeAnnouncesEachModelOnce) {
  CapturedLog log;
  store::Store store;
  tokenizer::ByteTokenizer local;
  ModelTokenizers tokenizers(local);
  TokenizerLog announcer(tokenizers, store);
  store.AddListener(&announcer);
  store.AddPod(MakePod("a", "llama"));
  store.AddPod(Sglang("b", "llama"));
  store.AddModelAdapter(store::ModelAdapterObject{"default", "sql-lora", {"a"}});
  EXPECT_THAT(log.Take(), ElementsAre("model 'llama' tokenized by: local byte tokenizer",
                                      "model 'sql-lora' tokenized by: local byte tokenizer"));
  store.RemoveListener(&announcer);
}

}  // namespace
}  // namespace aibrix::gateway
