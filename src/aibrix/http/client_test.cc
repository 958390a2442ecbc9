#include "aibrix/http/client.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <future>
#include <thread>

#include "gtest/gtest.h"
#include "httplib.h"

namespace aibrix::http {
namespace {

// Collects one response.
class Collector : public ResponseObserver {
 public:
  void OnHead(int status, const Headers& headers) override {
    status_ = status;
    content_type_ = std::string(headers.Get("Content-Type"));
  }
  void OnBody(std::string_view data) override {
    body_.append(data);
    call_->ReadMore();
  }
  void OnEnd(ClientError error, std::string_view detail) override {
    detail_ = std::string(detail);
    done_.set_value(error);
  }
  std::string detail_;

  std::shared_ptr<ClientCall> call_;
  int status_ = 0;
  std::string content_type_;
  std::string body_;
  std::promise<ClientError> done_;
};

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    upstream_.Post("/echo", [](const httplib::Request& req, httplib::Response& res) {
      res.set_content(req.body, "application/json");
    });
    upstream_.Get("/chunked", [](const httplib::Request&, httplib::Response& res) {
      res.set_chunked_content_provider("text/event-stream",
                                       [](size_t offset, httplib::DataSink& sink) {
                                         if (offset >= 3 * 6) {
                                           sink.done();
                                           return true;
                                         }
                                         sink.write("data: ", 6);
                                         return true;
                                       });
    });
    port_ = upstream_.bind_to_any_port("127.0.0.1");
    server_thread_ = std::thread([this] { upstream_.listen_after_bind(); });
    while (!upstream_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    io_thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    guard_.reset();
    io_thread_.join();
    upstream_.stop();
    server_thread_.join();
  }

  // A request to the fixture's upstream: POST `target` with `body`, or a GET without a body.
  ClientRequest Upstream(std::string target, std::string body = "", std::string method = "POST") {
    ClientRequest request;
    request.method = std::move(method);
    request.host = "127.0.0.1";
    request.port = static_cast<uint16_t>(port_);
    request.target = std::move(target);
    request.body = std::move(body);
    return request;
  }

  ClientError Run(Client& client, ClientRequest request, std::shared_ptr<Collector> collector) {
    auto done = collector->done_.get_future();
    boost::asio::post(io_, [&client, &request, collector, this] {
      collector->call_ = client.Start(io_, std::move(request), collector);
    });
    return done.get();
  }

  httplib::Server upstream_;
  int port_ = 0;
  std::thread server_thread_;
  boost::asio::io_context io_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guard_{
      boost::asio::make_work_guard(io_)};
  std::thread io_thread_;
};

TEST_F(ClientTest, PostsAndReadsALengthFramedBodyThenReusesTheConnection) {
  Client client(ClientOptions{});
  for (int i = 0; i < 3; ++i) {
    const ClientRequest request = Upstream("/echo", R"({"n":)" + std::to_string(i) + "}");
    auto collector = std::make_shared<Collector>();
    EXPECT_EQ(Run(client, request, collector), ClientError::kNone) << collector->detail_;
    EXPECT_EQ(collector->status_, 200);
    EXPECT_EQ(collector->body_, request.body);
  }
}

TEST_F(ClientTest, ReadsChunkedBodies) {
  Client client(ClientOptions{});
  const ClientRequest request = Upstream("/chunked", "", "GET");
  auto collector = std::make_shared<Collector>();
  EXPECT_EQ(Run(client, request, collector), ClientError::kNone);
  EXPECT_EQ(collector->body_, "data: data: data: ");
  EXPECT_EQ(collector->content_type_, "text/event-stream");
}

// Takes the body in place (BodyTarget): each OnBody views the bytes just appended to it.
class InPlaceCollector : public Collector {
 public:
  std::string* BodyTarget() override { return &target_; }
  void OnBody(std::string_view data) override {
    in_place_ = in_place_ && data.data() + data.size() == target_.data() + target_.size();
    Collector::OnBody(data);
  }
  std::string target_;
  bool in_place_ = true;
};

TEST_F(ClientTest, DecodesTheBodyIntoTheObserversString) {
  Client client(ClientOptions{});
  const ClientRequest request = Upstream("/chunked", "", "GET");
  auto collector = std::make_shared<InPlaceCollector>();
  EXPECT_EQ(Run(client, request, collector), ClientError::kNone) << collector->detail_;
  EXPECT_EQ(collector->target_, "data: data: data: ");
  EXPECT_EQ(collector->body_, collector->target_);  // the views, concatenated
  EXPECT_TRUE(collector->in_place_);
}

TEST_F(ClientTest, LargeBodiesOverAPooledConnectionAndItsReadBuffer) {
  ClientOptions options;
  options.read_buffer_bytes = 16 << 10;  // each body takes several reads
  Client client(options);
  for (int i = 0; i < 3; ++i) {
    const ClientRequest request =
        Upstream("/echo", std::string(100000 + i, static_cast<char>('a' + i)));
    auto collector = std::make_shared<InPlaceCollector>();
    EXPECT_EQ(Run(client, request, collector), ClientError::kNone) << collector->detail_;
    EXPECT_EQ(collector->target_, request.body);
    EXPECT_TRUE(collector->in_place_);
  }
}

TEST_F(ClientTest, RefusedConnectionNeverReachedTheServer) {
  Client client(ClientOptions{});
  ClientRequest request;
  request.host = "127.0.0.1";
  request.port = 1;  // nothing listens there
  auto collector = std::make_shared<Collector>();
  EXPECT_EQ(Run(client, request, collector), ClientError::kConnect);
  EXPECT_EQ(collector->status_, 0);
}

TEST_F(ClientTest, CancelledBeforeItStartedLeavesNothingPending) {
  Client client(ClientOptions{});
  const ClientRequest request = Upstream("/echo", "", "GET");
  boost::asio::io_context io;  // no work guard: run() returns once nothing is pending
  auto cancelled = std::make_shared<Collector>();
  auto ended = cancelled->done_.get_future();
  boost::asio::post(io, [&] {
    cancelled->call_ = client.Start(io, request, cancelled);
    cancelled->call_->Cancel();  // before the posted start runs
  });
  io.run_for(std::chrono::seconds(30));
  // No connection, no deadline timer left behind (they would keep the loop running).
  EXPECT_TRUE(io.stopped());
  EXPECT_EQ(ended.get(), ClientError::kCancelled);
}

TEST_F(ClientTest, SweepClosesConnectionsIdleTooLong) {
  ClientOptions options;
  options.max_idle = std::chrono::milliseconds(0);
  Client client(options);
  const ClientRequest request = Upstream("/echo", "{}");
  auto collector = std::make_shared<Collector>();
  ASSERT_EQ(Run(client, request, collector), ClientError::kNone) << collector->detail_;
  EXPECT_EQ(client.Sweep(), 1u);  // the pooled keep-alive connection
  EXPECT_EQ(client.Sweep(), 0u);
  auto again = std::make_shared<Collector>();
  EXPECT_EQ(Run(client, request, again), ClientError::kNone) << again->detail_;  // a new one
}

TEST_F(ClientTest, PooledConnectionsAreClosedWithTheirIoContext) {
  ClientOptions options;
  options.max_idle = std::chrono::milliseconds(0);
  Client client(options);
  const ClientRequest request = Upstream("/echo", "{}");
  {
    boost::asio::io_context io;  // no work guard: run() returns once the call has ended
    auto collector = std::make_shared<Collector>();
    auto done = collector->done_.get_future();
    boost::asio::post(io, [&] { collector->call_ = client.Start(io, request, collector); });
    io.run();
    ASSERT_EQ(done.get(), ClientError::kNone) << collector->detail_;
  }  // destroyed with the connection pooled: it went with it (ASan would see a use after free)
  EXPECT_EQ(client.Sweep(), 0u);
  auto again = std::make_shared<Collector>();
  EXPECT_EQ(Run(client, request, again), ClientError::kNone) << again->detail_;
  EXPECT_EQ(client.Sweep(), 1u);  // the fixture's io_context's connection
}

}  // namespace
}  // namespace aibrix::http
