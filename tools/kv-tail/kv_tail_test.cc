#include "tools/kv-tail/kv_tail.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <sstream>
#include <thread>

#include "aibrix/kvpublish/encoder.h"
#include "aibrix/kvpublish/publisher.h"
#include "tests/kvevents/vector_util.h"

namespace aibrix::kvtail {
namespace {

using kvpublish::Publisher;
using kvpublish::PublisherOptions;

using kvevents::testing::ReadFile;
using kvevents::testing::ToHex;
using kvevents::testing::VectorsDir;

std::vector<nlohmann::json> Lines(const std::string& text) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

TEST(KvTailTest, DecodeHexPrintsOneLinePerPayloadAndGoesOnAfterBadOnes) {
  std::stringstream in;
  in << ReadFile(VectorsDir() + "/kv/p1_v0_9_0_block_stored.hex");
  in << "zz not hex\n\n";
  in << "c1\n";
  in << ReadFile(VectorsDir() + "/kv/m1_map_multi_event_batch.hex");
  std::ostringstream out;
  KvTailOptions o;
  o.decode_hex = true;
  EXPECT_EQ(RunKvTail(o, in, out), 2);
  const auto lines = Lines(out.str());
  ASSERT_EQ(lines.size(), 4u);
  // Negative builtin hashes of 0.9.0 print as unsigned 64-bit integers.
  EXPECT_EQ(lines[0]["events"][0]["type"], "BlockStored");
  EXPECT_EQ(lines[0]["events"][0]["block_hashes"][0].get<uint64_t>(),
            static_cast<uint64_t>(-8401137359040512227LL));
  EXPECT_TRUE(lines[0]["events"][0]["block_hashes"][0].is_number_unsigned());
  EXPECT_EQ(lines[0]["ts"], 1760000000.25);
  EXPECT_TRUE(lines[0]["data_parallel_rank"].is_null());
  EXPECT_TRUE(lines[1].contains("error"));
  EXPECT_TRUE(lines[2].contains("error"));
  EXPECT_EQ(lines[3]["data_parallel_rank"], 2);
  EXPECT_EQ(lines[3]["events"].size(), 3u);
  EXPECT_EQ(lines[3]["events"][2]["type"], "AllBlocksCleared");
  EXPECT_EQ(lines[3]["events"][0]["extra_keys"], nlohmann::json::parse("[null,null]"));
}

// The binary: flags parsed, a good and a bad payload decoded, exit code 2 for the bad one.
TEST(KvTailTest, BinaryDecodesHexFromStdin) {
  const std::string command =
      std::string("printf '%s\\nzz\\n' ") +
      ToHex(kvpublish::EncodeBatch(kv::EventBatch{}, kvpublish::WireFormat::kV0_9_1)) +
      " | " AIBRIX_BIN_DIR "/kv-tail --decode-hex";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
  const int status = pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
  std::istringstream lines(output);
  std::string first, second;
  std::getline(lines, first);
  std::getline(lines, second);
  EXPECT_TRUE(nlohmann::json::parse(first).contains("events")) << output;
  EXPECT_TRUE(nlohmann::json::parse(second).contains("error")) << output;
}

TEST(KvTailTest, TailsLiveAndReplayedBatches) {
  PublisherOptions po;
  po.endpoint = "tcp://127.0.0.1:*";
  po.replay_endpoint = "tcp://127.0.0.1:*";
  po.topic = "kv";
  Publisher pub(po);
  ASSERT_TRUE(pub.Start().ok());
  kv::EventBatch b;
  b.events.push_back(kv::AllBlocksCleared{});
  ASSERT_TRUE(pub.Publish(b).ok());  // seq 0, only reachable by replay
  ASSERT_TRUE(pub.Flush());

  // Replay from seq 0 (published before the tool connected).
  {
    KvTailOptions o;
    o.endpoint = pub.endpoint();
    o.replay_endpoint = pub.replay_endpoint();
    o.from_seq = 0;
    o.count = 1;
    std::ostringstream out;
    std::istringstream in;
    EXPECT_EQ(RunKvTail(o, in, out), 0);
    const auto lines = Lines(out.str());
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(lines[0]["seq"], 0);
    EXPECT_EQ(lines[0]["replayed"], true);
    EXPECT_EQ(lines[0]["topic"], "kv");
  }
  // Live: publish until the tool has printed one message.
  KvTailOptions o;
  o.endpoint = pub.endpoint();
  o.count = 1;
  std::ostringstream out;
  std::istringstream in;
  std::atomic<int> rc{-1};
  std::thread tail([&] { rc = RunKvTail(o, in, out); });
  for (int i = 0; i < 1000 && rc.load() < 0; ++i) {
    ASSERT_TRUE(pub.Publish(b).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  tail.join();
  EXPECT_EQ(rc.load(), 0);
  const auto lines = Lines(out.str());
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_GE(lines[0]["seq"].get<uint64_t>(), 1u);
  EXPECT_EQ(lines[0]["events"][0]["type"], "AllBlocksCleared");
  EXPECT_FALSE(lines[0].contains("replayed"));
}

}  // namespace
}  // namespace aibrix::kvtail
