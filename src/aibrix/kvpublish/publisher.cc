#include "aibrix/kvpublish/publisher.h"

#include <optional>
#include <utility>

#include "aibrix/common/logging.h"
#include "fmt/format.h"
#include "zmq.hpp"

namespace aibrix::kvpublish {
namespace {

bool ShouldBind(const PublisherOptions& o) {
  switch (o.bind_mode) {
    case BindMode::kBind:
      return true;
    case BindMode::kConnect:
      return false;
    case BindMode::kAuto:
      break;
  }
  const std::string& e = o.endpoint;
  return e.find('*') != std::string::npos || e.find("::") != std::string::npos ||
         e.rfind("ipc://", 0) == 0 || e.rfind("inproc://", 0) == 0 ||
         (e.size() >= 2 && e.compare(e.size() - 2, 2, ":0") == 0);
}

const std::shared_ptr<spdlog::logger>& Log() {
  static const auto* log = new std::shared_ptr<spdlog::logger>(common::Logger("kv-publisher"));
  return *log;
}

}  // namespace

struct Publisher::Sockets {
  zmq::socket_t pub;
  std::optional<zmq::socket_t> router;
};

Publisher::Publisher(PublisherOptions options)
    : options_(std::move(options)), buffer_(options_.buffer_steps, 0) {}

Publisher::~Publisher() { Stop(); }

absl::Status Publisher::Start() {
  std::lock_guard<std::mutex> l(mu_);
  if (running_ || stopped_) {
    return absl::FailedPreconditionError("publisher already started or stopped");
  }
  auto context = std::make_unique<zmq::context_t>(1);
  auto sockets = std::make_unique<Sockets>();
  std::string where = options_.endpoint;
  try {
    sockets->pub = zmq::socket_t(*context, zmq::socket_type::pub);
    sockets->pub.set(zmq::sockopt::sndhwm, options_.hwm);
    sockets->pub.set(zmq::sockopt::rcvhwm, options_.hwm);
    sockets->pub.set(zmq::sockopt::linger, 0);
    sockets->pub.set(zmq::sockopt::ipv6, 1);
    if (ShouldBind(options_)) {
      sockets->pub.bind(options_.endpoint);
      bound_endpoint_ = UnmapEndpoint(sockets->pub.get(zmq::sockopt::last_endpoint));
    } else {
      sockets->pub.connect(options_.endpoint);
      bound_endpoint_ = options_.endpoint;
    }
    if (!options_.replay_endpoint.empty()) {
      where = options_.replay_endpoint;
      sockets->router.emplace(*context, zmq::socket_type::router);
      sockets->router->set(zmq::sockopt::linger, 0);
      sockets->router->set(zmq::sockopt::ipv6, 1);
      sockets->router->bind(options_.replay_endpoint);
      bound_replay_endpoint_ = UnmapEndpoint(sockets->router->get(zmq::sockopt::last_endpoint));
    }
  } catch (const zmq::error_t& e) {
    sockets.reset();
    context.reset();
    return absl::UnavailableError(fmt::format("KV event publisher on {}: {}", where, e.what()));
  }
  context_ = std::move(context);
  sockets_ = std::move(sockets);
  running_ = true;
  thread_ = std::thread([this] { Run(); });
  Log()->debug("publishing KV events on {} (replay {})", bound_endpoint_,
               bound_replay_endpoint_.empty() ? "off" : bound_replay_endpoint_);
  return absl::OkStatus();
}

void Publisher::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopped_) return;
    stopped_ = true;
    running_ = false;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  sockets_.reset();
  context_.reset();
}

std::string Publisher::endpoint() const {
  std::lock_guard<std::mutex> l(mu_);
  return bound_endpoint_;
}
std::string Publisher::replay_endpoint() const {
  std::lock_guard<std::mutex> l(mu_);
  return bound_replay_endpoint_;
}
int Publisher::port() const { return EndpointPort(endpoint()); }
int Publisher::replay_port() const { return EndpointPort(replay_endpoint()); }

absl::Status Publisher::Enqueue(Item item, std::chrono::milliseconds timeout, bool bounded) {
  std::unique_lock<std::mutex> l(mu_);
  if (!running_) return absl::FailedPreconditionError("publisher not running");
  if (bounded && queue_.size() >= options_.max_queue_size) {
    const bool ok = cv_.wait_for(
        l, timeout, [&] { return !running_ || queue_.size() < options_.max_queue_size; });
    if (!running_) return absl::FailedPreconditionError("publisher not running");
    if (!ok) {
      return absl::ResourceExhaustedError(
          fmt::format("publisher queue full ({} items)", options_.max_queue_size));
    }
  }
  queue_.push_back(std::move(item));
  ++enqueued_;
  l.unlock();
  cv_.notify_all();
  return absl::OkStatus();
}

absl::Status Publisher::Publish(const kv::EventBatch& batch, std::chrono::milliseconds timeout) {
  return PublishPayload(EncodeBatch(batch, options_.format, options_.hash_encoding), timeout);
}

absl::Status Publisher::PublishPayload(std::string payload, std::chrono::milliseconds timeout) {
  Item item;
  item.kind = Item::Kind::kPayload;
  item.payload = std::move(payload);
  return Enqueue(std::move(item), timeout, /*bounded=*/true);
}

absl::Status Publisher::SendRawMultipart(std::vector<std::string> frames) {
  Item item;
  item.kind = Item::Kind::kRaw;
  item.frames = std::move(frames);
  return Enqueue(std::move(item), std::chrono::milliseconds(0), /*bounded=*/false);
}

absl::Status Publisher::Restart() {
  Item item;
  item.kind = Item::Kind::kRestart;
  return Enqueue(std::move(item), std::chrono::milliseconds(0), /*bounded=*/false);
}

absl::Status Publisher::DropNext(int n) {
  Item item;
  item.kind = Item::Kind::kDropNext;
  item.drop = n;
  return Enqueue(std::move(item), std::chrono::milliseconds(0), /*bounded=*/false);
}

void Publisher::Pause() {
  std::lock_guard<std::mutex> l(mu_);
  paused_ = true;
}

void Publisher::Resume() {
  {
    std::lock_guard<std::mutex> l(mu_);
    paused_ = false;
  }
  cv_.notify_all();
}

void Publisher::SetIgnoreReplay(bool ignore) { ignore_replay_ = ignore; }

bool Publisher::Flush(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(mu_);
  if (!running_) return false;
  const uint64_t target = enqueued_;
  return cv_.wait_for(l, timeout, [&] { return !running_ || handled_ >= target; }) && running_;
}

void Publisher::Run() {
  std::vector<Item> work;
  const bool has_router = sockets_->router.has_value();
  const auto idle_wait = has_router ? std::chrono::milliseconds(1) : std::chrono::milliseconds(20);
  while (true) {
    bool paused;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_for(l, idle_wait, [&] { return stop_.load() || (!paused_ && !queue_.empty()); });
      if (stop_) break;
      paused = paused_;
      if (!paused) {
        const size_t n = std::min<size_t>(queue_.size(), 1024);
        for (size_t i = 0; i < n; ++i) {
          work.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
    }
    if (paused) continue;
    if (!work.empty()) cv_.notify_all();  // room in the queue
    try {
      if (has_router) ServeReplay();
      for (auto& item : work) Handle(item);
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) break;
      Log()->warn("KV event publisher {}: {}", bound_endpoint_, e.what());
    }
    if (!work.empty()) {
      {
        std::lock_guard<std::mutex> l(mu_);
        handled_ += work.size();
      }
      work.clear();
      cv_.notify_all();
    }
  }
}

void Publisher::Handle(Item& item) {
  switch (item.kind) {
    case Item::Kind::kRestart:
      next_seq_ = 0;
      buffer_.Clear();
      return;
    case Item::Kind::kDropNext:
      drop_next_ += item.drop;
      return;
    case Item::Kind::kRaw:
      for (size_t i = 0; i < item.frames.size(); ++i) {
        const bool more = i + 1 < item.frames.size();
        sockets_->pub.send(zmq::buffer(item.frames[i]),
                           more ? zmq::send_flags::sndmore : zmq::send_flags::none);
      }
      return;
    case Item::Kind::kPayload:
      break;
  }
  const uint64_t seq = next_seq_.fetch_add(1);
  auto payload = std::make_shared<const std::string>(std::move(item.payload));
  if (drop_next_ > 0) {
    --drop_next_;
    ++dropped_;
  } else {
    SendLive(sockets_->pub, options_.topic, seq, payload);
    ++sent_;
  }
  buffer_.Add(seq, std::move(payload));
}

void Publisher::ServeReplay() {
  const ReplayCounts counts =
      ServeReplayRequests(*sockets_->router, buffer_, options_.reply_layout, options_.topic,
                          ignore_replay_.load(), &replay_requests_);
  if (counts.malformed > 0) {
    Log()->warn("ignoring {} malformed replay request(s) on {}", counts.malformed,
                bound_replay_endpoint_);
  }
  replayed_batches_ += counts.replayed_batches;
}

}  // namespace aibrix::kvpublish
