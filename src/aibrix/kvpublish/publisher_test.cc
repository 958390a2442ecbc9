#include "aibrix/kvpublish/publisher.h"

#include <gtest/gtest.h>

#include "fmt/format.h"
#include "tests/kvevents/vector_util.h"
#include "tests/kvevents/zmq_test_util.h"
#include "zmq.hpp"

namespace aibrix::kvpublish {
namespace {

using kvevents::testing::ReadFrames;
using kvevents::testing::RecvMultipart;
using kvevents::testing::SendMultipart;
using kvevents::testing::Seq8;
using kvevents::testing::VectorBatch;
using kvevents::testing::VectorsDir;
using kvevents::testing::WaitSubscribed;

std::string Frames(const std::string& name) { return VectorsDir() + "/zmq/" + name + ".frames"; }

class PublisherTest : public ::testing::Test {
 protected:
  std::unique_ptr<Publisher> StartPublisher(PublisherOptions o) {
    o.endpoint = "tcp://127.0.0.1:*";
    auto p = std::make_unique<Publisher>(std::move(o));
    EXPECT_TRUE(p->Start().ok());
    return p;
  }
  zmq::socket_t Sub(Publisher& p) {
    zmq::socket_t s(ctx_, zmq::socket_type::sub);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::subscribe, "");
    s.connect(p.endpoint());
    EXPECT_TRUE(WaitSubscribed(p, s));
    return s;
  }
  zmq::socket_t Dealer(Publisher& p) {
    zmq::socket_t s(ctx_, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.connect(p.replay_endpoint());
    return s;
  }
  zmq::context_t ctx_;
};

TEST_F(PublisherTest, BindsEphemeralPortAndReportsIt) {
  PublisherOptions o;
  o.replay_endpoint = "tcp://127.0.0.1:*";
  auto p = StartPublisher(o);
  EXPECT_GT(p->port(), 0);
  EXPECT_GT(p->replay_port(), 0);
  EXPECT_NE(p->port(), p->replay_port());
  EXPECT_EQ(p->endpoint(), fmt::format("tcp://127.0.0.1:{}", p->port()));
  // The same port cannot be bound twice.
  PublisherOptions o2;
  o2.endpoint = p->endpoint();
  o2.bind_mode = BindMode::kBind;
  Publisher busy(o2);
  EXPECT_EQ(busy.Start().code(), absl::StatusCode::kUnavailable);
  p->Stop();
  p->Stop();  // idempotent
  EXPECT_FALSE(p->Publish(kv::EventBatch{}).ok());
}

TEST_F(PublisherTest, LiveFramesMatchVectors) {
  PublisherOptions o;
  o.format = WireFormat::kMedium;
  auto p = StartPublisher(o);
  auto sub = Sub(*p);
  ASSERT_TRUE(p->Publish(VectorBatch("p3_medium_block_stored_medium")).ok());
  auto got = RecvMultipart(sub);
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, ReadFrames(Frames("pub_seq0_topic_empty")));
}

TEST_F(PublisherTest, TopicAndSequence258MatchVector) {
  PublisherOptions o;
  o.format = WireFormat::kMap;
  o.topic = "kv@10.0.0.5@meta-llama/Llama-3.1-8B-Instruct";
  auto p = StartPublisher(o);
  auto sub = Sub(*p);
  ASSERT_TRUE(p->DropNext(258).ok());
  const auto batch = VectorBatch("m1_map_block_stored");
  for (int i = 0; i < 259; ++i) ASSERT_TRUE(p->Publish(batch).ok());
  auto got = RecvMultipart(sub);
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, ReadFrames(Frames("pub_seq258_topic_kv")));
  EXPECT_FALSE(RecvMultipart(sub, std::chrono::milliseconds(50)));
  EXPECT_TRUE(p->Flush());
  EXPECT_EQ(p->dropped(), 258u);
  EXPECT_EQ(p->next_seq(), 259u);
}

void ExpectReplay(ReplyLayout layout, WireFormat format, const std::string& batch_vector,
                  const std::string& reply_vector, const std::string& end_vector,
                  const std::string& topic) {
  PublisherOptions o;
  o.endpoint = "tcp://127.0.0.1:*";
  o.replay_endpoint = "tcp://127.0.0.1:*";
  o.reply_layout = layout;
  o.format = format;
  o.topic = topic;
  Publisher p(o);
  ASSERT_TRUE(p.Start().ok());
  const auto batch = VectorBatch(batch_vector);
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(p.Publish(batch).ok());
  ASSERT_TRUE(p.Flush());

  zmq::context_t ctx;
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(p.replay_endpoint());
  SendMultipart(dealer, ReadFrames(Frames("replay_request_dealer_send")));  // from seq 5
  auto reply = RecvMultipart(dealer);
  ASSERT_TRUE(reply);
  EXPECT_EQ(*reply, ReadFrames(Frames(reply_vector)));
  auto end = RecvMultipart(dealer);
  ASSERT_TRUE(end);
  EXPECT_EQ(*end, ReadFrames(Frames(end_vector)));
  EXPECT_EQ(p.replay_requests(), 1u);
}

TEST(PublisherReplayTest, Pre45177LayoutMatchesVectors) {
  ExpectReplay(ReplyLayout::kPre45177, WireFormat::kMedium, "p3_medium_block_stored_medium",
               "replay_reply_pre45177", "replay_end_pre45177", "");
}

TEST(PublisherReplayTest, Post45177LayoutMatchesVectors) {
  ExpectReplay(ReplyLayout::kPost45177, WireFormat::kMap, "m1_map_block_stored",
               "replay_reply_post45177", "replay_end_post45177",
               "kv@10.0.0.5@meta-llama/Llama-3.1-8B-Instruct");
}

TEST_F(PublisherTest, ReplayBufferRingAndRestart) {
  PublisherOptions o;
  o.replay_endpoint = "tcp://127.0.0.1:*";
  o.buffer_steps = 3;
  o.reply_layout = ReplyLayout::kPre45177;
  auto p = StartPublisher(o);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(p->PublishPayload(fmt::format("p{}", i)).ok());
  ASSERT_TRUE(p->Flush());  // the replay buffer holds what was published before the request
  auto dealer = Dealer(*p);
  SendMultipart(dealer, {"", Seq8(0)});
  // Only seqs 2..4 are left: the reply starts later than asked.
  for (int seq = 2; seq < 5; ++seq) {
    auto r = RecvMultipart(dealer);
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, (std::vector<std::string>{"", Seq8(seq), fmt::format("p{}", seq)}));
  }
  auto end = RecvMultipart(dealer);
  ASSERT_TRUE(end);
  EXPECT_EQ((*end)[1], std::string(8, '\xff'));

  // Malformed requests get no reply at all.
  SendMultipart(dealer, {"", "1234567"});
  SendMultipart(dealer, {"", Seq8(0), "extra"});
  EXPECT_FALSE(RecvMultipart(dealer, std::chrono::milliseconds(100)));

  ASSERT_TRUE(p->Restart().ok());
  ASSERT_TRUE(p->PublishPayload("after").ok());
  ASSERT_TRUE(p->Flush());
  EXPECT_EQ(p->next_seq(), 1u);
  SendMultipart(dealer, {"", Seq8(0)});
  auto r = RecvMultipart(dealer);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, (std::vector<std::string>{"", Seq8(0), "after"}));
  ASSERT_TRUE(RecvMultipart(dealer));  // end marker
}

TEST_F(PublisherTest, PauseHoldsMessagesAndIgnoreReplayAnswersNothing) {
  PublisherOptions o;
  o.replay_endpoint = "tcp://127.0.0.1:*";
  auto p = StartPublisher(o);
  auto sub = Sub(*p);
  p->Pause();
  ASSERT_TRUE(p->PublishPayload("x").ok());
  EXPECT_FALSE(RecvMultipart(sub, std::chrono::milliseconds(100)));
  p->Resume();
  auto got = RecvMultipart(sub);
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, (std::vector<std::string>{"", Seq8(0), "x"}));

  p->SetIgnoreReplay(true);
  auto dealer = Dealer(*p);
  SendMultipart(dealer, {"", Seq8(0)});
  EXPECT_FALSE(RecvMultipart(dealer, std::chrono::milliseconds(150)));
}

TEST_F(PublisherTest, RawMultipartGoesOutUnchanged) {
  auto p = StartPublisher(PublisherOptions{});
  auto sub = Sub(*p);
  ASSERT_TRUE(p->SendRawMultipart({"", "1234567", "junk"}).ok());
  auto got = RecvMultipart(sub);
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, (std::vector<std::string>{"", "1234567", "junk"}));
  EXPECT_EQ(p->next_seq(), 0u);
}

}  // namespace
}  // namespace aibrix::kvpublish
