#include "aibrix/extproc/server.h"

#include <atomic>
#include <deque>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "aibrix/common/logging.h"
#include "aibrix/common/mutex.h"
#include "aibrix/common/net.h"
#include "aibrix/common/strings.h"
#include "boost/asio/executor_work_guard.hpp"
#include "boost/asio/io_context.hpp"
#include "envoy/service/ext_proc/v3/external_processor.grpc.pb.h"
#include "fmt/format.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace aibrix::extproc {

namespace {

using ext_proc_v3::ProcessingRequest;
using ext_proc_v3::ProcessingResponse;

grpc::Status ToGrpc(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// ":port" means every interface (gRPC treats [::] as the dual-stack wildcard).
absl::StatusOr<std::string> ListenAddress(const std::string& address) {
  const std::string text = address.starts_with(":") ? "[::]" + address : address;
  auto parsed = common::ParseHostPort(text, 0, common::PortZero::kAllowed);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("--extproc-addr {}: {}", address, common::AsStd(parsed.status().message())));
  }
  return common::FormatHostPort(parsed->host, static_cast<uint16_t>(parsed->port));
}

}  // namespace

class ProcessReactor;

class Server::Impl {
 public:
  Impl(ServerOptions options, gateway::Gateway& gateway, store::Store& store,
       prometheus::Registry& registry)
      : options_(std::move(options)),
        gateway_(gateway),
        store_(store),
        metrics_(registry),
        work_(io_.get_executor()) {}

  absl::Status Start();
  void Stop(std::chrono::milliseconds grace);
  size_t SweepIdle();

  void Register(ProcessReactor* reactor) {
    common::MutexLock lock(&mu_);
    live_.insert(reactor);
    metrics_.streams_open().Increment();
  }
  void Unregister(ProcessReactor* reactor) {
    common::MutexLock lock(&mu_);
    live_.erase(reactor);
    metrics_.streams_open().Decrement();
  }
  size_t open_streams() const {
    common::MutexLock lock(&mu_);
    return live_.size();
  }

  ProcessorDeps deps() { return ProcessorDeps{&gateway_, &store_, &io_, &metrics_}; }

  // Constant after construction.
  const ServerOptions options_;
  gateway::Gateway& gateway_;
  store::Store& store_;
  Metrics metrics_;
  std::atomic<bool> serving_{false};
  std::atomic<bool> stopping_{false};
  int port_ = 0;

 private:
  class ProcessService;
  class HealthService;

  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::jthread io_thread_;
  std::unique_ptr<ProcessService> process_service_;
  std::unique_ptr<HealthService> health_service_;
  std::unique_ptr<grpc::Server> server_;

  // Lock order: mu_ before a processor's and a reactor's (SweepIdle); never the reverse.
  mutable common::Mutex mu_;
  absl::flat_hash_set<ProcessReactor*> live_ ABSL_GUARDED_BY(mu_);
};

// One Process stream: reads Envoy's messages one at a time into the processor and writes
// its answers in order.
class ProcessReactor final : public grpc::ServerBidiReactor<ProcessingRequest, ProcessingResponse>,
                             public StreamOutput {
 public:
  explicit ProcessReactor(Server::Impl& server) : server_(server) {
    Touch();
    processor_ = std::make_shared<Processor>(server_.options_.processor, server_.deps(), this);
    server_.Register(this);
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // Envoy half-closed (or the stream broke: OnCancel says so too). Either way the
      // exchange is over; answer the half-close with a status.
      processor_->OnEnd(server_.stopping_ ? StreamEnd::kShutdown : StreamEnd::kEof);
      WantFinish(grpc::Status::OK);
      return;
    }
    Touch();
    processor_->OnMessage(in_);
    in_.Clear();
    bool more = false;
    {
      common::MutexLock lock(&mu_);
      more = !finish_wanted_;
    }
    if (more) StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    const ProcessingResponse* next = nullptr;
    bool finish = false;
    {
      common::MutexLock lock(&mu_);
      queue_.pop_front();
      if (!ok) queue_.clear();  // the stream is broken; OnCancel follows
      if (!queue_.empty()) {
        next = &queue_.front();
      } else {
        writing_ = false;
        finish = TakeFinishLocked();
      }
    }
    if (next != nullptr) {
      StartWrite(next);
    } else if (finish) {
      Finish(status_);
    }
  }

  void OnCancel() override {
    processor_->OnEnd(server_.stopping_ ? StreamEnd::kShutdown : StreamEnd::kCancelled);
    WantFinish(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    server_.Unregister(this);
    processor_->OnEnd(StreamEnd::kCancelled);  // no-op when already ended
    delete this;
  }

  // StreamOutput (called with the processor's lock held).
  void Send(ProcessingResponse response) override {
    const ProcessingResponse* start = nullptr;
    {
      common::MutexLock lock(&mu_);
      if (finish_wanted_) return;
      queue_.push_back(std::move(response));
      if (!writing_) {
        writing_ = true;
        start = &queue_.back();
      }
    }
    if (start != nullptr) StartWrite(start);
  }
  void Close(absl::Status status) override { WantFinish(ToGrpc(status)); }

  // SweepIdle: closes the stream when no message came for `timeout`.
  bool ExpireIfIdle(int64_t now_ns, int64_t timeout_ns) {
    if (now_ns - last_message_ns_.load(std::memory_order_relaxed) < timeout_ns) return false;
    processor_->Abort(absl::DeadlineExceededError("no ext_proc message for the idle timeout"),
                      StreamEnd::kTimeout);
    return true;
  }

 private:
  void Touch() {
    last_message_ns_.store(server_.options_.clock->Now().time_since_epoch().count(),
                           std::memory_order_relaxed);
  }

  // Finishes with `status` once no write is in flight (the first status wins).
  void WantFinish(grpc::Status status) {
    bool finish = false;
    {
      common::MutexLock lock(&mu_);
      if (!finish_wanted_) {
        finish_wanted_ = true;
        status_ = std::move(status);
      }
      if (!writing_) finish = TakeFinishLocked();
    }
    if (finish) Finish(status_);
  }
  bool TakeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!finish_wanted_ || finished_) return false;
    finished_ = true;
    return true;
  }

  Server::Impl& server_;
  std::shared_ptr<Processor> processor_;
  ProcessingRequest in_;  // owned by the read in flight
  std::atomic<int64_t> last_message_ns_{0};

  common::Mutex mu_;
  std::deque<ProcessingResponse> queue_ ABSL_GUARDED_BY(mu_);  // front: the write in flight
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_wanted_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_;  // written once under mu_ before finished_ is set, then read
};

class Server::Impl::ProcessService final : public ext_proc_v3::ExternalProcessor::CallbackService {
 public:
  explicit ProcessService(Server::Impl& server) : server_(server) {}
  grpc::ServerBidiReactor<ProcessingRequest, ProcessingResponse>* Process(
      grpc::CallbackServerContext*) override {
    return new ProcessReactor(server_);
  }

 private:
  Server::Impl& server_;
};

// grpc.health.v1.Health/Check (Watch is left unimplemented: probes use Check).
class Server::Impl::HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  explicit HealthService(Server::Impl& server) : server_(server) {}
  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::health::v1::HealthCheckResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    const std::string& name = request->service();
    if (name != "" && name != "gateway-plugin" && name != "liveness" && name != "readiness" &&
        name != ext_proc_v3::ExternalProcessor::service_full_name()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service " + name));
      return reactor;
    }
    // Liveness is the process answering; the others follow readiness.
    const bool serving = name == "liveness" || server_.serving_.load();
    response->set_status(serving ? grpc::health::v1::HealthCheckResponse::SERVING
                                 : grpc::health::v1::HealthCheckResponse::NOT_SERVING);
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  Server::Impl& server_;
};

absl::Status Server::Impl::Start() {
  auto address = ListenAddress(options_.address);
  if (!address.ok()) return address.status();
  process_service_ = std::make_unique<ProcessService>(*this);
  health_service_ = std::make_unique<HealthService>(*this);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(*address, grpc::InsecureServerCredentials(), &port_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options_.max_receive_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options_.max_concurrent_streams);
  // gRPC binds with SO_REUSEPORT by default: a second process on the same port would take
  // half of Envoy's streams instead of failing to start.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(process_service_.get());
  builder.RegisterService(health_service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    server_.reset();
    return absl::UnavailableError(fmt::format("ext_proc: cannot listen on {}", *address));
  }
  io_thread_ = std::jthread([this] { io_.run(); });
  common::Logger("extproc")->info("ext_proc listening on {} port={} (h2c, {} dialect)", *address,
                                  port_,
                                  options_.processor.dialect == Dialect::kGie ? "gie" : "aibrix");
  return absl::OkStatus();
}

void Server::Impl::Stop(std::chrono::milliseconds grace) {
  if (stopping_.exchange(true)) return;
  serving_ = false;
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + grace);
    server_->Wait();
    server_.reset();
  }
  work_.reset();
  io_.stop();
  if (io_thread_.joinable()) io_thread_.join();
}

size_t Server::Impl::SweepIdle() {
  const int64_t now = options_.clock->Now().time_since_epoch().count();
  const int64_t timeout = std::chrono::nanoseconds(options_.idle_timeout).count();
  size_t closed = 0;
  common::MutexLock lock(&mu_);
  for (ProcessReactor* reactor : live_) {
    if (reactor->ExpireIfIdle(now, timeout)) ++closed;
  }
  return closed;
}

Server::Server(ServerOptions options, gateway::Gateway& gateway, store::Store& store,
               prometheus::Registry& registry)
    : impl_(std::make_unique<Impl>(std::move(options), gateway, store, registry)) {}

Server::~Server() { Stop(); }

absl::Status Server::Start() { return impl_->Start(); }
void Server::Stop(std::chrono::milliseconds grace) { impl_->Stop(grace); }
void Server::SetServing(bool serving) { impl_->serving_ = serving; }
size_t Server::SweepIdle() { return impl_->SweepIdle(); }
int Server::port() const { return impl_->port_; }
size_t Server::open_streams() const { return impl_->open_streams(); }

}  // namespace aibrix::extproc
