// Which tokenizer routing uses, as a user of the binary sees it: with KV event sync the
// engines' vLLM /tokenize by default (the only way their events can match), the local one
// only when asked for, a configured endpoint first; the choice per model in the log (at
// start-up and when a model appears later) and in GET /cache/models.
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <set>
#include <thread>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/util/poll.h"
#include "tests/util/refused_port.h"
#include "tests/util/subprocess.h"
#include "tests/util/temp_dir.h"

namespace aibrix {
namespace {

using testing::BinaryPath;
using testing::Eventually;
using ::testing::HasSubstr;
using testing::Subprocess;

// A vLLM /tokenize that answers `ids` token ids for the models it serves and vLLM's 404 for
// the others.
class FakeTokenizer {
 public:
  FakeTokenizer(int ids, std::set<std::string> models) {
    server_.Post(
        "/tokenize", [this, ids, models](const httplib::Request& req, httplib::Response& res) {
          ++calls_;
          const std::string model = nlohmann::json::parse(req.body).value("model", "");
          if (!models.contains(model)) {
            res.status = 404;
            res.set_content(
                nlohmann::json{{"error",
                                {{"message", fmt::format("The model `{}` does not exist.", model)},
                                 {"type", "NotFoundError"},
                                 {"code", 404}}}}
                    .dump(),
                "application/json");
            return;
          }
          nlohmann::json tokens = nlohmann::json::array();
          for (int i = 0; i < ids; ++i) tokens.push_back(1000 + i);
          res.set_content(
              nlohmann::json{{"count", ids}, {"max_model_len", 4096}, {"tokens", tokens}}.dump(),
              "application/json");
        });
    // One request per connection: stopping never waits for a client's idle keep-alive one.
    server_.set_keep_alive_max_count(1);
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~FakeTokenizer() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  std::string url() const { return fmt::format("http://127.0.0.1:{}", port_); }
  int calls() const { return calls_.load(); }

 private:
  httplib::Server server_;
  std::atomic<int> calls_{0};
  int port_ = 0;
  std::thread thread_;
};

class TokenizerChoiceTest : public ::testing::Test {
 protected:
  void StartService(const std::string& yaml, std::vector<std::string> flags,
                    std::vector<std::string> env = {}) {
    config_ = dir_.Write("static.yaml", yaml);
    // prefix-cache: /cache/route then reports how many blocks the prompt's token ids make.
    std::vector<std::string> argv = {BinaryPath("aibrix-cache"), "--http-addr=127.0.0.1:0",
                                     "--static-config=" + config_, "--no-static-config-watch",
                                     "--routing-algorithm=prefix-cache"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    auto process = Subprocess::Start(argv, env);
    ASSERT_TRUE(process.ok());
    service_ = std::move(*process);
    auto port = service_->WaitForListeningPort(std::chrono::seconds(20));
    ASSERT_TRUE(port.ok()) << port.status();
    client_ = std::make_unique<httplib::Client>("127.0.0.1", *port);
    client_->set_read_timeout(std::chrono::seconds(30));
    ASSERT_TRUE(service_->WaitForLine("ready:", std::chrono::seconds(20)).ok());
  }

  int TotalBlocks(const std::string& model, const std::string& prompt) {
    auto res =
        client_->Post("/cache/route", nlohmann::json{{"model", model}, {"prompt", prompt}}.dump(),
                      "application/json");
    EXPECT_TRUE(res);
    if (!res) return -1;
    EXPECT_EQ(res->status, 200) << res->body;
    return nlohmann::json::parse(res->body).value("total_blocks", -1);
  }

  nlohmann::json Model(const std::string& name) {
    auto res = client_->Get("/cache/models");
    EXPECT_TRUE(res && res->status == 200);
    const nlohmann::json body = nlohmann::json::parse(res->body);
    for (const auto& model : body["models"]) {
      if (model["name"] == name) return model;
    }
    return nullptr;
  }

  testing::TempDir dir_{"tokenizer-choice"};
  std::string config_;
  std::unique_ptr<Subprocess> service_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(TokenizerChoiceTest, KvSyncDefaultsToTheEnginesTokenizer) {
  FakeTokenizer engine(48, {"llama"});  // 48 ids = 3 blocks of 16, whatever the prompt
  const testing::RefusedPort sglang;
  StartService(
      fmt::format("models:\n"
                  "  - name: llama\n    endpoints: [\"127.0.0.1:{}\"]\n"
                  "  - name: other\n    engine: sglang\n    endpoints: [\"127.0.0.1:{}\"]\n",
                  engine.port(), sglang.port()),
      {"--kv-event-sync"});
  EXPECT_EQ(TotalBlocks("llama", "hi"), 3);
  EXPECT_EQ(engine.calls(), 1);
  // No vLLM engine serves `other`: its prompts are tokenized locally (40 bytes + BOS: 2 blocks).
  EXPECT_EQ(TotalBlocks("other", std::string(40, 'a')), 2);

  const nlohmann::json llama = Model("llama");
  EXPECT_EQ(llama["tokenizer"], "remote");
  EXPECT_EQ(llama["tokenizer_endpoints"], nlohmann::json::array({engine.url()}));
  const nlohmann::json other = Model("other");
  EXPECT_EQ(other["tokenizer"], "local");
  EXPECT_THAT(other["tokenizer_source"].get<std::string>(), HasSubstr("engines: sglang"));
  EXPECT_TRUE(other["tokenizer_endpoints"].empty());

  const std::string output = service_->Output();
  EXPECT_THAT(output, HasSubstr("prompts are tokenized by vLLM /tokenize (the default with KV "
                                "event sync)"));
  EXPECT_THAT(output,
              HasSubstr("model 'llama' tokenized by: vLLM /tokenize of the model's engines"));
  EXPECT_THAT(output, HasSubstr("model 'other' tokenized by: local byte tokenizer: no vLLM"));

  // A model that appears later is announced too.
  const std::string tmp = dir_.Write(
      "static.yaml.new", fmt::format("models:\n"
                                     "  - name: llama\n    endpoints: [\"127.0.0.1:{}\"]\n"
                                     "  - name: mistral\n    endpoints: [\"10.0.0.9:8000\"]\n",
                                     engine.port()));
  ASSERT_EQ(std::rename(tmp.c_str(), config_.c_str()), 0);
  ASSERT_EQ(kill(service_->pid(), SIGHUP), 0);
  EXPECT_TRUE(
      service_
          ->WaitForLine("model 'mistral' tokenized by: vLLM /tokenize of the model's engines",
                        std::chrono::seconds(10))
          .ok());
}

TEST_F(TokenizerChoiceTest, ExplicitLocalWinsAndWarns) {
  FakeTokenizer engine(48, {"llama"});
  StartService(
      fmt::format("models:\n  - name: llama\n    endpoints: [\"127.0.0.1:{}\"]\n", engine.port()),
      {"--kv-event-sync", "--tokenizer", "local"});
  EXPECT_EQ(TotalBlocks("llama", std::string(40, 'a')), 2);  // the byte rules: 41 ids
  EXPECT_EQ(engine.calls(), 0);
  EXPECT_EQ(Model("llama")["tokenizer"], "local");
  EXPECT_THAT(service_->Output(), HasSubstr("while KV event sync is on"));
}

// The AIBrix environment as an install carries it: the seed's spellings turn on KV sync and
// the remote tokenizer, and the endpoint AIBrix's docs name is asked first; a model it does
// not serve (404) goes on to its own engines.
TEST_F(TokenizerChoiceTest, ConfiguredEndpointFirstThenTheModelsEngines) {
  FakeTokenizer endpoint(32, {"llama"});  // serves llama only: 2 blocks
  FakeTokenizer mistral_engine(48, {"mistral"});
  const testing::RefusedPort llama_engine;  // never needed: the endpoint answers for llama
  StartService(fmt::format("models:\n"
                           "  - name: llama\n    endpoints: [\"127.0.0.1:{}\"]\n"
                           "  - name: mistral\n    endpoints: [\"127.0.0.1:{}\"]\n",
                           llama_engine.port(), mistral_engine.port()),
               {},
               {"AIBRIX_KV_EVENT_SYNC_ENABLED=true", "AIBRIX_USE_REMOTE_TOKENIZER=true",
                "AIBRIX_REMOTE_TOKENIZER_ENDPOINT=" + endpoint.url()});
  EXPECT_EQ(TotalBlocks("llama", "hi"), 2);
  EXPECT_EQ(endpoint.calls(), 1);
  EXPECT_EQ(TotalBlocks("mistral", "hi"), 3);  // 404 from the endpoint, then its engine
  EXPECT_EQ(endpoint.calls(), 2);
  EXPECT_EQ(mistral_engine.calls(), 1);
  EXPECT_EQ(Model("mistral")["tokenizer_endpoints"],
            nlohmann::json::array({endpoint.url(), mistral_engine.url()}));
  EXPECT_EQ(Model("llama")["tokenizer"], "remote");
}

}  // namespace
}  // namespace aibrix
