#include "aibrix/kvevents/ingest.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <unordered_map>

#include "aibrix/common/logging.h"
#include "aibrix/kvevents/subscriber.h"
#include "fmt/format.h"
#include "zmq.h"
#include "zmq.hpp"

namespace aibrix::kvevents {
namespace {

using Clock = std::chrono::steady_clock;

// Descriptors one rank costs: the SUB and DEALER sockets' mailboxes and TCP connections, the
// monitor pair's two mailboxes.
constexpr int kFdsPerRank = 6;
// ZMQ sockets one rank costs: SUB, DEALER, and the monitor pair.
constexpr int kSocketsPerRank = 4;
// Descriptors left for everything else (HTTP, logs, files) when sizing the fleet.
constexpr int kReservedFds = 1024;
// The longest a socket thread waits without looking at its subscribers' deadlines.
constexpr auto kMaxTick = std::chrono::milliseconds(100);

// Raises the soft descriptor limit to the hard one; returns the limit in force.
rlim_t RaiseDescriptorLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 1024;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) return raised.rlim_cur;
  }
  return limit.rlim_cur;
}

}  // namespace

// One socket thread: an epoll set over the ZMQ_FDs of its subscribers' sockets, an eventfd
// for commands, and the subscribers' deadlines.
class IngestRuntime::SocketThread final : public Subscriber::Loop {
 public:
  explicit SocketThread(uint64_t seed) : rng_(seed) {}
  ~SocketThread() override { Stop(); }

  absl::Status Init() {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epoll_fd_ < 0 || wake_fd_ < 0) {
      return absl::ResourceExhaustedError(
          fmt::format("KV events: cannot make a socket thread: {}", std::strerror(errno)));
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;  // the wake-up descriptor
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
    thread_ = std::thread([this] { Run(); });
    return absl::OkStatus();
  }

  void Stop() {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stop_) return;
      stop_ = true;
    }
    Wake();
    if (thread_.joinable()) thread_.join();
    if (epoll_fd_ >= 0) close(epoll_fd_);
    if (wake_fd_ >= 0) close(wake_fd_);
  }

  // Runs `kind` for `subscriber` on the thread and waits for it. After Stop, an attach is
  // refused and a detach has already happened.
  void Attach(Subscriber* subscriber, std::chrono::milliseconds spread) {
    Command c{Command::kAttach, subscriber, spread};
    Submit(&c);
  }
  void Detach(Subscriber* subscriber) {
    Command c{Command::kDetach, subscriber, {}};
    Submit(&c);
  }

  // Subscriber::Loop (thread only).
  void Watch(void* socket, const void* watch) override {
    int fd = -1;
    size_t size = sizeof fd;
    if (zmq_getsockopt(socket, ZMQ_FD, &fd, &size) != 0) return;
    auto entry = std::make_unique<Entry>(Entry{current_, socket, watch, fd, false});
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLET;
    ev.data.ptr = entry.get();
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    recheck_.push_back(entry.get());  // messages may be there already: no edge will say so
    entries_[socket] = std::move(entry);
  }
  void Unwatch(void* socket) override {
    auto it = entries_.find(socket);
    if (it == entries_.end()) return;
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->second->fd, nullptr);
    std::erase(recheck_, it->second.get());
    it->second->dead = true;  // events already taken may still name it: freed after them
    graveyard_.push_back(std::move(it->second));
    entries_.erase(it);
  }
  void Recheck(void* socket) override {
    auto it = entries_.find(socket);
    if (it != entries_.end()) recheck_.push_back(it->second.get());
  }
  void WakeBy(Clock::time_point when) override { next_tick_ = std::min(next_tick_, when); }

 private:
  struct Entry {
    Subscriber* owner;
    void* socket;
    const void* watch;
    int fd;
    bool dead;
  };
  struct Command {
    enum Kind { kAttach, kDetach } kind;
    Subscriber* subscriber;
    std::chrono::milliseconds spread;
    bool done = false;
  };

  void Wake() {
    const uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof one);
  }

  void Submit(Command* c) {
    std::unique_lock<std::mutex> l(mu_);
    if (stop_) return;  // subscribers were detached when the thread stopped
    commands_.push_back(c);
    l.unlock();
    Wake();
    l.lock();
    done_cv_.wait(l, [&] { return c->done; });
  }

  void RunCommands() {
    std::deque<Command*> commands;
    {
      std::lock_guard<std::mutex> l(mu_);
      commands.swap(commands_);
    }
    for (Command* c : commands) {
      current_ = c->subscriber;
      if (c->kind == Command::kAttach) {
        std::uniform_int_distribution<int64_t> delay(0, std::max<int64_t>(0, c->spread.count()));
        subscribers_.push_back(c->subscriber);
        c->subscriber->OnAttached(this, Clock::now() + std::chrono::milliseconds(delay(rng_)));
      } else {
        c->subscriber->OnDetached();
        subscribers_.erase(std::remove(subscribers_.begin(), subscribers_.end(), c->subscriber),
                           subscribers_.end());
      }
      current_ = nullptr;
    }
    if (commands.empty()) return;
    {
      std::lock_guard<std::mutex> l(mu_);
      for (Command* c : commands) c->done = true;
    }
    done_cv_.notify_all();
  }

  void Dispatch(Entry* e) {
    if (e->dead) return;
    current_ = e->owner;
    e->owner->OnReadable(e->watch);
    current_ = nullptr;
  }

  void Run() {
    std::vector<epoll_event> events(256);
    std::vector<Entry*> rechecks;
    while (true) {
      RunCommands();
      {
        std::lock_guard<std::mutex> l(mu_);
        if (stop_) break;
      }
      const auto now = Clock::now();
      if (now >= next_tick_) {
        next_tick_ = now + kMaxTick;
        for (Subscriber* s : subscribers_) {
          current_ = s;
          next_tick_ = std::min(next_tick_, s->OnTick());
        }
        current_ = nullptr;
      }
      rechecks.swap(recheck_);
      for (Entry* e : rechecks) Dispatch(e);
      rechecks.clear();
      graveyard_.clear();
      const auto wait = std::chrono::ceil<std::chrono::milliseconds>(next_tick_ - Clock::now());
      const int timeout =
          recheck_.empty() ? static_cast<int>(std::clamp<int64_t>(wait.count(), 0, 100)) : 0;
      const int n = epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), timeout);
      for (int i = 0; i < n; ++i) {
        auto* e = static_cast<Entry*>(events[static_cast<size_t>(i)].data.ptr);
        if (e == nullptr) {
          uint64_t count;
          (void)!read(wake_fd_, &count, sizeof count);
          continue;
        }
        Dispatch(e);
      }
      graveyard_.clear();
    }
    // Stopping: close what is still attached.
    for (Subscriber* s : subscribers_) {
      current_ = s;
      s->OnDetached();
    }
    subscribers_.clear();
    graveyard_.clear();
    std::lock_guard<std::mutex> l(mu_);
    for (Command* c : commands_) c->done = true;
    commands_.clear();
    done_cv_.notify_all();
  }

  std::mutex mu_;  // guards commands_, stop_ and the commands' done flags
  std::condition_variable done_cv_;
  std::deque<Command*> commands_;
  bool stop_ = false;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::thread thread_;

  // Owned by the thread.
  std::mt19937_64 rng_;
  std::vector<Subscriber*> subscribers_;
  Subscriber* current_ = nullptr;  // whose callback runs (Watch files sockets under it)
  std::unordered_map<void*, std::unique_ptr<Entry>> entries_;
  std::vector<Entry*> recheck_;
  std::vector<std::unique_ptr<Entry>> graveyard_;
  Clock::time_point next_tick_ = Clock::now();
};

absl::StatusOr<std::shared_ptr<IngestRuntime>> IngestRuntime::Create(IngestOptions options) {
  std::shared_ptr<IngestRuntime> runtime(new IngestRuntime(std::move(options)));
  if (auto st = runtime->Init(); !st.ok()) return st;
  return runtime;
}

IngestRuntime::IngestRuntime(IngestOptions options) : options_(std::move(options)) {}

IngestRuntime::~IngestRuntime() { Stop(); }

absl::Status IngestRuntime::Init() {
  const rlim_t fds = RaiseDescriptorLimit();
  rank_capacity_ = static_cast<int>(
      std::max<int64_t>(0, (static_cast<int64_t>(fds) - kReservedFds) / kFdsPerRank));
  if (rank_capacity_ < options_.max_ranks) {
    common::Logger("kvevents")
        ->warn(
            "KV events: the descriptor limit ({}) allows {} subscribed engine ranks, fewer than "
            "the {} configured; raise `ulimit -n` to subscribe them all",
            fds, rank_capacity_, options_.max_ranks);
  }
  try {
    context_ = std::make_unique<zmq::context_t>(std::max(1, options_.zmq_io_threads));
    // Before the first socket: libzmq's default limit (1,023 sockets) would stop a fleet of
    // ~250 pods.
    context_->set(zmq::ctxopt::max_sockets,
                  std::max(1024, kSocketsPerRank * std::max(1, options_.max_ranks) + 64));
  } catch (const zmq::error_t& e) {
    return absl::FailedPreconditionError(fmt::format("KV events: ZMQ context: {}", e.what()));
  }
  std::random_device seed;
  for (int i = 0; i < std::max(1, options_.io_threads); ++i) {
    auto thread = std::make_unique<SocketThread>((uint64_t{seed()} << 32) ^ seed());
    if (auto st = thread->Init(); !st.ok()) return st;
    socket_threads_.push_back(std::move(thread));
  }
  for (int i = 0; i < std::max(1, options_.apply_threads); ++i) {
    appliers_.emplace_back([this] { ApplyLoop(); });
  }
  return absl::OkStatus();
}

void IngestRuntime::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  // Every socket thread closes its sockets at once (in parallel), then the appliers finish
  // the batch in hand.
  std::vector<std::thread> stoppers;
  for (auto& t : socket_threads_) stoppers.emplace_back([&t] { t->Stop(); });
  for (auto& s : stoppers) s.join();
  ready_cv_.notify_all();
  for (auto& a : appliers_) a.join();
  appliers_.clear();
}

void IngestRuntime::Attach(Subscriber* subscriber) {
  const size_t i = next_socket_thread_.fetch_add(1) % socket_threads_.size();
  subscriber->socket_thread_ = i;
  socket_threads_[i]->Attach(subscriber, options_.connect_spread);
}

void IngestRuntime::Detach(Subscriber* subscriber) {
  socket_threads_[subscriber->socket_thread_]->Detach(subscriber);
  // The socket thread pushes nothing more; now the appliers.
  {
    std::lock_guard<std::mutex> l(subscriber->queue_mu_);
    subscriber->detached_ = true;
    for (const auto& item : subscriber->queue_) ReleaseQueued(item.bytes);
    subscriber->queue_.clear();
    subscriber->queued_bytes_ = 0;
  }
  if (Unschedule(subscriber)) {
    std::lock_guard<std::mutex> l(subscriber->queue_mu_);
    subscriber->scheduled_ = false;
  }
  std::unique_lock<std::mutex> l(subscriber->queue_mu_);
  subscriber->idle_cv_.wait(l, [&] { return !subscriber->scheduled_; });
}

void IngestRuntime::Schedule(Subscriber* subscriber) {
  {
    std::lock_guard<std::mutex> l(mu_);
    ready_.push_back(subscriber);
  }
  ready_cv_.notify_one();
}

bool IngestRuntime::Unschedule(Subscriber* subscriber) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = std::find(ready_.begin(), ready_.end(), subscriber);
  if (it == ready_.end()) return false;
  ready_.erase(it);
  return true;
}

bool IngestRuntime::ReserveQueued(size_t bytes) {
  size_t current = queued_bytes_.load(std::memory_order_relaxed);
  do {
    if (current + bytes > options_.max_queued_bytes) return false;
  } while (
      !queued_bytes_.compare_exchange_weak(current, current + bytes, std::memory_order_relaxed));
  return true;
}

void IngestRuntime::ApplyLoop() {
  while (true) {
    Subscriber* subscriber;
    {
      std::unique_lock<std::mutex> l(mu_);
      ready_cv_.wait(l, [&] { return stopping_ || !ready_.empty(); });
      if (stopping_) return;
      subscriber = ready_.front();
      ready_.pop_front();
    }
    if (subscriber->ApplySome()) Schedule(subscriber);  // more queued: after the others
  }
}

}  // namespace aibrix::kvevents
