#include "aibrix/extproc/server.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
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

// Process calls each queue keeps requested, so a burst of new streams is taken without a
// round trip through the queue's thread per stream.
constexpr int kAcceptsPerQueue = 32;

}  // namespace

class ProcessCall;

void TuneGrpcForProcess() {
  setenv("GRPC_POLL_STRATEGY", "poll", /*overwrite=*/0);
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

// The grpc.health.v1.Health methods (HealthCall).
enum class HealthMethod { kCheck, kWatch };

// What a completion queue hands back: one operation of one call.
class Event {
 public:
  virtual void Run(bool ok) = 0;

 protected:
  ~Event() = default;
};

// An Event that calls `Call::*on_done`.
template <typename Call>
class Tag final : public Event {
 public:
  Tag(Call* call, void (Call::*on_done)(bool ok)) : call_(call), on_done_(on_done) {}
  void Run(bool ok) override { (call_->*on_done_)(ok); }

 private:
  Call* call_;
  void (Call::*on_done_)(bool ok);
};

// One completion queue and the thread that drives it: accepts Process calls and runs every
// event of its calls (reads, processing, writes) inline.
struct CallQueue {
  std::unique_ptr<grpc::ServerCompletionQueue> cq;
  std::jthread thread;
  // Calls alive on the queue, requested or started: the queue is shut down only once none is
  // left (no operation may start on a queue after its shutdown).
  std::atomic<int> calls{0};
};

// Counts a call on its queue for as long as the call lives.
class QueueSlot {
 public:
  explicit QueueSlot(CallQueue& queue) : queue_(queue) { queue_.calls.fetch_add(1); }
  ~QueueSlot() { queue_.calls.fetch_sub(1); }
  QueueSlot(const QueueSlot&) = delete;
  QueueSlot& operator=(const QueueSlot&) = delete;

 private:
  CallQueue& queue_;
};

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

  // Requests one more Process (Health/Check, Health/Watch) call on `queue`.
  void Accept(CallQueue& queue);
  void AcceptHealth(CallQueue& queue, HealthMethod method);

  void Register(ProcessCall* call) {
    common::MutexLock lock(&mu_);
    live_.insert(call);
    metrics_.streams_open().Increment();
  }
  void Unregister(ProcessCall* call) {
    common::MutexLock lock(&mu_);
    live_.erase(call);
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
  ext_proc_v3::ExternalProcessor::AsyncService process_service_;
  grpc::health::v1::Health::AsyncService health_service_;

 private:
  static void Drive(CallQueue& queue, std::chrono::microseconds spin);

  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::jthread io_thread_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::unique_ptr<CallQueue>> queues_;

  // Lock order: mu_ before a processor's and a call's (SweepIdle); never the reverse.
  mutable common::Mutex mu_;
  absl::flat_hash_set<ProcessCall*> live_ ABSL_GUARDED_BY(mu_);
};

// One Process stream on the async API. Each kind of operation has its own tag and at most
// one of each is in flight: the call request, a read, a write (or the last write with the
// status), the finish and the done notification. Reads are taken one at a time into the
// processor; its answers queue in order behind the write in flight. Answers given while the
// queue's thread is inside the processor leave when it returns, so that a last answer and
// the status go out together (one write instead of two). The call deletes itself when its
// last operation is back.
class ProcessCall final : public StreamOutput {
 public:
  ProcessCall(Server::Impl& server, CallQueue& queue)
      : server_(server), queue_(queue), slot_(queue) {}

  // Asks the server for the next Process call on the queue.
  void Request() {
    context_.AsyncNotifyWhenDone(&done_tag_);  // delivered only once the call has started
    {
      common::MutexLock lock(&mu_);
      pending_ = 1;
    }
    server_.process_service_.RequestProcess(&context_, &stream_, queue_.cq.get(), queue_.cq.get(),
                                            &accepted_tag_);
  }

  // StreamOutput (called with the processor's lock held).
  void Send(ProcessingResponse response) override {
    common::MutexLock lock(&mu_);
    if (finish_wanted_) return;
    out_.push_back(std::move(response));
    if (!processing_) PumpLocked();
  }
  void Close(absl::Status status) override {
    common::MutexLock lock(&mu_);
    WantFinishLocked(ToGrpc(status));
    if (!processing_) PumpLocked();
  }

  // SweepIdle: closes the stream when no message came for `timeout`.
  bool ExpireIfIdle(int64_t now_ns, int64_t timeout_ns) {
    if (now_ns - last_message_ns_.load(std::memory_order_relaxed) < timeout_ns) return false;
    processor_->Abort(absl::DeadlineExceededError("no ext_proc message for the idle timeout"),
                      StreamEnd::kTimeout);
    return true;
  }

 private:
  void OnAccepted(bool ok) {
    if (!ok) {  // the server is shutting down; the call never started
      delete this;
      return;
    }
    server_.Accept(queue_);  // keep the queue's accepts topped up
    Touch();
    processor_ = std::make_shared<Processor>(server_.options_.processor, server_.deps(), this);
    server_.Register(this);
    // The done notification is now pending in place of the call request.
    common::MutexLock lock(&mu_);
    ++pending_;
    stream_.Read(&in_, &read_tag_);
  }

  void OnRead(bool ok) {
    if (ok) {
      Touch();
      {
        common::MutexLock lock(&mu_);
        processing_ = true;
      }
      processor_->OnMessage(in_);
      in_.Clear();
    }
    bool last = false;
    {
      common::MutexLock lock(&mu_);
      processing_ = false;
      // Not ok: Envoy half-closed, or the stream broke (the done notification tells which).
      // Either way the exchange is over; a half-close is answered with a status.
      if (!ok) WantFinishLocked(grpc::Status::OK);
      PumpLocked();
      if (!finish_wanted_) {
        stream_.Read(&in_, &read_tag_);
        return;  // the read stays pending
      }
      last = --pending_ == 0;
    }
    if (last) Destroy();
  }

  void OnWritten(bool ok) {
    bool last = false;
    {
      common::MutexLock lock(&mu_);
      out_.pop_front();
      if (!ok) out_.clear();  // the stream is broken; the done notification follows
      writing_ = false;
      PumpLocked();
      last = --pending_ == 0;
    }
    if (last) Destroy();
  }

  void OnFinished(bool) { Release(); }

  void OnDone(bool) {
    StreamEnd end = StreamEnd::kEof;
    if (server_.stopping_) {
      end = StreamEnd::kShutdown;
    } else if (context_.IsCancelled()) {
      end = StreamEnd::kCancelled;
    }
    processor_->OnEnd(end);  // the processor's own close, when it closed, counts first
    Release();
  }

  // The first status wins.
  void WantFinishLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_wanted_) return;
    finish_wanted_ = true;
    status_ = std::move(status);
  }

  // Starts the next write, or the finish once every answer is out: the last answer and the
  // status in one operation when both are ready.
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return;
    if (!out_.empty()) {
      writing_ = true;
      ++pending_;
      if (out_.size() == 1 && finish_wanted_) {
        finished_ = true;
        stream_.WriteAndFinish(out_.front(), grpc::WriteOptions(), status_, &finish_tag_);
      } else {
        stream_.Write(out_.front(), &write_tag_);
      }
    } else if (finish_wanted_) {
      finished_ = true;
      ++pending_;
      stream_.Finish(status_, &finish_tag_);
    }
  }

  // One operation is back; the last deletes the call.
  void Release() {
    bool last = false;
    {
      common::MutexLock lock(&mu_);
      last = --pending_ == 0;
    }
    if (last) Destroy();
  }
  void Destroy() {
    server_.Unregister(this);
    delete this;
  }

  void Touch() {
    last_message_ns_.store(server_.options_.clock->Now().time_since_epoch().count(),
                           std::memory_order_relaxed);
  }

  Tag<ProcessCall> accepted_tag_{this, &ProcessCall::OnAccepted};
  Tag<ProcessCall> read_tag_{this, &ProcessCall::OnRead};
  Tag<ProcessCall> write_tag_{this, &ProcessCall::OnWritten};
  Tag<ProcessCall> finish_tag_{this, &ProcessCall::OnFinished};
  Tag<ProcessCall> done_tag_{this, &ProcessCall::OnDone};
  Server::Impl& server_;
  CallQueue& queue_;
  QueueSlot slot_;
  grpc::ServerContext context_;
  grpc::ServerAsyncReaderWriter<ProcessingResponse, ProcessingRequest> stream_{&context_};
  std::shared_ptr<Processor> processor_;  // set when the call starts
  ProcessingRequest in_;                  // owned by the read in flight
  std::atomic<int64_t> last_message_ns_{0};

  common::Mutex mu_;
  int pending_ ABSL_GUARDED_BY(mu_) = 0;                     // operations in flight
  std::deque<ProcessingResponse> out_ ABSL_GUARDED_BY(mu_);  // front: the write in flight
  bool processing_ ABSL_GUARDED_BY(mu_) = false;  // the queue's thread is in the processor
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_wanted_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

// One grpc.health.v1.Health call, requested on a queue and answered inline: Check with the
// service's health, Watch with UNIMPLEMENTED (as gRPC answers a method a service leaves out;
// probes use Check). Deleted when the answer is out.
class HealthCall {
 public:
  using Method = HealthMethod;

  HealthCall(Server::Impl& server, CallQueue& queue, Method method)
      : server_(server), queue_(queue), slot_(queue), method_(method) {
    grpc::ServerCompletionQueue* cq = queue_.cq.get();
    if (method_ == Method::kCheck) {
      server_.health_service_.RequestCheck(&context_, &request_, &responder_, cq, cq,
                                           &accepted_tag_);
    } else {
      server_.health_service_.RequestWatch(&context_, &request_, &writer_, cq, cq, &accepted_tag_);
    }
  }

 private:
  void OnAccepted(bool ok) {
    if (!ok) {  // shutting down
      delete this;
      return;
    }
    server_.AcceptHealth(queue_, method_);
    if (method_ == Method::kWatch) {
      writer_.Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "use Check"), &finish_tag_);
      return;
    }
    const std::string& name = request_.service();
    if (name != "" && name != "gateway-plugin" && name != "liveness" && name != "readiness" &&
        name != ext_proc_v3::ExternalProcessor::service_full_name()) {
      responder_.Finish(response_,
                        grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service " + name),
                        &finish_tag_);
      return;
    }
    // Liveness is the process answering; the others follow readiness.
    const bool serving = name == "liveness" || server_.serving_.load();
    response_.set_status(serving ? grpc::health::v1::HealthCheckResponse::SERVING
                                 : grpc::health::v1::HealthCheckResponse::NOT_SERVING);
    responder_.Finish(response_, grpc::Status::OK, &finish_tag_);
  }
  void OnFinished(bool) { delete this; }

  Server::Impl& server_;
  CallQueue& queue_;
  QueueSlot slot_;
  const Method method_;
  grpc::ServerContext context_;
  grpc::health::v1::HealthCheckRequest request_;
  grpc::health::v1::HealthCheckResponse response_;
  grpc::ServerAsyncResponseWriter<grpc::health::v1::HealthCheckResponse> responder_{&context_};
  grpc::ServerAsyncWriter<grpc::health::v1::HealthCheckResponse> writer_{&context_};
  Tag<HealthCall> accepted_tag_{this, &HealthCall::OnAccepted};
  Tag<HealthCall> finish_tag_{this, &HealthCall::OnFinished};
};

// After the server's shutdown a request completes at once, not ok (the call is deleted).
void Server::Impl::Accept(CallQueue& queue) { (new ProcessCall(*this, queue))->Request(); }
void Server::Impl::AcceptHealth(CallQueue& queue, HealthMethod method) {
  new HealthCall(*this, queue, method);
}

void Server::Impl::Drive(CallQueue& queue, std::chrono::microseconds spin) {
  void* tag = nullptr;
  bool ok = false;
  if (spin.count() <= 0) {
    while (queue.cq->Next(&tag, &ok)) static_cast<Event*>(tag)->Run(ok);
    return;
  }
  // Polls without sleeping for `spin` after each event, then sleeps in Next: the next message
  // of a stream (Envoy answers each reply within tens of microseconds) is then found by a
  // running thread instead of waking a sleeping one. AsyncNext with a past deadline still
  // polls the queue's connections once.
  using SteadyClock = std::chrono::steady_clock;
  auto spin_until = SteadyClock::now() + spin;
  for (;;) {
    const auto status = queue.cq->AsyncNext(&tag, &ok, gpr_time_0(GPR_CLOCK_MONOTONIC));
    if (status == grpc::CompletionQueue::SHUTDOWN) return;
    if (status == grpc::CompletionQueue::TIMEOUT) {
      if (SteadyClock::now() < spin_until) continue;
      if (!queue.cq->Next(&tag, &ok)) return;
    }
    static_cast<Event*>(tag)->Run(ok);
    spin_until = SteadyClock::now() + spin;
  }
}

absl::Status Server::Impl::Start() {
  auto address = ListenAddress(options_.address);
  if (!address.ok()) return address.status();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(*address, grpc::InsecureServerCredentials(), &port_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options_.max_receive_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options_.max_concurrent_streams);
  // gRPC binds with SO_REUSEPORT by default: a second process on the same port would take
  // half of Envoy's streams instead of failing to start.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(&process_service_);
  builder.RegisterService(&health_service_);
  const int threads = options_.threads > 0
                          ? options_.threads
                          : static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));
  for (int i = 0; i < threads; ++i) {
    queues_.push_back(std::make_unique<CallQueue>());
    queues_.back()->cq = builder.AddCompletionQueue();
  }
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    server_.reset();
    queues_.clear();
    return absl::UnavailableError(fmt::format("ext_proc: cannot listen on {}", *address));
  }
  for (auto& queue : queues_) {
    for (int i = 0; i < kAcceptsPerQueue; ++i) Accept(*queue);
    AcceptHealth(*queue, HealthMethod::kCheck);
    AcceptHealth(*queue, HealthMethod::kWatch);
    queue->thread =
        std::jthread([queue = queue.get(), spin = options_.spin] { Drive(*queue, spin); });
  }
  io_thread_ = std::jthread([this] { io_.run(); });
  common::Logger("extproc")->info(
      "ext_proc listening on {} port={} (h2c, {} dialect, {} threads)", *address, port_,
      options_.processor.dialect == Dialect::kGie ? "gie" : "aibrix", threads);
  return absl::OkStatus();
}

void Server::Impl::Stop(std::chrono::milliseconds grace) {
  if (stopping_.exchange(true)) return;
  serving_ = false;
  if (server_) {
    // Open streams get `grace` to end, then are cancelled; the queues' threads carry both.
    server_->Shutdown(std::chrono::system_clock::now() + grace);
    // The cancelled calls still have events queued; their threads run them to the end.
    for (auto& queue : queues_) {
      while (queue->calls.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      queue->cq->Shutdown();
    }
    for (auto& queue : queues_) queue->thread.join();  // each drains its queue first
    server_->Wait();
    server_.reset();
    queues_.clear();
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
  for (ProcessCall* call : live_) {
    if (call->ExpireIfIdle(now, timeout)) ++closed;
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
