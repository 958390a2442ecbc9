// Integration tests of the engine-sim binary: started on port 0 (it prints the ports it got),
// driven over real HTTP and ZMQ on loopback. Every test is bounded in time (timeouts on every
// wait).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <msgpack.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "aibrix/kvevents/decoder.h"
#include "aibrix/tokenizer/byte_tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/util/poll.h"
#include "tests/util/subprocess.h"

namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

// ---- process helper ----

// engine-sim on port 0 (test utilities' Subprocess); the ports and endpoints it got come
// from the key=value words of the line it prints once bound.
class SimProcess {
 public:
  explicit SimProcess(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {aibrix::testing::BinaryPath("engine-sim"), "--port", "0",
                                     "--log-level", "warn"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto process = aibrix::testing::Subprocess::Start(args);
    if (!process.ok()) {
      ADD_FAILURE() << process.status();
      return;
    }
    process_ = std::move(*process);
    auto line = process_->WaitForLine("(engine-sim listening on .*)", 10s);
    if (!line.ok()) {
      ADD_FAILURE() << line.status();
      return;
    }
    info_ = aibrix::testing::LineFields(*line);
    if (info_.contains("port")) port_ = std::stoi(info_["port"]);
  }
  ~SimProcess() { Stop(); }

  // SIGTERM and wait; returns the exit status (-1 if it had to be killed).
  int Stop() {
    if (!process_) return exit_status_;
    auto code = process_->Stop(SIGTERM, 5s);
    exit_status_ = code.ok() ? *code : -1;
    process_.reset();  // kills it if it is still running
    return exit_status_;
  }

  bool ok() const { return port_ > 0; }
  int port() const { return port_; }
  std::string info(const std::string& key) const {
    auto it = info_.find(key);
    return it == info_.end() ? "" : it->second;
  }
  std::unique_ptr<httplib::Client> Client() const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", port_);
    c->set_read_timeout(10, 0);
    c->set_connection_timeout(5, 0);
    return c;
  }

 private:
  std::unique_ptr<aibrix::testing::Subprocess> process_;
  int port_ = 0;
  int exit_status_ = -1;
  std::map<std::string, std::string> info_;
};

json Post(httplib::Client& c, const std::string& path, const std::string& body, int* status) {
  auto r = c.Post(path.c_str(), body, "application/json");
  if (!r) {
    *status = -1;
    return nullptr;
  }
  *status = r->status;
  return json::parse(r->body, nullptr, false);
}

json PostOk(httplib::Client& c, const std::string& path, const json& body) {
  int status = 0;
  json out = Post(c, path, body.dump(), &status);
  EXPECT_EQ(status, 200) << path << " " << body.dump() << " -> " << out.dump();
  return out;
}

json GetJson(httplib::Client& c, const std::string& path) {
  auto r = c.Get(path.c_str());
  EXPECT_TRUE(r && r->status == 200) << path;
  return r ? json::parse(r->body, nullptr, false) : json();
}

json ReadVector(const std::string& rel) {
  std::ifstream f(std::string(AIBRIX_TESTDATA_DIR) + "/" + rel);
  std::stringstream s;
  s << f.rdbuf();
  return json::parse(s.str());
}

std::string PromptText(int salt, int len) {
  std::string s;
  for (int i = 0; i < len; ++i) s += static_cast<char>('a' + (salt * 7 + i * 3) % 26);
  return s;
}

// ---- ZMQ helpers ----

struct Msg {
  size_t frames = 0;
  std::string topic;
  uint64_t seq = 0;
  std::string payload;
};

uint64_t Be64(const std::string& s) {
  uint64_t v = 0;
  for (unsigned char c : s) v = (v << 8) | c;
  return v;
}

std::string Be64Bytes(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * (7 - i)));
  return s;
}

std::optional<std::vector<std::string>> RecvFrames(zmq::socket_t& s,
                                                   std::chrono::milliseconds timeout) {
  zmq::pollitem_t items[] = {{s.handle(), 0, ZMQ_POLLIN, 0}};
  zmq::poll(items, 1, timeout);
  if (!(items[0].revents & ZMQ_POLLIN)) return std::nullopt;
  std::vector<zmq::message_t> msgs;
  if (!zmq::recv_multipart(s, std::back_inserter(msgs))) return std::nullopt;
  std::vector<std::string> out;
  for (auto& m : msgs) out.push_back(m.to_string());
  return out;
}

std::optional<Msg> Recv(zmq::socket_t& sub, std::chrono::milliseconds timeout = 2000ms) {
  auto frames = RecvFrames(sub, timeout);
  if (!frames) return std::nullopt;
  Msg m;
  m.frames = frames->size();
  if (frames->size() == 3) {
    m.topic = (*frames)[0];
    EXPECT_EQ((*frames)[1].size(), 8u);
    m.seq = Be64((*frames)[1]);
    m.payload = (*frames)[2];
  }
  return m;
}

// A SUB connected to the engine's PUB, synchronised by resetting the (empty) prefix cache
// until an AllBlocksCleared batch arrives — no sleeps.
class EventTap {
 public:
  EventTap(SimProcess& sim, zmq::context_t& ctx)
      : sub_(ctx, zmq::socket_type::sub), client_(sim.Client()) {
    sub_.set(zmq::sockopt::subscribe, "");
    sub_.connect(sim.info("kv_events_endpoint"));
    for (int i = 0; i < 100 && !synced_; ++i) {
      auto r = client_->Post("/reset_prefix_cache", "", "application/json");
      EXPECT_TRUE(r && r->status == 200);
      while (auto m = Recv(sub_, 50ms)) {
        synced_ = true;
        last_seq_ = m->seq;
      }
    }
    EXPECT_TRUE(synced_) << "no event arrived on " << sim.info("kv_events_endpoint");
  }

  // Receives until the publisher's next_seq - 1 has arrived (per /sim/cache), applying
  // batches to `cached`. Returns the messages.
  std::vector<Msg> Drain() {
    std::vector<Msg> out;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      json cache = GetJson(*client_, "/sim/cache?tokens=0");
      const uint64_t next = cache["kv_events"]["next_seq"].get<uint64_t>();
      if (last_seq_ + 1 >= next) break;
      while (auto m = Recv(sub_, 100ms)) {
        last_seq_ = m->seq;
        out.push_back(*m);
      }
    }
    return out;
  }

  zmq::socket_t& sub() { return sub_; }
  uint64_t last_seq() const { return last_seq_; }

 private:
  zmq::socket_t sub_;
  std::unique_ptr<httplib::Client> client_;
  bool synced_ = false;
  uint64_t last_seq_ = 0;
};

// The cache contents a consumer reconstructs from events: hash -> (parent, tokens).
struct EventModel {
  std::map<uint64_t, std::pair<std::optional<uint64_t>, std::vector<uint32_t>>> blocks;
  int stored = 0, removed = 0, cleared = 0;

  void Apply(const aibrix::kv::EventBatch& b) {
    for (const auto& e : b.events) {
      if (auto* s = std::get_if<aibrix::kv::BlockStored>(&e)) {
        ++stored;
        std::optional<uint64_t> parent = s->parent_block_hash;
        for (size_t i = 0; i < s->block_hashes.size(); ++i) {
          std::vector<uint32_t> toks(s->token_ids.begin() + i * s->block_size,
                                     s->token_ids.begin() + (i + 1) * s->block_size);
          EXPECT_FALSE(blocks.contains(s->block_hashes[i])) << "stored twice";
          blocks[s->block_hashes[i]] = {parent, toks};
          parent = s->block_hashes[i];
        }
      } else if (auto* r = std::get_if<aibrix::kv::BlockRemoved>(&e)) {
        ++removed;
        for (auto h : r->block_hashes) EXPECT_EQ(blocks.erase(h), 1u) << "removed unknown";
      } else {
        ++cleared;
        blocks.clear();
      }
    }
  }
};

void ExpectModelMatchesCache(const EventModel& model, const json& cache) {
  std::map<uint64_t, std::pair<std::optional<uint64_t>, std::vector<uint32_t>>> truth;
  for (const json& b : cache["blocks"]) {
    std::optional<uint64_t> parent;
    if (!b["parent"].is_null()) parent = b["parent"].get<uint64_t>();
    truth[b["hash"].get<uint64_t>()] = {parent, b["tokens"].get<std::vector<uint32_t>>()};
  }
  EXPECT_EQ(model.blocks.size(), truth.size());
  EXPECT_TRUE(model.blocks == truth) << "events and /sim/cache disagree";
}

// ---- HTTP API ----

class EngineSimApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    sim_ = new SimProcess({"--model", "test-model", "--time-scale", "1000", "--max-model-len",
                           "256", "--num-gpu-blocks", "64", "--max-body-bytes", "65536"});
  }
  static void TearDownTestSuite() {
    delete sim_;
    sim_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(sim_->ok());
    client_ = sim_->Client();
  }
  static SimProcess* sim_;
  std::unique_ptr<httplib::Client> client_;
};
SimProcess* EngineSimApiTest::sim_ = nullptr;

TEST_F(EngineSimApiTest, HealthModelsVersion) {
  auto h = client_->Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  json models = GetJson(*client_, "/v1/models");
  EXPECT_EQ(models["object"], "list");
  ASSERT_EQ(models["data"].size(), 1u);
  EXPECT_EQ(models["data"][0]["id"], "test-model");
  EXPECT_EQ(models["data"][0]["object"], "model");
  EXPECT_EQ(models["data"][0]["max_model_len"], 256);
  EXPECT_TRUE(GetJson(*client_, "/version").contains("version"));
}

TEST_F(EngineSimApiTest, TokenizeHasVllmShapes) {
  json req = ReadVector("tokenize/completion_request.json");
  req["model"] = "test-model";
  json want = ReadVector("tokenize/completion_response.json");
  json got = PostOk(*client_, "/tokenize", req);
  for (auto& [k, v] : want.items()) EXPECT_TRUE(got.contains(k)) << k;
  EXPECT_EQ(got.size(), want.size());
  EXPECT_EQ(got["tokens"], json(aibrix::tokenizer::ByteTokenizer::Encode("Hello, world")));
  EXPECT_EQ(got["count"], 12);
  EXPECT_EQ(got["max_model_len"], 256);
  EXPECT_TRUE(got["token_strs"].is_null());

  json chat = ReadVector("tokenize/chat_request.json");
  chat.erase("model");
  got = PostOk(*client_, "/tokenize", chat);
  const std::string rendered = "<|system|>\nYou are terse.\n<|user|>\nHi\n<|assistant|>\n";
  EXPECT_EQ(got["tokens"], json(aibrix::tokenizer::ByteTokenizer::Encode(rendered)));
  ASSERT_EQ(got["token_strs"].size(), rendered.size());
  EXPECT_EQ(got["token_strs"][0], "<");

  req["model"] = "no-such-model";
  int status = 0;
  json err = Post(*client_, "/tokenize", req.dump(), &status);
  EXPECT_EQ(status, 404);
  EXPECT_EQ(err, ReadVector("tokenize/error_response_current.json"));
}

TEST_F(EngineSimApiTest, DetokenizeRoundTrip) {
  json got = PostOk(*client_, "/detokenize", {{"tokens", {72, 105}}});
  EXPECT_EQ(got, json({{"prompt", "Hi"}}));
  int status = 0;
  json err = Post(*client_, "/detokenize", R"({"tokens":[72,300]})", &status);
  EXPECT_EQ(status, 400);
  EXPECT_THAT(err["error"]["message"].get<std::string>(), HasSubstr("300"));
}

TEST_F(EngineSimApiTest, CompletionIsDeterministicAndHitsCacheTheSecondTime) {
  const json req = {{"model", "test-model"}, {"prompt", PromptText(1, 100)}, {"max_tokens", 9}};
  json a = PostOk(*client_, "/v1/completions", req);
  json b = PostOk(*client_, "/v1/completions", req);
  EXPECT_EQ(a["object"], "text_completion");
  EXPECT_EQ(a["model"], "test-model");
  ASSERT_EQ(a["choices"].size(), 1u);
  EXPECT_EQ(a["choices"][0]["text"].get<std::string>().size(), 9u);
  EXPECT_EQ(a["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(a["choices"][0]["text"], b["choices"][0]["text"]);
  EXPECT_EQ(a["usage"]["prompt_tokens"], 100);
  EXPECT_EQ(a["usage"]["completion_tokens"], 9);
  EXPECT_EQ(a["usage"]["total_tokens"], 109);
  EXPECT_EQ(b["usage"]["prompt_tokens_details"]["cached_tokens"], 96);
  EXPECT_NE(a["id"], b["id"]);

  // Token-id prompts and the chat form.
  json ids = PostOk(*client_, "/v1/completions", {{"prompt", {1, 2, 3, 70000}}, {"max_tokens", 2}});
  EXPECT_EQ(ids["usage"]["prompt_tokens"], 4);
  json chat = PostOk(*client_, "/v1/chat/completions",
                     {{"messages", {{{"role", "user"}, {"content", "hello"}}}}});
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(chat["choices"][0]["finish_reason"], "stop");  // default length, no max_tokens
  EXPECT_EQ(chat["usage"]["prompt_tokens"], 29);           // "<|user|>\nhello\n<|assistant|>\n"
  EXPECT_EQ(chat["usage"]["completion_tokens"], 16);
}

std::vector<json> SseEvents(const std::string& body, bool* done) {
  std::vector<json> out;
  *done = false;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("data: ", 0) != 0) continue;
    std::string data = line.substr(6);
    if (data == "[DONE]") {
      *done = true;
      continue;
    }
    out.push_back(json::parse(data));
  }
  return out;
}

TEST_F(EngineSimApiTest, ChatStreamsSseChunks) {
  json req = {{"messages", {{{"role", "user"}, {"content", "stream please"}}}},
              {"max_tokens", 5},
              {"stream", true},
              {"stream_options", {{"include_usage", true}}}};
  auto r = client_->Post("/v1/chat/completions", req.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->get_header_value("Content-Type"), HasSubstr("text/event-stream"));
  bool done = false;
  auto events = SseEvents(r->body, &done);
  EXPECT_TRUE(done);
  ASSERT_EQ(events.size(), 7u);  // role, 5 tokens, usage
  EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  for (int i = 1; i <= 5; ++i) {
    EXPECT_EQ(events[i]["object"], "chat.completion.chunk");
    text += events[i]["choices"][0]["delta"]["content"].get<std::string>();
    EXPECT_EQ(events[i]["choices"][0]["finish_reason"], i == 5 ? json("length") : json(nullptr));
  }
  EXPECT_EQ(text.size(), 5u);
  EXPECT_TRUE(events[6]["choices"].empty());
  EXPECT_EQ(events[6]["usage"]["completion_tokens"], 5);

  // Same request without streaming gives the same text.
  req.erase("stream");
  req.erase("stream_options");
  EXPECT_EQ(PostOk(*client_, "/v1/chat/completions", req)["choices"][0]["message"]["content"],
            text);
}

TEST_F(EngineSimApiTest, CompletionStreams) {
  json req = {{"prompt", "abc"}, {"max_tokens", 3}, {"stream", true}};
  auto r = client_->Post("/v1/completions", req.dump(), "application/json");
  ASSERT_TRUE(r);
  bool done = false;
  auto events = SseEvents(r->body, &done);
  EXPECT_TRUE(done);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0]["object"], "text_completion");
  EXPECT_EQ(events[2]["choices"][0]["finish_reason"], "length");
}

TEST_F(EngineSimApiTest, BadInputGetsOpenAiErrors) {
  const std::string long_prompt(300, 'x');
  struct Case {
    std::string path, body;
    int status;
  } cases[] = {
      {"/v1/completions", "{not json", 400},
      {"/v1/completions", "[1,2]", 400},
      {"/v1/completions", R"({"max_tokens":3})", 400},
      {"/v1/completions", R"({"prompt":5})", 400},
      {"/v1/completions", R"({"prompt":""})", 400},
      {"/v1/completions", R"({"prompt":[]})", 400},
      {"/v1/completions", R"({"prompt":[1,-2]})", 400},
      {"/v1/completions", R"({"prompt":[1,2.5]})", 400},
      {"/v1/completions", R"({"prompt":["a","b"]})", 400},
      {"/v1/completions", R"({"prompt":"hi","max_tokens":0})", 400},
      {"/v1/completions", R"({"prompt":"hi","max_tokens":"3"})", 400},
      {"/v1/completions", R"({"prompt":"hi","max_tokens":9223372036854775807})", 400},
      {"/v1/completions", R"({"prompt":"hi","max_tokens":18446744073709551615})", 400},
      {"/v1/completions", R"({"prompt":[4294967296]})", 400},
      {"/v1/completions", R"({"prompt":"hi","n":18446744073709551615})", 400},
      {"/v1/completions", R"({"prompt":"hi","n":2})", 400},
      {"/v1/completions", R"({"prompt":"hi","stream":"yes"})", 400},
      {"/v1/completions", json({{"prompt", long_prompt}}).dump(), 400},
      {"/v1/completions", json({{"prompt", std::string(250, 'y')}, {"max_tokens", 10}}).dump(),
       400},
      {"/v1/completions", R"({"prompt":"hi","model":"other"})", 404},
      {"/v1/completions", R"({"prompt":"hi","model":7})", 400},
      {"/v1/chat/completions", R"({"prompt":"hi"})", 400},
      {"/v1/chat/completions", R"({"messages":"hi"})", 400},
      {"/v1/chat/completions", R"({"messages":[{"content":"x"}]})", 400},
      {"/v1/chat/completions",
       R"({"messages":[{"role":"user","content":"x"}],"continue_final_message":true})", 400},
      {"/tokenize", R"({})", 400},
      {"/tokenize", R"({"prompt":["x"]})", 400},
      {"/detokenize", R"({"tokens":"x"})", 400},
      {"/sim/fault", R"({"action":"explode"})", 400},
      {"/sim/fault", R"({"action":"drop_batches","count":-1})", 400},
      {"/v1/nothing", "{}", 404},
      {"/v1/completions", json({{"prompt", std::string(70000, 'z')}}).dump(), 413},
  };
  for (const Case& c : cases) {
    int status = 0;
    json err = Post(*client_, c.path, c.body, &status);
    EXPECT_EQ(status, c.status) << c.path << " " << c.body.substr(0, 80);
    ASSERT_TRUE(err.is_object() && err.contains("error")) << c.body.substr(0, 80);
    EXPECT_EQ(err["error"]["code"], c.status);
    EXPECT_TRUE(err["error"]["message"].is_string());
    EXPECT_TRUE(err["error"]["type"].is_string());
  }
  int status = 0;
  json err = Post(*client_, "/v1/completions", json({{"prompt", long_prompt}}).dump(), &status);
  EXPECT_THAT(err["error"]["message"].get<std::string>(),
              HasSubstr("maximum context length is 256 tokens"));
  auto health = client_->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

TEST_F(EngineSimApiTest, HealthFault) {
  PostOk(*client_, "/sim/fault", {{"action", "set_health"}, {"healthy", false}});
  auto h = client_->Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 503);
  PostOk(*client_, "/sim/fault", {{"action", "set_health"}, {"healthy", true}});
  EXPECT_EQ(client_->Get("/health")->status, 200);
  // Publisher faults need a publisher.
  int status = 0;
  Post(*client_, "/sim/fault", R"({"action":"pause_publisher"})", &status);
  EXPECT_EQ(status, 409);
}

// ---- metrics ----

double MetricValue(const std::string& text, const std::string& series_prefix) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(series_prefix, 0) == 0) return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return -1;
}

TEST(EngineSimMetricsTest, ConsistentWithServedRequests) {
  SimProcess sim({"--model", "m", "--time-scale", "1000", "--data-parallel-rank", "0"});
  ASSERT_TRUE(sim.ok());
  auto c = sim.Client();
  int prompt = 0, cached = 0, completion = 0;
  for (int i = 0; i < 6; ++i) {
    json r = PostOk(*c, "/v1/completions",
                    {{"prompt", PromptText(i % 2, 50 + i)}, {"max_tokens", 4 + i}});
    prompt += r["usage"]["prompt_tokens"].get<int>();
    completion += r["usage"]["completion_tokens"].get<int>();
    cached += r["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>();
  }
  EXPECT_GT(cached, 0);
  auto r = c->Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_THAT(r->get_header_value("Content-Type"), HasSubstr("text/plain"));
  const std::string& t = r->body;
  const std::string l = "{engine=\"0\",model_name=\"m\"}";
  EXPECT_EQ(MetricValue(t, "vllm:prefix_cache_queries_total" + l), prompt);
  EXPECT_EQ(MetricValue(t, "vllm:prefix_cache_hits_total" + l), cached);
  EXPECT_EQ(MetricValue(t, "vllm:prompt_tokens_total" + l), prompt);
  EXPECT_EQ(MetricValue(t, "vllm:generation_tokens_total" + l), completion);
  EXPECT_EQ(MetricValue(t, "vllm:num_requests_running" + l), 0);
  EXPECT_EQ(MetricValue(t, "vllm:num_requests_waiting" + l), 0);
  EXPECT_EQ(MetricValue(t, "vllm:kv_cache_usage_perc" + l), 0);
  EXPECT_EQ(MetricValue(t, "vllm:gpu_cache_usage_perc" + l), 0);
  EXPECT_EQ(MetricValue(t, "vllm:time_to_first_token_seconds_count" + l), 6);
  EXPECT_EQ(MetricValue(t, "vllm:e2e_request_latency_seconds_count" + l), 6);
  EXPECT_EQ(MetricValue(t, "vllm:request_queue_time_seconds_count" + l), 6);
  EXPECT_EQ(MetricValue(t, "vllm:num_requests_success_total" + l), 6);
  EXPECT_EQ(MetricValue(t, "vllm:cpu_cache_usage_perc" + l), 0);
  EXPECT_EQ(MetricValue(t, "vllm:request_prefill_time_seconds_count" + l), 6);
  EXPECT_EQ(MetricValue(t, "vllm:request_decode_time_seconds_count" + l), 6);
  EXPECT_EQ(MetricValue(t, "vllm:request_prompt_tokens_sum" + l), prompt);
  EXPECT_EQ(MetricValue(t, "vllm:request_generation_tokens_sum" + l), completion);
  EXPECT_EQ(MetricValue(t,
                        "vllm:request_success_total{engine=\"0\",finished_reason=\"length\","
                        "model_name=\"m\"}"),
            6);
  EXPECT_EQ(sim.Stop(), 0);  // SIGTERM is a clean shutdown
}

// Polls /metrics until `pred(text)` holds or `timeout` passes.
bool WaitForMetrics(httplib::Client& c, const std::function<bool(const std::string&)>& pred,
                    std::chrono::milliseconds timeout = 5000ms) {
  return aibrix::testing::Eventually(
      [&] {
        auto r = c.Get("/metrics");
        return r && pred(r->body);
      },
      timeout);
}

TEST(EngineSimSchedulingTest, MaxNumSeqsBoundsTheRunningBatch) {
  // 10 ms real per decode step and 1000 tokens each: the requests stay in flight long
  // enough to observe (even under sanitizers); a restart fault then ends them all.
  SimProcess sim({"--model", "m", "--max-num-seqs", "2", "--decode-step-ms", "10",
                  "--decode-step-ms-per-seq", "0", "--max-model-len", "2048"});
  ASSERT_TRUE(sim.ok());
  std::vector<std::thread> clients;
  std::atomic<int> unavailable{0};
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&sim, &unavailable, i] {
      auto c = sim.Client();
      auto r = c->Post("/v1/completions",
                       json({{"prompt", PromptText(i, 20)}, {"max_tokens", 1000}}).dump(),
                       "application/json");
      if (r && r->status == 503) unavailable.fetch_add(1);
    });
  }
  auto c = sim.Client();
  const std::string l = "{engine=\"0\",model_name=\"m\"}";
  EXPECT_TRUE(WaitForMetrics(
      *c,
      [&](const std::string& t) {
        return MetricValue(t, "vllm:num_requests_running" + l) == 2 &&
               MetricValue(t, "vllm:num_requests_waiting" + l) == 2 &&
               MetricValue(t, "vllm:kv_cache_usage_perc" + l) > 0;
      },
      8000ms));
  PostOk(*c, "/sim/fault", {{"action", "restart"}});
  for (auto& t : clients) t.join();
  EXPECT_EQ(unavailable.load(), 4);  // in-flight requests fail with 503 on restart
  EXPECT_TRUE(WaitForMetrics(*c, [&](const std::string& t) {
    return MetricValue(t, "vllm:num_requests_running" + l) == 0 &&
           MetricValue(t, "vllm:num_requests_waiting" + l) == 0 &&
           MetricValue(t, "vllm:kv_cache_usage_perc" + l) == 0;
  }));
}

// Every series aibrix-cache's metric routers read (docs/routing.md) follows the simulated
// state: requests queue behind a one-request batch, the engine is busy, and the histograms
// record the waits.
TEST(EngineSimMetricsTest, RouterInputsFollowTheLoad) {
  SimProcess sim({"--model", "m", "--max-num-seqs", "1", "--decode-step-ms", "10",
                  "--decode-step-ms-per-seq", "0", "--max-model-len", "2048"});
  ASSERT_TRUE(sim.ok());
  auto c = sim.Client();
  const std::string l = "{engine=\"0\",model_name=\"m\"}";
  auto idle = c->Get("/metrics");
  ASSERT_TRUE(idle);
  EXPECT_EQ(MetricValue(idle->body, "engine_utilization" + l), 0);
  EXPECT_EQ(MetricValue(idle->body, "vllm:request_queue_time_seconds_sum" + l), 0);
  // Three requests of 50 tokens (~0.5 s each): one runs, two wait.
  std::vector<std::thread> clients;
  for (int i = 0; i < 3; ++i) {
    clients.emplace_back([&sim, i] {
      auto client = sim.Client();
      PostOk(*client, "/v1/completions", {{"prompt", PromptText(i, 20)}, {"max_tokens", 50}});
    });
  }
  EXPECT_TRUE(WaitForMetrics(
      *c,
      [&](const std::string& t) {
        return MetricValue(t, "vllm:num_requests_running" + l) == 1 &&
               MetricValue(t, "vllm:num_requests_waiting" + l) == 2 &&
               MetricValue(t, "vllm:kv_cache_usage_perc" + l) > 0 &&
               MetricValue(t, "engine_utilization" + l) > 0;
      },
      8000ms));
  // Busy for most of the last second once the queue has run for a while.
  EXPECT_TRUE(WaitForMetrics(
      *c, [&](const std::string& t) { return MetricValue(t, "engine_utilization" + l) > 0.5; },
      8000ms));
  for (auto& t : clients) t.join();
  auto done = c->Get("/metrics");
  ASSERT_TRUE(done);
  const std::string& t = done->body;
  EXPECT_EQ(MetricValue(t, "vllm:num_requests_success_total" + l), 3);
  EXPECT_EQ(MetricValue(t, "vllm:num_requests_running" + l), 0);
  EXPECT_EQ(MetricValue(t, "vllm:num_requests_waiting" + l), 0);
  // The third request waited at least the second's whole life (~0.49 s of decoding), and each
  // decoded 49 tokens after its first (lower bounds: simulated time cannot run short).
  EXPECT_GE(MetricValue(t, "vllm:request_queue_time_seconds_sum" + l), 0.49);
  EXPECT_GE(MetricValue(t, "vllm:request_decode_time_seconds_sum" + l), 3 * 0.49 - 0.01);
  EXPECT_EQ(MetricValue(t, "vllm:request_generation_tokens_sum" + l), 150);
  EXPECT_EQ(MetricValue(t, "vllm:generation_tokens_total" + l), 150);
  // A second after the last step the engine is idle again.
  EXPECT_TRUE(WaitForMetrics(
      *c, [&](const std::string& t) { return MetricValue(t, "engine_utilization" + l) == 0; }));
}

TEST(EngineSimSchedulingTest, ClientDisconnectAbortsAStream) {
  SimProcess sim({"--model", "m", "--decode-step-ms", "10", "--max-model-len", "2048"});
  ASSERT_TRUE(sim.ok());
  {
    httplib::Client c("127.0.0.1", sim.port());
    int chunks = 0;
    json req = {{"prompt", "abort me"}, {"max_tokens", 1000}, {"stream", true}};
    httplib::Request r;
    r.method = "POST";
    r.path = "/v1/completions";
    r.body = req.dump();
    r.set_header("Content-Type", "application/json");
    r.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
      return ++chunks < 3;  // hang up after a few chunks (10 s of output remain)
    };
    auto res = c.send(r);
    EXPECT_FALSE(res);  // cancelled by the receiver
  }
  auto c = sim.Client();
  const std::string l = "{engine=\"0\",model_name=\"m\"}";
  EXPECT_TRUE(WaitForMetrics(*c, [&](const std::string& t) {
    return MetricValue(t, "vllm:num_requests_running" + l) == 0 &&
           MetricValue(t,
                       "vllm:request_success_total{engine=\"0\",finished_reason=\"abort\","
                       "model_name=\"m\"}") == 1;
  }));
}

// ---- KV events ----

TEST(EngineSimEventsTest, EventStreamReproducesCacheContentsUnderEviction) {
  SimProcess sim({"--time-scale", "1000", "--num-gpu-blocks", "24", "--max-model-len", "256",
                  "--max-num-seqs", "3", "--kv-events-endpoint", "tcp://127.0.0.1:*", "--topic",
                  "kv@pod@m"});
  ASSERT_TRUE(sim.ok());
  zmq::context_t ctx;
  EventTap tap(sim, ctx);
  EventModel model;
  std::vector<std::thread> clients;
  for (int t = 0; t < 3; ++t) {
    clients.emplace_back([&sim, t] {
      auto c = sim.Client();
      for (int i = 0; i < 10; ++i) {
        PostOk(*c, "/v1/completions",
               {{"prompt", PromptText((t + i) % 4, 40 + 25 * (i % 5))}, {"max_tokens", 3 + i}});
      }
    });
  }
  for (auto& th : clients) th.join();
  uint64_t expect_seq = tap.last_seq() + 1;
  for (const Msg& m : tap.Drain()) {
    EXPECT_EQ(m.frames, 3u);
    EXPECT_EQ(m.topic, "kv@pod@m");
    EXPECT_EQ(m.seq, expect_seq++);  // one batch per step, no gaps
    auto batch = aibrix::kvevents::DecodeBatch(m.payload);
    ASSERT_TRUE(batch.ok()) << batch.status().ToString();
    EXPECT_FALSE(batch->events.empty());
    model.Apply(*batch);
  }
  EXPECT_GT(model.removed, 0);
  auto c = sim.Client();
  json cache = GetJson(*c, "/sim/cache");
  EXPECT_EQ(cache["block_size"], 16);
  EXPECT_EQ(cache["num_gpu_blocks"], 24);
  EXPECT_EQ(cache["num_free_blocks"], 24);
  ExpectModelMatchesCache(model, cache);
}

TEST(EngineSimEventsTest, FirstBlockCarriesPromptTokensAndNoParent) {
  SimProcess sim({"--time-scale", "1000", "--kv-events-endpoint", "tcp://127.0.0.1:*"});
  ASSERT_TRUE(sim.ok());
  zmq::context_t ctx;
  EventTap tap(sim, ctx);
  auto c = sim.Client();
  const std::string prompt = PromptText(3, 40);
  PostOk(*c, "/v1/completions", {{"prompt", prompt}, {"max_tokens", 1}});
  auto msgs = tap.Drain();
  ASSERT_EQ(msgs.size(), 1u);  // 2 full blocks, stored in the prefill step
  auto batch = aibrix::kvevents::DecodeBatch(msgs[0].payload);
  ASSERT_TRUE(batch.ok());
  ASSERT_EQ(batch->events.size(), 1u);
  const auto& s = std::get<aibrix::kv::BlockStored>(batch->events[0]);
  EXPECT_FALSE(s.parent_block_hash.has_value());
  EXPECT_EQ(s.block_hashes.size(), 2u);
  EXPECT_EQ(s.block_size, 16);
  EXPECT_EQ(s.medium, "GPU");
  auto want = aibrix::tokenizer::ByteTokenizer::Encode(prompt.substr(0, 32));
  EXPECT_EQ(s.token_ids, want);
  EXPECT_EQ(batch->data_parallel_rank, 0);
}

TEST(EngineSimEventsTest, LoraAdaptersHaveTheirOwnCacheSpace) {
  SimProcess sim({"--time-scale", "1000", "--kv-events-endpoint", "tcp://127.0.0.1:*", "--model",
                  "base", "--lora-modules", "sql-lora=/models/sql", "--lora-modules", "chat-lora"});
  ASSERT_TRUE(sim.ok());
  zmq::context_t ctx;
  EventTap tap(sim, ctx);
  auto c = sim.Client();
  json models = GetJson(*c, "/v1/models");
  ASSERT_EQ(models["data"].size(), 3u);
  EXPECT_EQ(models["data"][1]["id"], "sql-lora");
  EXPECT_EQ(models["data"][1]["parent"], "base");
  const std::string prompt = PromptText(6, 40);
  json a =
      PostOk(*c, "/v1/completions", {{"model", "sql-lora"}, {"prompt", prompt}, {"max_tokens", 1}});
  EXPECT_EQ(a["model"], "sql-lora");
  json b =
      PostOk(*c, "/v1/completions", {{"model", "base"}, {"prompt", prompt}, {"max_tokens", 1}});
  EXPECT_EQ(b["usage"]["prompt_tokens_details"]["cached_tokens"], 0);  // not shared
  json a2 =
      PostOk(*c, "/v1/completions", {{"model", "sql-lora"}, {"prompt", prompt}, {"max_tokens", 1}});
  EXPECT_EQ(a2["usage"]["prompt_tokens_details"]["cached_tokens"], 32);
  auto msgs = tap.Drain();
  ASSERT_EQ(msgs.size(), 2u);  // the third request stored nothing new
  auto first = aibrix::kvevents::DecodeBatch(msgs[0].payload);
  auto second = aibrix::kvevents::DecodeBatch(msgs[1].payload);
  ASSERT_TRUE(first.ok() && second.ok());
  const auto& s1 = std::get<aibrix::kv::BlockStored>(first->events[0]);
  const auto& s2 = std::get<aibrix::kv::BlockStored>(second->events[0]);
  EXPECT_EQ(s1.lora_name, "sql-lora");
  EXPECT_EQ(s1.lora_id, 1);
  EXPECT_FALSE(s2.lora_name.has_value());
  EXPECT_EQ(s1.token_ids, s2.token_ids);
  EXPECT_NE(s1.block_hashes, s2.block_hashes);
  int status = 0;
  Post(*c, "/v1/completions", R"({"model":"nope-lora","prompt":"x"})", &status);
  EXPECT_EQ(status, 404);
}

// Array lengths per era (vectors/README.md): batch, BlockStored, BlockRemoved, cleared.
struct Era {
  std::string name;
  size_t batch, stored, removed;  // 0 = map-encoded events
};

class EngineSimWireFormatTest : public ::testing::TestWithParam<Era> {};

msgpack::object_handle Unpack(const std::string& payload) {
  return msgpack::unpack(payload.data(), payload.size());
}

TEST_P(EngineSimWireFormatTest, EventsHaveTheEraLayout) {
  const Era era = GetParam();
  SimProcess sim({"--time-scale", "1000", "--num-gpu-blocks", "8", "--max-model-len", "128",
                  "--kv-events-endpoint", "tcp://127.0.0.1:*", "--event-format", era.name,
                  "--data-parallel-rank", "0"});
  ASSERT_TRUE(sim.ok());
  zmq::context_t ctx;
  EventTap tap(sim, ctx);
  auto c = sim.Client();
  // Two unrelated 120-token prompts: the second evicts the first's blocks.
  PostOk(*c, "/v1/completions", {{"prompt", PromptText(1, 120)}, {"max_tokens", 1}});
  PostOk(*c, "/v1/completions", {{"prompt", PromptText(2, 120)}, {"max_tokens", 1}});
  std::set<std::string> tags;
  for (const Msg& m : tap.Drain()) {
    auto oh = Unpack(m.payload);
    const msgpack::object& b = oh.get();
    ASSERT_EQ(b.type, msgpack::type::ARRAY);
    EXPECT_EQ(b.via.array.size, era.batch);
    EXPECT_EQ(b.via.array.ptr[0].type, msgpack::type::FLOAT64);
    const msgpack::object& events = b.via.array.ptr[1];
    for (uint32_t i = 0; i < events.via.array.size; ++i) {
      const msgpack::object& e = events.via.array.ptr[i];
      std::string tag;
      size_t len = 0;
      std::set<std::string> keys;
      if (era.stored == 0) {
        ASSERT_EQ(e.type, msgpack::type::MAP);
        for (uint32_t k = 0; k < e.via.map.size; ++k) {
          keys.insert(e.via.map.ptr[k].key.as<std::string>());
          if (e.via.map.ptr[k].key.as<std::string>() == "type") {
            tag = e.via.map.ptr[k].val.as<std::string>();
          }
        }
      } else {
        ASSERT_EQ(e.type, msgpack::type::ARRAY);
        tag = e.via.array.ptr[0].as<std::string>();
        len = e.via.array.size;
      }
      tags.insert(tag);
      if (tag == "BlockStored") {
        if (era.stored == 0) {
          EXPECT_EQ(keys,
                    (std::set<std::string>{"type", "block_hashes", "parent_block_hash", "token_ids",
                                           "block_size", "lora_id", "medium", "lora_name"}));
        } else {
          EXPECT_EQ(len, era.stored);
        }
      } else if (tag == "BlockRemoved") {
        if (era.stored == 0) {
          EXPECT_EQ(keys, (std::set<std::string>{"type", "block_hashes", "medium"}));
        } else {
          EXPECT_EQ(len, era.removed);
        }
      } else {
        EXPECT_EQ(tag, "AllBlocksCleared");
        EXPECT_EQ(era.stored == 0 ? keys.size() : len, 1u);
      }
    }
    EXPECT_TRUE(aibrix::kvevents::DecodeBatch(m.payload).ok());
  }
  EXPECT_TRUE(tags.contains("BlockStored"));
  EXPECT_TRUE(tags.contains("BlockRemoved"));
}

INSTANTIATE_TEST_SUITE_P(AllEras, EngineSimWireFormatTest,
                         ::testing::Values(Era{"0.9.0", 2, 6, 2}, Era{"0.9.1", 3, 6, 2},
                                           Era{"medium", 3, 7, 3}, Era{"lora-name", 3, 8, 3},
                                           Era{"extra-keys", 3, 9, 3}, Era{"group-idx", 3, 10, 4},
                                           Era{"spec-kind", 3, 12, 4}, Era{"map", 3, 0, 0}),
                         [](const auto& info) {
                           std::string n = info.param.name;
                           for (char& ch : n) {
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return n;
                         });

TEST(EngineSimEventsTest, BytesHashesAreThirtyTwoBytes) {
  SimProcess sim({"--time-scale", "1000", "--kv-events-endpoint", "tcp://127.0.0.1:*",
                  "--event-format", "medium", "--block-hash", "bytes"});
  ASSERT_TRUE(sim.ok());
  zmq::context_t ctx;
  EventTap tap(sim, ctx);
  auto c = sim.Client();
  PostOk(*c, "/v1/completions", {{"prompt", PromptText(1, 20)}, {"max_tokens", 1}});
  auto msgs = tap.Drain();
  ASSERT_EQ(msgs.size(), 1u);
  auto oh = Unpack(msgs[0].payload);
  const msgpack::object& stored = oh.get().via.array.ptr[1].via.array.ptr[0];
  const msgpack::object& hash = stored.via.array.ptr[1].via.array.ptr[0];
  ASSERT_EQ(hash.type, msgpack::type::BIN);
  EXPECT_EQ(hash.via.bin.size, 32u);
  json cache = GetJson(*c, "/sim/cache");
  auto batch = aibrix::kvevents::DecodeBatch(msgs[0].payload);
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ(std::get<aibrix::kv::BlockStored>(batch->events[0]).block_hashes[0],
            cache["blocks"][0]["hash"].get<uint64_t>());
}

// Sends a replay request from `start` and returns the replies up to the end marker.
std::vector<std::vector<std::string>> Replay(zmq::context_t& ctx, const std::string& endpoint,
                                             uint64_t start) {
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(endpoint);
  // A DEALER sends ["", start_seq]; the ROUTER prepends the identity.
  EXPECT_TRUE(dealer.send(zmq::message_t(), zmq::send_flags::sndmore));
  EXPECT_TRUE(dealer.send(zmq::message_t(Be64Bytes(start)), zmq::send_flags::none));
  std::vector<std::vector<std::string>> out;
  while (auto frames = RecvFrames(dealer, 5000ms)) {
    out.push_back(*frames);
    if (frames->size() >= 3 && (*frames)[frames->size() - 2] == std::string(8, '\xff')) break;
  }
  return out;
}

TEST(EngineSimEventsTest, ReplayInBothLayouts) {
  for (const std::string layout : {"new", "old"}) {
    SimProcess sim({"--time-scale", "1000", "--kv-events-endpoint", "tcp://127.0.0.1:*",
                    "--kv-events-replay-endpoint", "tcp://127.0.0.1:*", "--topic", "t",
                    "--replay-reply-format", layout});
    ASSERT_TRUE(sim.ok());
    zmq::context_t ctx;
    EventTap tap(sim, ctx);
    auto c = sim.Client();
    PostOk(*c, "/v1/completions", {{"prompt", PromptText(4, 64)}, {"max_tokens", 20}});
    tap.Drain();
    const uint64_t last = tap.last_seq();
    auto replies = Replay(ctx, sim.info("replay_endpoint"), 0);
    ASSERT_EQ(replies.size(), last + 2) << layout;  // seq 0..last, then the end marker
    const size_t frames = layout == "new" ? 4 : 3;
    for (size_t i = 0; i < replies.size(); ++i) {
      ASSERT_EQ(replies[i].size(), frames) << layout;
      EXPECT_EQ(replies[i][0], "");
      if (layout == "new") {
        EXPECT_EQ(replies[i][1], i + 1 < replies.size() ? "t" : "");
      }
      const std::string& seq = replies[i][frames - 2];
      if (i + 1 < replies.size()) {
        EXPECT_EQ(Be64(seq), i);
        EXPECT_TRUE(aibrix::kvevents::DecodeBatch(replies[i][frames - 1]).ok());
      } else {
        EXPECT_EQ(seq, std::string(8, '\xff'));
        EXPECT_EQ(replies[i][frames - 1], "");
      }
    }
  }
}

class EngineSimFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sim_ = std::make_unique<SimProcess>(std::vector<std::string>{
        "--time-scale", "1000", "--kv-events-endpoint", "tcp://127.0.0.1:*",
        "--kv-events-replay-endpoint", "tcp://127.0.0.1:*"});
    ASSERT_TRUE(sim_->ok());
    client_ = sim_->Client();
    tap_ = std::make_unique<EventTap>(*sim_, ctx_);
  }
  void Complete(int salt) {
    PostOk(*client_, "/v1/completions", {{"prompt", PromptText(salt, 40)}, {"max_tokens", 1}});
  }
  void Fault(const json& body) { PostOk(*client_, "/sim/fault", body); }

  zmq::context_t ctx_;
  std::unique_ptr<SimProcess> sim_;
  std::unique_ptr<httplib::Client> client_;
  std::unique_ptr<EventTap> tap_;
};

TEST_F(EngineSimFaultTest, DropBatchesMakesAGapThatReplayFills) {
  const uint64_t before = tap_->last_seq();
  Fault({{"action", "drop_batches"}, {"count", 1}});
  Complete(1);  // its batch is dropped on PUB
  Complete(2);
  auto msgs = tap_->Drain();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].seq, before + 2);
  auto replies = Replay(ctx_, sim_->info("replay_endpoint"), before + 1);
  ASSERT_EQ(replies.size(), 3u);  // the dropped one, the received one, the end marker
  EXPECT_EQ(Be64(replies[0][2]), before + 1);
  EXPECT_TRUE(aibrix::kvevents::DecodeBatch(replies[0][3]).ok());
}

TEST_F(EngineSimFaultTest, CorruptNextPayload) {
  Fault({{"action", "corrupt_next_payload"}});
  Complete(1);
  Complete(2);
  auto msgs = tap_->Drain();
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_FALSE(aibrix::kvevents::DecodeBatch(msgs[0].payload).ok());
  EXPECT_TRUE(aibrix::kvevents::DecodeBatch(msgs[1].payload).ok());
  EXPECT_EQ(msgs[1].seq, msgs[0].seq + 1);
}

TEST_F(EngineSimFaultTest, PauseHoldsBatchesUntilResume) {
  Fault({{"action", "pause_publisher"}});
  Complete(1);
  EXPECT_FALSE(Recv(tap_->sub(), 300ms).has_value());
  Fault({{"action", "resume_publisher"}});
  auto m = Recv(tap_->sub(), 5000ms);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->seq, tap_->last_seq() + 1);
}

TEST_F(EngineSimFaultTest, RestartResetsSequenceAndCacheWithoutAllBlocksCleared) {
  Complete(1);
  tap_->Drain();
  EXPECT_FALSE(GetJson(*client_, "/sim/cache")["blocks"].empty());
  Fault({{"action", "restart"}});
  json cache = GetJson(*client_, "/sim/cache");
  EXPECT_TRUE(cache["blocks"].empty());
  EXPECT_EQ(cache["kv_events"]["next_seq"], 0);
  Complete(2);
  auto m = Recv(tap_->sub(), 5000ms);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->seq, 0u);
  auto batch = aibrix::kvevents::DecodeBatch(m->payload);
  ASSERT_TRUE(batch.ok());
  for (const auto& e : batch->events) {
    EXPECT_FALSE(std::holds_alternative<aibrix::kv::AllBlocksCleared>(e));
  }
  // The metrics restarted too.
  auto r = client_->Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(
      MetricValue(r->body, "vllm:prompt_tokens_total{engine=\"0\",model_name=\"engine-sim\"}"), 40);
}

TEST_F(EngineSimFaultTest, ResetPrefixCacheClearsAndAnnounces) {
  Complete(1);
  tap_->Drain();
  auto r = client_->Post("/reset_prefix_cache", "", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  auto m = Recv(tap_->sub(), 5000ms);
  ASSERT_TRUE(m.has_value());
  auto batch = aibrix::kvevents::DecodeBatch(m->payload);
  ASSERT_TRUE(batch.ok());
  ASSERT_EQ(batch->events.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<aibrix::kv::AllBlocksCleared>(batch->events[0]));
  EXPECT_TRUE(GetJson(*client_, "/sim/cache")["blocks"].empty());
}

}  // namespace
