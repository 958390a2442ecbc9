#include "aibrix/kvevents/subscriber.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <utility>

#include "aibrix/common/logging.h"
#include "aibrix/common/strings.h"
#include "aibrix/kvevents/decoder.h"
#include "aibrix/kvevents/ingest.h"
#include "fmt/format.h"
#include "zmq.h"
#include "zmq.hpp"

namespace aibrix::kvevents {
namespace {

constexpr uint64_t kEndSeq = ~uint64_t{0};
// Messages taken from one socket before the thread serves the others.
constexpr int kMessagesPerTurn = 256;
// Items an applier takes from one pod before it serves the others.
constexpr size_t kItemsPerTurn = 64;
// How long after a disconnect libzmq has to announce its reconnection (it does so at once).
constexpr auto kRetryAnnouncement = std::chrono::milliseconds(1000);
// A replay request that has delivered batches and then gets nothing for this long (or the
// replay timeout, if shorter) lost the rest to the engine's send limit: it is resumed.
constexpr auto kReplayStall = std::chrono::milliseconds(250);
// What a queued Clear is charged (its bytes are nothing; this keeps the arithmetic simple).
constexpr size_t kItemOverhead = sizeof(kv::EventBatch);

uint64_t ReadSeq(const zmq::message_t& m) {
  const auto* p = static_cast<const unsigned char*>(m.data());
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

std::string Seq8(uint64_t seq) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(seq >> (8 * (7 - i)));
  return s;
}

// Receives the rest of a multipart message without blocking.
bool RecvMultipart(zmq::socket_t& s, std::vector<zmq::message_t>* out) {
  out->clear();
  while (true) {
    zmq::message_t m;
    if (!s.recv(m, zmq::recv_flags::dontwait)) return !out->empty();
    const bool more = m.more();
    out->push_back(std::move(m));
    if (!more) return true;
  }
}

std::atomic<uint64_t> g_monitor_id{0};

}  // namespace

struct Subscriber::Stream {
  // How the socket thread names this stream's sockets (the addresses of these members).
  struct Watch {
    Stream* stream;
    int role;  // 0 SUB, 1 monitor, 2 DEALER
  };

  int rank = 0;
  RankEndpoint ep;
  std::optional<zmq::socket_t> sub;
  std::optional<zmq::socket_t> monitor;
  std::optional<zmq::socket_t> dealer;
  Watch watch_sub{this, 0};
  Watch watch_monitor{this, 1};
  Watch watch_dealer{this, 2};
  prometheus::Gauge* connection_status = nullptr;
  prometheus::Gauge* last_sequence_id = nullptr;

  enum class Conn { kWaiting, kConnecting, kConnected } conn = Conn::kWaiting;
  // kWaiting: sockets not created yet (or creation failed); retry at conn_deadline.
  // kConnecting: created, libzmq is (re)connecting. kConnected: the SUB has a peer.
  Clock::time_point conn_deadline;  // on options_.clock
  Clock::time_point first_connect;  // real time: the runtime spreads first connections
  // After a disconnect libzmq announces its reconnection (CONNECT_RETRIED) at once, except
  // after a protocol error (e.g. a message over ZMQ_MAXMSGSIZE), when it gives up on the
  // peer for good: without that announcement by this time, we reconnect ourselves.
  std::optional<Clock::time_point> retry_expected_by;
  std::chrono::milliseconds backoff{0};
  bool ever_connected = false;

  // Sequence state: the next sequence number this rank's applied run needs.
  std::optional<uint64_t> expected;
  int consecutive_replays = 0;

  // Replay in progress.
  bool replaying = false;
  bool replay_strict = false;
  uint64_t replay_from = 0;
  uint64_t replay_applied = 0;  // batches the current request has delivered
  int replay_requests = 0;      // requests of this repair (resumes included)
  Clock::time_point replay_started;
  Clock::time_point replay_deadline;
  std::deque<std::pair<uint64_t, std::string>> held;  // live batches received meanwhile
  size_t held_bytes = 0;
  // Payload hashes of the batches the last replay delivered: a later live message with such
  // a sequence number and the same payload is a duplicate, a different payload a restart.
  std::map<uint64_t, size_t> replayed;
};

Subscriber::Subscriber(SubscriberOptions options, kv::EventSink* sink,
                       std::shared_ptr<PodMetrics> metrics)
    : options_(std::move(options)),
      sink_(sink),
      metrics_(std::move(metrics)),
      rng_state_(reinterpret_cast<uintptr_t>(this) ^
                 static_cast<uint64_t>(Clock::now().time_since_epoch().count())) {
  if (!metrics_) {
    own_registry_ = std::make_unique<prometheus::Registry>();
    own_metrics_ = std::make_unique<KvMetrics>(*own_registry_);
    metrics_ = own_metrics_->ForPod(options_.source.pod_key);
  }
}

Subscriber::~Subscriber() { Stop(); }

absl::Status Subscriber::Start() {
  if (options_.ranks.empty()) {
    return absl::InvalidArgumentError(
        fmt::format("KV event subscriber for {}: no endpoint", options_.source.pod_key));
  }
  if (options_.clock == nullptr) {
    return absl::InvalidArgumentError(
        fmt::format("KV event subscriber for {}: no clock", options_.source.pod_key));
  }
  std::lock_guard<std::mutex> l(lifecycle_mu_);
  if (started_ || stopped_) {
    return absl::FailedPreconditionError("subscriber already started or stopped");
  }
  runtime_ = options_.runtime;
  if (!runtime_) {
    IngestOptions io;
    io.io_threads = 1;
    io.apply_threads = 1;
    io.max_ranks = static_cast<int>(options_.ranks.size());
    io.connect_spread = std::chrono::milliseconds(0);
    auto runtime = IngestRuntime::Create(io);
    if (!runtime.ok()) return absl::FailedPreconditionError(runtime.status().message());
    runtime_ = std::move(*runtime);
  }
  started_ = true;
  runtime_->Attach(this);
  return absl::OkStatus();
}

void Subscriber::Stop() {
  std::lock_guard<std::mutex> l(lifecycle_mu_);
  if (stopped_) return;
  stopped_ = true;
  if (!started_) return;
  runtime_->Detach(this);
  if (!options_.runtime) runtime_->Stop();  // the private runtime goes with us
}

Subscriber::Stats Subscriber::stats() const {
  PodMetrics& m = *metrics_;
  auto count = [](prometheus::Counter& c) { return static_cast<uint64_t>(c.Value()); };
  Stats s;
  s.batches_applied = count(m.batches_applied());
  s.clears = m.ResyncTotal();
  s.restarts = m.ResyncCount(ResyncReason::kRestart);
  s.gaps = count(m.gaps());
  s.replay_requests = count(m.replay_requests());
  s.replay_success = count(m.replay_success());
  s.replay_failures = count(m.replay_failures());
  s.duplicates_dropped = count(m.duplicates_dropped());
  s.frame_errors = m.ErrorCount(ErrorType::kFrame);
  s.decode_errors = m.ErrorCount(ErrorType::kDecode);
  s.too_large = m.ErrorCount(ErrorType::kTooLarge);
  s.skipped_events = count(m.received(EventKind::kUnknown));
  s.overflow_drops = m.ErrorCount(ErrorType::kOverflow);
  s.connections = count(m.connections());
  s.disconnections = count(m.disconnections());
  s.reconnect_attempts = count(m.reconnect_attempts());
  return s;
}

size_t Subscriber::queued_bytes() const {
  std::lock_guard<std::mutex> l(queue_mu_);
  return queued_bytes_;
}

std::chrono::milliseconds Subscriber::Jitter(std::chrono::milliseconds d) {
  // xorshift64*: cheap, owned by the socket thread.
  rng_state_ ^= rng_state_ >> 12;
  rng_state_ ^= rng_state_ << 25;
  rng_state_ ^= rng_state_ >> 27;
  const double u =
      static_cast<double>((rng_state_ * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
  const double f = 1.0 + options_.reconnect_jitter * (2 * u - 1);
  return std::chrono::milliseconds(static_cast<int64_t>(static_cast<double>(d.count()) * f));
}

// ---------------------------------------------------------------- queue and appliers

void Subscriber::Push(Item item) {
  const bool is_clear = std::holds_alternative<ClearItem>(item.what);
  std::lock_guard<std::mutex> l(queue_mu_);
  if (detached_) return;
  auto fits = [&](size_t bytes) {
    if (queued_bytes_ + bytes > options_.max_queued_bytes) return false;
    return runtime_->ReserveQueued(bytes);
  };
  auto drop = [&] {
    metrics_->errors(ErrorType::kOverflow).Increment();
    overflow_pending_ = true;
  };
  if (overflow_pending_) {
    // The clear that must come first makes every batch queued before it pointless: they are
    // dropped, and their bytes with them.
    for (const Item& queued : queue_) runtime_->ReleaseQueued(queued.bytes);
    queue_.clear();
    queued_bytes_ = 0;
    if (!is_clear && !fits(item.bytes)) {
      drop();  // still no room: the clear stays pending
      return;
    }
    const ResyncReason reason =
        is_clear ? std::get<ClearItem>(item.what).reason : ResyncReason::kOverflow;
    overflow_pending_ = false;
    queue_.push_back(Item{ClearItem{reason}, 0});
    if (!is_clear) {
      queued_bytes_ += item.bytes;
      queue_.push_back(std::move(item));
    }
  } else if (is_clear) {
    queue_.push_back(std::move(item));
  } else if (!fits(item.bytes)) {
    // Dropped, and the next item that fits is preceded by a clear: the sink never sees a
    // run with a hole in it.
    drop();
    return;
  } else {
    queued_bytes_ += item.bytes;
    queue_.push_back(std::move(item));
  }
  if (!scheduled_) {
    scheduled_ = true;
    runtime_->Schedule(this);
  }
}

bool Subscriber::ApplySome() {
  std::deque<Item> work;
  {
    std::lock_guard<std::mutex> l(queue_mu_);
    if (detached_ || queue_.empty()) {
      scheduled_ = false;
      idle_cv_.notify_all();
      return false;
    }
    applying_ = true;
    const size_t n = std::min(kItemsPerTurn, queue_.size());
    for (size_t i = 0; i < n; ++i) {
      queued_bytes_ -= queue_.front().bytes;
      runtime_->ReleaseQueued(queue_.front().bytes);
      work.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
  }
  for (Item& item : work) {
    if (auto* c = std::get_if<ClearItem>(&item.what)) {
      sink_->ClearPod(options_.source.pod_key);
      metrics_->resyncs(c->reason).Increment();
      continue;
    }
    const auto& batch = std::get<kv::EventBatch>(item.what);
    const auto t0 = options_.clock->Now();
    sink_->ApplyBatch(options_.source, batch);
    metrics_->processing_seconds().Observe(
        std::chrono::duration<double>(options_.clock->Now() - t0).count());
    size_t n[kEventKinds] = {0, 0, 0, 0};
    for (const auto& e : batch.events) ++n[e.index()];
    for (int k = 0; k < 3; ++k) {
      if (n[k]) metrics_->processed(static_cast<EventKind>(k)).Increment(static_cast<double>(n[k]));
    }
    metrics_->batches_applied().Increment();
  }
  std::lock_guard<std::mutex> l(queue_mu_);
  applying_ = false;
  if (detached_ || queue_.empty()) {
    scheduled_ = false;
    idle_cv_.notify_all();
    return false;
  }
  return true;  // the runtime puts the pod back on the ready list
}

// ---------------------------------------------------------------- socket thread

void Subscriber::OnAttached(Loop* loop, Clock::time_point connect_at) {
  loop_ = loop;
  for (size_t r = 0; r < options_.ranks.size(); ++r) {
    auto s = std::make_unique<Stream>();
    s->rank = static_cast<int>(r);
    s->ep = options_.ranks[r];
    s->conn_deadline = options_.clock->Now();
    s->first_connect = connect_at;
    s->connection_status = &metrics_->connection_status(s->rank);
    s->last_sequence_id = &metrics_->last_sequence_id(s->rank);
    s->connection_status->Set(0);
    streams_.push_back(std::move(s));
  }
  loop_->WakeBy(connect_at);
}

void Subscriber::OnDetached() {
  for (auto& s : streams_) {
    runtime_->AddHeld(-static_cast<int64_t>(s->held_bytes));
    Teardown(*s);
    CloseDealer(*s);
    s->connection_status->Set(0);
  }
  streams_.clear();
  loop_ = nullptr;
}

void Subscriber::WakeAt(Clock::time_point deadline) {
  loop_->WakeBy(Clock::now() + (deadline - options_.clock->Now()));
}

Subscriber::Clock::time_point Subscriber::OnTick() {
  const Clock::time_point now = options_.clock->Now();
  const Clock::time_point real_now = Clock::now();
  Clock::time_point next = Clock::time_point::max();
  Clock::time_point real_next = Clock::time_point::max();
  for (auto& sp : streams_) {
    Stream& s = *sp;
    if (real_now < s.first_connect) {
      real_next = std::min(real_next, s.first_connect);
      continue;
    }
    if (s.retry_expected_by && now >= *s.retry_expected_by) {
      s.retry_expected_by.reset();
      metrics_->errors(ErrorType::kDropped).Increment();
      static common::RateLimiter limiter;
      common::WarnLimited(limiter, "kvevents",
                          "pod {} rank {}: libzmq dropped the connection to {} for good (a "
                          "protocol error, e.g. a message over --kv-max-message-bytes); "
                          "reconnecting with backoff",
                          options_.source.pod_key, s.rank, s.ep.endpoint);
      Teardown(s);
      ScheduleReconnect(s, /*failed_attempt=*/true);
    }
    if (s.conn == Stream::Conn::kWaiting && now >= s.conn_deadline) Connect(s);
    if (s.replaying && now >= s.replay_deadline) {
      // A request that delivered batches and then went quiet (kReplayStall) lost its tail,
      // or its end marker, to the engine's send limit: ask again from where it stopped.
      if (s.replay_applied > 0) {
        ResumeReplay(s);
      } else {
        ReplayFailed(s, "timeout");
      }
    }
    if (s.conn == Stream::Conn::kWaiting) next = std::min(next, s.conn_deadline);
    if (s.replaying) next = std::min(next, s.replay_deadline);
    if (s.retry_expected_by) next = std::min(next, *s.retry_expected_by);
  }
  if (next == Clock::time_point::max()) return real_next;
  return std::min(real_next, real_now + (next - now));  // real time, for the thread's wait
}

void Subscriber::OnReadable(const void* watch) {
  const auto* w = static_cast<const Stream::Watch*>(watch);
  Stream& s = *w->stream;
  switch (w->role) {
    case 0:
      OnLiveReadable(s);
      break;
    case 1:
      OnMonitor(s);
      break;
    default:
      OnReplayReadable(s);
      break;
  }
}

void Subscriber::Clear(ResyncReason reason) { Push(Item{ClearItem{reason}, 0}); }

void Subscriber::Connect(Stream& s) {
  const std::string mon = fmt::format("inproc://kvsub-monitor-{}", g_monitor_id.fetch_add(1));
  zmq::context_t& context = runtime_->context();
  try {
    s.sub.emplace(context, zmq::socket_type::sub);
    s.sub->set(zmq::sockopt::linger, 0);
    s.sub->set(zmq::sockopt::ipv6, 1);
    s.sub->set(zmq::sockopt::rcvhwm, options_.sub_rcvhwm);
    s.sub->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(options_.max_message_bytes));
    // libzmq reconnects by itself: each retry waits the current interval plus a random
    // jitter of up to reconnect_ivl, the interval doubling up to reconnect_ivl_max.
    s.sub->set(zmq::sockopt::reconnect_ivl, static_cast<int>(options_.reconnect_initial.count()));
    s.sub->set(zmq::sockopt::reconnect_ivl_max, static_cast<int>(options_.reconnect_max.count()));
    if (options_.heartbeat_interval.count() > 0) {
      s.sub->set(zmq::sockopt::heartbeat_ivl,
                 static_cast<int>(options_.heartbeat_interval.count()));
      s.sub->set(zmq::sockopt::heartbeat_timeout,
                 static_cast<int>(3 * options_.heartbeat_interval.count()));
    }
    s.sub->set(zmq::sockopt::subscribe, options_.topic_filter);
    if (zmq_socket_monitor(
            s.sub->handle(), mon.c_str(),
            ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CONNECT_RETRIED) != 0) {
      throw zmq::error_t();
    }
    s.monitor.emplace(context, zmq::socket_type::pair);
    s.monitor->set(zmq::sockopt::linger, 0);
    s.monitor->connect(mon);
    s.sub->connect(s.ep.endpoint);
    s.conn = Stream::Conn::kConnecting;
    loop_->Watch(s.sub->handle(), &s.watch_sub);
    loop_->Watch(s.monitor->handle(), &s.watch_monitor);
  } catch (const zmq::error_t& e) {
    static common::RateLimiter limiter;
    common::WarnLimited(limiter, "kvevents", "pod {} rank {}: cannot connect to {}: {}",
                        options_.source.pod_key, s.rank, s.ep.endpoint, e.what());
    metrics_->errors(ErrorType::kSocket).Increment();
    Teardown(s);
    ScheduleReconnect(s, /*failed_attempt=*/true);
  }
}

void Subscriber::Teardown(Stream& s) {
  s.retry_expected_by.reset();
  if (s.sub && s.monitor) zmq_socket_monitor(s.sub->handle(), nullptr, 0);
  if (s.monitor) loop_->Unwatch(s.monitor->handle());
  if (s.sub) loop_->Unwatch(s.sub->handle());
  s.monitor.reset();
  s.sub.reset();
  if (s.conn == Stream::Conn::kConnected) s.connection_status->Set(0);
}

void Subscriber::CloseDealer(Stream& s) {
  if (!s.dealer) return;
  loop_->Unwatch(s.dealer->handle());
  s.dealer.reset();
}

void Subscriber::ScheduleReconnect(Stream& s, bool failed_attempt) {
  if (s.backoff.count() == 0 || !failed_attempt) {
    s.backoff = options_.reconnect_initial;
  } else {
    s.backoff = std::min(options_.reconnect_max, s.backoff * 2);
  }
  s.conn = Stream::Conn::kWaiting;
  s.conn_deadline = options_.clock->Now() + Jitter(s.backoff);
  WakeAt(s.conn_deadline);
}

void Subscriber::OnMonitor(Stream& s) {
  std::vector<zmq::message_t> frames;
  while (s.monitor && RecvMultipart(*s.monitor, &frames)) {
    if (frames.empty() || frames[0].size() < 2) continue;
    uint16_t event;
    std::memcpy(&event, frames[0].data(), sizeof event);
    if (event == ZMQ_EVENT_CONNECTED && s.conn != Stream::Conn::kConnected) {
      s.retry_expected_by.reset();
      s.conn = Stream::Conn::kConnected;
      s.backoff = std::chrono::milliseconds(0);
      metrics_->connections().Increment();
      s.connection_status->Set(1);
      const bool reconnect = s.ever_connected;
      s.ever_connected = true;
      if (!s.ep.replay_endpoint.empty() && !s.replaying) {
        if (reconnect && s.expected) {
          // Batches published while we were away: fetch them before live ones.
          StartReplay(s, *s.expected, /*strict=*/true);
        } else if (!reconnect && options_.replay_on_start && !s.expected) {
          StartReplay(s, 0, /*strict=*/false);
        }
      }
    } else if (event == ZMQ_EVENT_DISCONNECTED && s.conn == Stream::Conn::kConnected) {
      metrics_->disconnections().Increment();
      s.connection_status->Set(0);
      s.conn = Stream::Conn::kConnecting;  // libzmq reconnects with backoff
      s.retry_expected_by = options_.clock->Now() + kRetryAnnouncement;
      WakeAt(*s.retry_expected_by);
    } else if (event == ZMQ_EVENT_CONNECT_RETRIED) {
      s.retry_expected_by.reset();
      metrics_->reconnect_attempts().Increment();
    }
  }
}

void Subscriber::OnLiveReadable(Stream& s) {
  std::vector<zmq::message_t> frames;
  for (int n = 0; s.sub && RecvMultipart(*s.sub, &frames); ++n) {
    if (frames.size() != 3 || frames[1].size() != 8) {
      metrics_->errors(ErrorType::kFrame).Increment();
      static common::RateLimiter limiter;
      common::WarnLimited(limiter, "kvevents",
                          "pod {} rank {}: dropping malformed message ({} frames, seq frame {} "
                          "bytes)",
                          options_.source.pod_key, s.rank, frames.size(),
                          frames.size() > 1 ? frames[1].size() : 0);
    } else {
      OnLive(s, ReadSeq(frames[1]), frames[2].to_string());
    }
    if (n + 1 == kMessagesPerTurn) {
      if (s.sub) loop_->Recheck(s.sub->handle());  // more may wait: after the other sockets
      return;
    }
  }
}

void Subscriber::Hold(Stream& s, uint64_t seq, std::string payload) {
  s.held_bytes += payload.size();
  runtime_->AddHeld(static_cast<int64_t>(payload.size()));
  s.held.emplace_back(seq, std::move(payload));
}

void Subscriber::OnLive(Stream& s, uint64_t seq, std::string payload) {
  if (s.replaying) {
    Hold(s, seq, std::move(payload));
    if (s.held_bytes > options_.max_held_bytes) {
      ReplayFailed(s, "too many live batch bytes held during replay");
    }
    return;
  }
  if (!s.replayed.empty()) {
    if (auto it = s.replayed.find(seq); it != s.replayed.end()) {
      if (it->second == std::hash<std::string>{}(payload)) {
        metrics_->duplicates_dropped().Increment();
        return;
      }
    }
    s.replayed.clear();  // past the replayed range (or a restart): duplicates cannot follow
  }
  if (!s.expected || seq == *s.expected) {
    s.consecutive_replays = 0;
    InOrder(s, seq, payload);
    return;
  }
  if (seq < *s.expected) {
    common::Logger("kvevents")
        ->info(
            "pod {} rank {}: sequence went back from {} to {}: engine "
            "restarted, clearing the pod",
            options_.source.pod_key, s.rank, *s.expected - 1, seq);
    Clear(ResyncReason::kRestart);
    InOrder(s, seq, payload);
    return;
  }
  // A gap.
  metrics_->gaps().Increment();
  metrics_->missed_events().Increment(static_cast<double>(seq - *s.expected));
  if (!s.ep.replay_endpoint.empty() && s.consecutive_replays < options_.max_consecutive_replays) {
    StartReplay(s, *s.expected, /*strict=*/true);
    if (s.replaying) {
      Hold(s, seq, std::move(payload));
    } else {
      OnLive(s, seq, std::move(payload));  // the replay failed at once: go on from here
    }
    return;
  }
  Clear(s.ep.replay_endpoint.empty() ? ResyncReason::kGapNoReplay : ResyncReason::kReplayLimit);
  s.consecutive_replays = 0;
  InOrder(s, seq, payload);
}

void Subscriber::InOrder(Stream& s, uint64_t seq, const std::string& payload) {
  s.expected = seq + 1;
  Deliver(s, seq, payload);
}

void Subscriber::Deliver(Stream& s, uint64_t seq, const std::string& payload) {
  s.last_sequence_id->Set(static_cast<double>(seq));
  DecodeStats ds;
  DecodeLimits limits;
  limits.max_decoded_bytes = options_.max_queued_bytes;
  auto batch = DecodeBatch(payload, &ds, limits);
  if (!batch.ok()) {
    const bool too_large = absl::IsResourceExhausted(batch.status());
    metrics_->errors(too_large ? ErrorType::kTooLarge : ErrorType::kDecode).Increment();
    static common::RateLimiter limiter;
    common::WarnLimited(limiter, "kvevents",
                        "pod {} rank {}: cannot take batch {} ({} bytes): {}; clearing the pod",
                        options_.source.pod_key, s.rank, seq, payload.size(),
                        common::AsStd(batch.status().message()));
    // Its events are lost: what the index holds for the pod may now be wrong.
    Clear(too_large ? ResyncReason::kTooLarge : ResyncReason::kDecodeError);
    return;
  }
  if (ds.skipped_events) {
    metrics_->received(EventKind::kUnknown).Increment(static_cast<double>(ds.skipped_events));
  }
  size_t n[kEventKinds] = {0, 0, 0, 0};
  for (const auto& e : batch->events) ++n[e.index()];
  for (int k = 0; k < 3; ++k) {
    if (n[k]) metrics_->received(static_cast<EventKind>(k)).Increment(static_cast<double>(n[k]));
  }
  const size_t bytes = DecodedBytes(*batch) + kItemOverhead;
  Push(Item{std::move(*batch), bytes});
}

void Subscriber::ResumeReplay(Stream& s) {
  CloseDealer(s);  // the rest of this request's replies must not be taken for the next one
  StartReplay(s, *s.expected, /*strict=*/true, /*resume=*/true);
}

void Subscriber::StartReplay(Stream& s, uint64_t from, bool strict, bool resume) {
  // The deadline is set before the request is counted: whoever sees the count (a test that
  // then moves the clock) sees the deadline too.
  s.replay_deadline = options_.clock->Now() + options_.replay_timeout;
  metrics_->replay_requests().Increment();
  try {
    if (!s.dealer) {
      s.dealer.emplace(runtime_->context(), zmq::socket_type::dealer);
      s.dealer->set(zmq::sockopt::linger, 0);
      s.dealer->set(zmq::sockopt::ipv6, 1);
      s.dealer->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(options_.max_message_bytes));
      s.dealer->connect(s.ep.replay_endpoint);
      loop_->Watch(s.dealer->handle(), &s.watch_dealer);
    }
    s.dealer->send(zmq::const_buffer(nullptr, 0),
                   zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    const std::string seq8 = Seq8(from);
    s.dealer->send(zmq::buffer(seq8), zmq::send_flags::dontwait);
    loop_->Recheck(s.dealer->handle());  // sending may have taken the readiness edge
  } catch (const zmq::error_t& e) {
    metrics_->errors(ErrorType::kSocket).Increment();
    CloseDealer(s);
  }
  if (!resume) {  // a resumed request is the same repair, and still needs the earlier hashes
    ++s.consecutive_replays;
    s.replay_requests = 0;
    s.replay_started = options_.clock->Now();
    s.replayed.clear();
  }
  ++s.replay_requests;
  s.replaying = true;
  s.replay_strict = strict;
  s.replay_from = from;
  s.replay_applied = 0;
  WakeAt(s.replay_deadline);
  if (!s.dealer) ReplayFailed(s, "replay socket unavailable");
}

void Subscriber::OnReplayReadable(Stream& s) {
  std::vector<zmq::message_t> frames;
  for (int turn = 0; s.replaying && s.dealer && RecvMultipart(*s.dealer, &frames); ++turn) {
    // ["", seq, payload] (before vLLM PR #45177) or ["", topic, seq, payload] (after).
    const size_t n = frames.size();
    if ((n != 3 && n != 4) || frames[0].size() != 0 || frames[n - 2].size() != 8) {
      metrics_->errors(ErrorType::kReplayProtocol).Increment();
      ReplayFailed(s, fmt::format("malformed replay reply ({} frames)", n));
      return;
    }
    const uint64_t seq = ReadSeq(frames[n - 2]);
    if (seq == kEndSeq && frames[n - 1].size() == 0) {
      ReplayDone(s);
      return;
    }
    OnReplayed(s, seq, frames[n - 1].to_string());
    if (turn + 1 == kMessagesPerTurn) {
      if (s.dealer) loop_->Recheck(s.dealer->handle());
      return;
    }
  }
}

void Subscriber::OnReplayed(Stream& s, uint64_t seq, const std::string& payload) {
  if (!s.expected) {
    s.expected = seq;  // start-up replay: take whatever history the engine still has
  }
  if (seq < *s.expected) return;  // already applied
  if (seq > *s.expected) {
    if (s.replay_applied > 0) {
      // Replies went missing in the middle: vLLM's replay ROUTER drops what passes its send
      // high-water mark (1,000 messages by default). Ask again from the first one missing.
      ResumeReplay(s);
      return;
    }
    if (s.replay_strict) {
      ReplayFailed(s, fmt::format("replay starts at {}, after the requested {}", seq, *s.expected));
      return;
    }
    s.expected = seq;
  }
  s.replayed.emplace(seq, std::hash<std::string>{}(payload));
  ++s.replay_applied;
  // From the first batch on, the request ends once replies stop coming (moving the
  // deadline later needs no wake-up: the tick recomputes it).
  s.replay_deadline = options_.clock->Now() +
                      std::min<std::chrono::milliseconds>(kReplayStall, options_.replay_timeout);
  if (s.replay_applied == 1) WakeAt(s.replay_deadline);
  InOrder(s, seq, payload);
  // Caught up with the live batches held meanwhile: the rest of the replay (and its end
  // marker) adds nothing, and may never come.
  if (s.replaying && !s.held.empty() && *s.expected >= s.held.front().first) {
    CloseDealer(s);
    ReplayDone(s);
  }
}

void Subscriber::ReplayDone(Stream& s) {
  s.replaying = false;
  metrics_->replay_success().Increment();
  static common::RateLimiter limiter;
  uint64_t suppressed = 0;
  if (s.replay_requests > 1 && limiter.Allow(&suppressed)) {
    common::Logger("kvevents")
        ->info(
            "pod {} rank {}: replay complete after {} requests in {} ms (the engine dropped "
            "replies past its send high-water mark; each request resumed where the last "
            "stopped) ({} similar lines suppressed)",
            options_.source.pod_key, s.rank, s.replay_requests,
            std::chrono::duration_cast<std::chrono::milliseconds>(options_.clock->Now() -
                                                                  s.replay_started)
                .count(),
            suppressed);
  }
  FlushHeld(s);
}

void Subscriber::ReplayFailed(Stream& s, const std::string& why) {
  metrics_->replay_failures().Increment();
  static common::RateLimiter limiter;
  common::WarnLimited(limiter, "kvevents",
                      "pod {} rank {}: replay from {} failed: {}; clearing the pod and "
                      "continuing from live events",
                      options_.source.pod_key, s.rank, s.replay_from, why);
  CloseDealer(s);  // late replies of this request must not be taken for the next one
  s.replaying = false;
  s.replayed.clear();
  // A failed start-up replay with nothing applied leaves nothing to clear.
  if (s.replay_strict || s.expected) Clear(ResyncReason::kReplayFailed);
  s.expected.reset();
  FlushHeld(s);
}

void Subscriber::FlushHeld(Stream& s) {
  std::deque<std::pair<uint64_t, std::string>> held;
  held.swap(s.held);
  runtime_->AddHeld(-static_cast<int64_t>(s.held_bytes));
  s.held_bytes = 0;
  while (!held.empty()) {
    auto [seq, payload] = std::move(held.front());
    held.pop_front();
    if (s.replaying) {  // another replay started: it holds the rest
      Hold(s, seq, std::move(payload));
      continue;
    }
    OnLive(s, seq, std::move(payload));
  }
}

}  // namespace aibrix::kvevents
