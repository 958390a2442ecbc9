#include "aibrix/redis/connection.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/util/redis_server.h"
#include "tests/util/refused_port.h"
#include "tests/util/temp_dir.h"

namespace aibrix::redis {
namespace {

using ::testing::HasSubstr;
using ::testing::UnorderedElementsAreArray;

ConnectionOptions OptionsFor(const std::string& address) {
  ConnectionOptions options;
  options.address = *ParseAddress(address);
  options.connect_timeout = std::chrono::milliseconds(2000);
  options.command_timeout = std::chrono::milliseconds(2000);
  return options;
}

std::unique_ptr<testing::RedisServer> StartRedis(testing::RedisServer::Options options = {}) {
  auto server = testing::RedisServer::Start(std::move(options));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

TEST(RedisAddressTest, ParsesTcpAndUnixForms) {
  auto a = ParseAddress("10.0.0.5:6380");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "10.0.0.5");
  EXPECT_EQ(a->port, 6380);
  EXPECT_FALSE(a->is_unix());
  EXPECT_EQ(ParseAddress("redis.svc")->port, 6379);
  EXPECT_EQ(ParseAddress("[::1]:7000")->host, "::1");
  EXPECT_EQ(ParseAddress("[::1]:7000")->ToString(), "[::1]:7000");
  auto u = ParseAddress("unix:/run/redis.sock");
  ASSERT_TRUE(u.ok());
  EXPECT_TRUE(u->is_unix());
  EXPECT_EQ(u->unix_path, "/run/redis.sock");
  EXPECT_EQ(u->ToString(), "unix:/run/redis.sock");
  EXPECT_FALSE(ParseAddress("").ok());
  EXPECT_FALSE(ParseAddress("unix:").ok());
  EXPECT_FALSE(ParseAddress("host:99999").ok());
  EXPECT_FALSE(ParseAddress("host:port").ok());
}

TEST(RedisConnectionTest, CommandsPipelinesAndErrorReplies) {
  auto redis = StartRedis();
  ASSERT_NE(redis, nullptr);
  Connection conn(OptionsFor(redis->address()));
  auto set = conn.Command({"SET", "k", std::string("a\0b", 3)});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->type, Reply::Type::kStatus);
  auto get = conn.Command({"GET", "k"});
  ASSERT_TRUE(get.ok());
  EXPECT_EQ(get->str, std::string("a\0b", 3));  // binary safe
  EXPECT_EQ(conn.Command({"GET", "absent"})->type, Reply::Type::kNil);

  // An error reply is a reply: the connection stays.
  auto bad = conn.Command({"NOSUCHCOMMAND"});
  ASSERT_TRUE(bad.ok());
  EXPECT_TRUE(bad->is_error());
  EXPECT_TRUE(conn.connected());

  const std::vector<Args> commands = {
      {"INCR", "n"}, {"INCR", "n"}, {"HSET", "k", "f", "v"}, {"LRANGE", "absent", "0", "-1"}};
  auto replies = conn.Pipeline(commands);
  ASSERT_TRUE(replies.ok()) << replies.status();
  ASSERT_EQ(replies->size(), 4u);
  EXPECT_EQ((*replies)[0].integer, 1);
  EXPECT_EQ((*replies)[1].integer, 2);
  EXPECT_TRUE((*replies)[2].is_error());  // WRONGTYPE: k holds a string
  EXPECT_TRUE((*replies)[3].is_array());
  EXPECT_EQ(conn.connects(), 1u);
}

TEST(RedisConnectionTest, ScanReturnsEveryMatchingKeyOnceAndHonoursTheLimit) {
  auto redis = StartRedis();
  ASSERT_NE(redis, nullptr);
  Connection conn(OptionsFor(redis->address()));
  std::vector<Args> sets;
  std::vector<std::string> expected;
  for (int i = 0; i < 1500; ++i) {
    expected.push_back("aibrix:profile_m_" + std::to_string(i));
    sets.push_back({"SET", expected.back(), "x"});
    sets.push_back({"SET", "other:" + std::to_string(i), "y"});
  }
  ASSERT_TRUE(conn.Pipeline(sets).ok());
  auto keys = conn.Scan("aibrix:profile_*", 10, 10000);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_THAT(*keys, UnorderedElementsAreArray(expected));
  auto limited = conn.Scan("aibrix:profile_*", 100, 1000);
  EXPECT_EQ(limited.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrorReason(limited.status()), "resource");
  auto none = conn.Scan("nothing:*", 100, 10);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(RedisConnectionTest, AuthWithThePassword) {
  auto redis = StartRedis({.password = "s3cret"});
  ASSERT_NE(redis, nullptr);
  {
    Connection anonymous(OptionsFor(redis->address()));
    auto reply = anonymous.Command({"GET", "k"});
    ASSERT_TRUE(reply.ok());
    EXPECT_TRUE(reply->is_error());  // NOAUTH
  }
  {
    ConnectionOptions options = OptionsFor(redis->address());
    options.password = "wrong";
    Connection conn(options);
    auto reply = conn.Command({"GET", "k"});
    EXPECT_EQ(reply.status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(ErrorReason(reply.status()), "auth");
    EXPECT_FALSE(conn.connected());
  }
  ConnectionOptions options = OptionsFor(redis->address());
  options.password = "s3cret";
  Connection conn(options);
  auto reply = conn.Command({"SET", "k", "v"});
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_FALSE(reply->is_error()) << reply->str;
}

TEST(RedisConnectionTest, UnreachableServerFailsFastAndBacksOff) {
  testing::RefusedPort refused;
  common::FakeClock clock;
  ConnectionOptions options = OptionsFor("127.0.0.1:" + std::to_string(refused.port()));
  options.clock = &clock;
  Connection conn(options);
  auto first = conn.Command({"PING"});
  EXPECT_EQ(first.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(first.status().message()), HasSubstr("connect"));
  // Within the backoff (100 ms ± 20%) no attempt is made.
  clock.Advance(std::chrono::milliseconds(50));
  auto waiting = conn.Command({"PING"});
  EXPECT_EQ(waiting.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(waiting.status().message()), HasSubstr("next attempt in"));
  // After it, a new attempt (refused again: the backoff doubles to 200 ms).
  clock.Advance(std::chrono::milliseconds(100));
  EXPECT_THAT(std::string(conn.Command({"PING"}).status().message()), HasSubstr("connect"));
  clock.Advance(std::chrono::milliseconds(150));
  EXPECT_THAT(std::string(conn.Command({"PING"}).status().message()), HasSubstr("next attempt in"));
  clock.Advance(std::chrono::milliseconds(100));
  EXPECT_THAT(std::string(conn.Command({"PING"}).status().message()), HasSubstr("connect"));
  EXPECT_EQ(conn.connects(), 0u);
  EXPECT_EQ(ErrorReason(first.status()), "unavailable");
}

TEST(RedisConnectionTest, ReconnectsAfterTheServerRestarts) {
  auto redis = StartRedis();
  ASSERT_NE(redis, nullptr);
  Connection conn(OptionsFor(redis->address()));
  ASSERT_TRUE(conn.Command({"SET", "k", "v"}).ok());
  // Restarted between two calls: the next call finds its connection broken, reconnects and
  // is answered.
  ASSERT_TRUE(redis->Restart().ok());
  auto after_restart = conn.Command({"GET", "k"});
  ASSERT_TRUE(after_restart.ok()) << after_restart.status();
  EXPECT_EQ(after_restart->type, Reply::Type::kNil);  // a fresh server: the data is gone
  EXPECT_EQ(conn.connects(), 2u);
  // Down during a call: it fails, and a later call reconnects once the server is back.
  redis->Kill();
  auto broken = conn.Command({"GET", "k"});
  ASSERT_FALSE(broken.ok());
  EXPECT_EQ(ErrorReason(broken.status()), "unavailable");  // the retry could not connect
  EXPECT_FALSE(conn.connected());
  ASSERT_TRUE(redis->Restart().ok());
  // The lost connection is retried at once; a failed connect would back off 100 ms.
  absl::StatusOr<Reply> reply;
  for (int i = 0; i < 100; ++i) {
    reply = conn.Command({"GET", "k"});
    if (reply.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(conn.connects(), 3u);
}

TEST(RedisConnectionTest, AHungServerTimesOut) {
  auto redis = StartRedis();
  ASSERT_NE(redis, nullptr);
  ConnectionOptions options = OptionsFor(redis->address());
  options.command_timeout = std::chrono::milliseconds(200);
  Connection conn(options);
  ASSERT_TRUE(conn.Command({"PING"}).ok());
  redis->Pause();
  auto reply = conn.Command({"PING"});
  redis->Resume();
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kDeadlineExceeded) << reply.status();
  EXPECT_EQ(ErrorReason(reply.status()), "timeout");
  EXPECT_FALSE(conn.connected());
  auto again = conn.Command({"PING"});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->str, "PONG");
}

// A unix-socket server that answers every connection with `answer` and closes.
class GarbageServer {
 public:
  GarbageServer(const std::string& path, std::string answer) : answer_(std::move(answer)) {
    fd_ = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(fd_, 8), 0);
    thread_ = std::thread([this] {
      while (true) {
        const int client = accept(fd_, nullptr, nullptr);
        if (client < 0) return;
        char buffer[256];
        (void)read(client, buffer, sizeof(buffer));
        (void)write(client, answer_.data(), answer_.size());
        close(client);
      }
    });
  }
  ~GarbageServer() {
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
    thread_.join();
  }

 private:
  const std::string answer_;
  int fd_ = -1;
  std::thread thread_;
};

TEST(RedisConnectionTest, GarbageFromTheServerIsAProtocolErrorNotACrash) {
  testing::TempDir dir("garbage");
  const std::string path = dir.File("fake.sock");
  GarbageServer server(path, "HTTP/1.1 400 Bad Request\r\n\r\n");
  Connection conn(OptionsFor("unix:" + path));
  auto reply = conn.Command({"PING"});
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kDataLoss) << reply.status();
  EXPECT_EQ(ErrorReason(reply.status()), "protocol");
  EXPECT_FALSE(conn.connected());
}

TEST(RedisConnectionTest, AScanReplyOfTheWrongShapeIsAProtocolError) {
  testing::TempDir dir("garbage");
  const std::string path = dir.File("fake.sock");
  // Valid RESP, but not what SCAN returns: ["0"] instead of [cursor, [keys]].
  GarbageServer server(path, "*1\r\n$1\r\n0\r\n");
  Connection conn(OptionsFor("unix:" + path));
  auto keys = conn.Scan("aibrix:*", 10, 100);
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kDataLoss) << keys.status();
}

}  // namespace
}  // namespace aibrix::redis
