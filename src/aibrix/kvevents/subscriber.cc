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
#include "fmt/format.h"
#include "zmq.h"
#include "zmq.hpp"

namespace aibrix::kvevents {
namespace {

using TimePoint = std::chrono::steady_clock::time_point;
constexpr uint64_t kEndSeq = ~uint64_t{0};

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

struct Subscriber::AtomicStats {
  std::atomic<uint64_t> batches_applied{0}, clears{0}, restarts{0}, gaps{0}, replay_requests{0},
      replay_success{0}, replay_failures{0}, duplicates_dropped{0}, frame_errors{0},
      decode_errors{0}, skipped_events{0}, overflow_drops{0}, connections{0}, disconnections{0},
      reconnect_attempts{0};
};

struct Subscriber::Stream {
  int rank = 0;
  RankEndpoint ep;
  std::optional<zmq::socket_t> sub;
  std::optional<zmq::socket_t> monitor;
  std::optional<zmq::socket_t> dealer;

  enum class Conn { kWaiting, kConnecting, kConnected } conn = Conn::kWaiting;
  // kWaiting: sockets not created yet (or creation failed); retry at conn_deadline.
  // kConnecting: created, libzmq is (re)connecting. kConnected: the SUB has a peer.
  TimePoint conn_deadline;
  std::chrono::milliseconds backoff{0};
  bool ever_connected = false;

  // Sequence state: the next sequence number this rank's applied run needs.
  std::optional<uint64_t> expected;
  int consecutive_replays = 0;

  // Replay in progress.
  bool replaying = false;
  bool replay_strict = false;
  uint64_t replay_from = 0;
  TimePoint replay_deadline;
  std::deque<std::pair<uint64_t, std::string>> held;  // live batches received meanwhile
  // Payload hashes of the batches the last replay delivered: a later live message with such
  // a sequence number and the same payload is a duplicate, a different payload a restart.
  std::map<uint64_t, size_t> replayed;
};

Subscriber::Subscriber(SubscriberOptions options, kv::EventSink* sink,
                       std::shared_ptr<PodMetrics> metrics)
    : options_(std::move(options)),
      sink_(sink),
      metrics_(std::move(metrics)),
      stats_(std::make_unique<AtomicStats>()),
      rng_state_(
          reinterpret_cast<uintptr_t>(this) ^
          static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count())) {
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
  std::lock_guard<std::mutex> l(mu_);
  if (started_ || stopped_) {
    return absl::FailedPreconditionError("subscriber already started or stopped");
  }
  started_ = true;
  if (options_.context) {
    context_ = options_.context;
  } else {
    own_context_ = std::make_unique<zmq::context_t>(1);
    context_ = own_context_.get();
  }
  for (size_t r = 0; r < options_.ranks.size(); ++r) {
    auto s = std::make_unique<Stream>();
    s->rank = static_cast<int>(r);
    s->ep = options_.ranks[r];
    s->conn_deadline = options_.clock->Now();  // connect right away
    streams_.push_back(std::move(s));
    metrics_->connection_status(static_cast<int>(r)).Set(0);
  }
  apply_thread_ = std::thread([this] { ApplyLoop(); });
  socket_thread_ = std::thread([this] { SocketLoop(); });
  return absl::OkStatus();
}

void Subscriber::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopped_) return;
    stopped_ = true;
    stop_ = true;
  }
  cv_.notify_all();
  if (socket_thread_.joinable()) socket_thread_.join();
  if (apply_thread_.joinable()) apply_thread_.join();
  for (auto& s : streams_) metrics_->connection_status(s->rank).Set(0);
  streams_.clear();
  own_context_.reset();
}

Subscriber::Stats Subscriber::stats() const {
  const AtomicStats& a = *stats_;
  Stats s;
  s.batches_applied = a.batches_applied;
  s.clears = a.clears;
  s.restarts = a.restarts;
  s.gaps = a.gaps;
  s.replay_requests = a.replay_requests;
  s.replay_success = a.replay_success;
  s.replay_failures = a.replay_failures;
  s.duplicates_dropped = a.duplicates_dropped;
  s.frame_errors = a.frame_errors;
  s.decode_errors = a.decode_errors;
  s.skipped_events = a.skipped_events;
  s.overflow_drops = a.overflow_drops;
  s.connections = a.connections;
  s.disconnections = a.disconnections;
  s.reconnect_attempts = a.reconnect_attempts;
  return s;
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

// ---------------------------------------------------------------- applier thread

void Subscriber::Push(Item item) {
  {
    std::lock_guard<std::mutex> l(mu_);
    const bool is_clear = std::holds_alternative<ClearItem>(item.what);
    if (overflow_pending_) {
      // A Clear must go first; it replaces any clear being pushed now.
      if (queue_.size() + (is_clear ? 1 : 2) > options_.queue_capacity) {
        if (!is_clear) ++stats_->overflow_drops;
        return;
      }
      queue_.push_back(Item{ClearItem{"overflow"}, 0});
      overflow_pending_ = false;
      if (is_clear) {
        // The overflow clear just queued covers this one.
        cv_.notify_all();
        return;
      }
    } else if (queue_.size() >= options_.queue_capacity) {
      // Drop, and make the next item that fits a Clear: the sink never sees a run with a
      // hole in it.
      overflow_pending_ = true;
      if (!is_clear) {
        ++stats_->overflow_drops;
        metrics_->errors("overflow").Increment();
      }
      return;
    }
    queue_.push_back(std::move(item));
  }
  cv_.notify_all();
}

void Subscriber::ApplyLoop() {
  std::vector<Item> work;
  while (true) {
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return stop_.load() || !queue_.empty(); });
      if (stop_) return;
      while (!queue_.empty() && work.size() < 256) {
        work.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    for (auto& item : work) {
      if (auto* c = std::get_if<ClearItem>(&item.what)) {
        sink_->ClearPod(options_.source.pod_key);
        ++stats_->clears;
        metrics_->resyncs(c->reason).Increment();
        continue;
      }
      const auto& batch = std::get<kv::EventBatch>(item.what);
      const auto t0 = options_.clock->Now();
      sink_->ApplyBatch(options_.source, batch);
      const double secs = std::chrono::duration<double>(options_.clock->Now() - t0).count();
      metrics_->processing_seconds().Observe(secs);
      size_t n[kEventKinds] = {0, 0, 0, 0};
      for (const auto& e : batch.events) ++n[e.index()];
      for (int k = 0; k < 3; ++k) {
        if (n[k])
          metrics_->processed(static_cast<EventKind>(k)).Increment(static_cast<double>(n[k]));
      }
      ++stats_->batches_applied;
    }
    work.clear();
  }
}

// ---------------------------------------------------------------- socket thread

void Subscriber::Clear(const std::string& reason) { Push(Item{ClearItem{reason}, 0}); }

void Subscriber::Connect(Stream& s) {
  const std::string mon = fmt::format("inproc://kvsub-monitor-{}", g_monitor_id.fetch_add(1));
  try {
    s.sub.emplace(*context_, zmq::socket_type::sub);
    s.sub->set(zmq::sockopt::linger, 0);
    s.sub->set(zmq::sockopt::ipv6, 1);
    s.sub->set(zmq::sockopt::rcvhwm, options_.sub_rcvhwm);
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
    s.monitor.emplace(*context_, zmq::socket_type::pair);
    s.monitor->set(zmq::sockopt::linger, 0);
    s.monitor->connect(mon);
    s.sub->connect(s.ep.endpoint);
    s.conn = Stream::Conn::kConnecting;
  } catch (const zmq::error_t& e) {
    static common::RateLimiter limiter;
    common::WarnLimited(limiter, "kvevents", "pod {} rank {}: cannot connect to {}: {}",
                        options_.source.pod_key, s.rank, s.ep.endpoint, e.what());
    metrics_->errors("socket").Increment();
    Teardown(s);
    ScheduleReconnect(s, /*failed_attempt=*/true);
  }
}

void Subscriber::Teardown(Stream& s) {
  if (s.sub && s.monitor) zmq_socket_monitor(s.sub->handle(), nullptr, 0);
  s.monitor.reset();
  s.sub.reset();
  if (s.conn == Stream::Conn::kConnected) metrics_->connection_status(s.rank).Set(0);
}

void Subscriber::ScheduleReconnect(Stream& s, bool failed_attempt) {
  if (s.backoff.count() == 0 || !failed_attempt) {
    s.backoff = options_.reconnect_initial;
  } else {
    s.backoff = std::min(options_.reconnect_max, s.backoff * 2);
  }
  s.conn = Stream::Conn::kWaiting;
  s.conn_deadline = options_.clock->Now() + Jitter(s.backoff);
}

void Subscriber::OnMonitor(Stream& s) {
  std::vector<zmq::message_t> frames;
  while (s.monitor && RecvMultipart(*s.monitor, &frames)) {
    if (frames.empty() || frames[0].size() < 2) continue;
    uint16_t event;
    std::memcpy(&event, frames[0].data(), sizeof event);
    if (event == ZMQ_EVENT_CONNECTED && s.conn != Stream::Conn::kConnected) {
      s.conn = Stream::Conn::kConnected;
      s.backoff = std::chrono::milliseconds(0);
      ++stats_->connections;
      metrics_->connections().Increment();
      metrics_->connection_status(s.rank).Set(1);
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
      ++stats_->disconnections;
      metrics_->disconnections().Increment();
      metrics_->connection_status(s.rank).Set(0);
      s.conn = Stream::Conn::kConnecting;  // libzmq reconnects with backoff
    } else if (event == ZMQ_EVENT_CONNECT_RETRIED) {
      ++stats_->reconnect_attempts;
      metrics_->reconnect_attempts().Increment();
    }
  }
}

void Subscriber::OnLiveReadable(Stream& s) {
  std::vector<zmq::message_t> frames;
  for (int n = 0; n < 1024 && s.sub && RecvMultipart(*s.sub, &frames); ++n) {
    if (frames.size() != 3 || frames[1].size() != 8) {
      ++stats_->frame_errors;
      metrics_->errors("frame").Increment();
      static common::RateLimiter limiter;
      common::WarnLimited(limiter, "kvevents",
                          "pod {} rank {}: dropping malformed message ({} frames, seq frame {} "
                          "bytes)",
                          options_.source.pod_key, s.rank, frames.size(),
                          frames.size() > 1 ? frames[1].size() : 0);
      continue;
    }
    OnLive(s, ReadSeq(frames[1]), frames[2].to_string());
  }
}

void Subscriber::OnLive(Stream& s, uint64_t seq, std::string payload) {
  if (s.replaying) {
    s.held.emplace_back(seq, std::move(payload));
    if (s.held.size() > options_.max_held_during_replay) {
      ReplayFailed(s, "too many live batches held during replay");
    }
    return;
  }
  if (!s.replayed.empty()) {
    if (auto it = s.replayed.find(seq); it != s.replayed.end()) {
      if (it->second == std::hash<std::string>{}(payload)) {
        ++stats_->duplicates_dropped;
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
    ++stats_->restarts;
    common::Logger("kvevents")
        ->info(
            "pod {} rank {}: sequence went back from {} to {}: engine "
            "restarted, clearing the pod",
            options_.source.pod_key, s.rank, *s.expected - 1, seq);
    Clear("restart");
    InOrder(s, seq, payload);
    return;
  }
  // A gap.
  ++stats_->gaps;
  metrics_->missed_events().Increment(static_cast<double>(seq - *s.expected));
  if (!s.ep.replay_endpoint.empty() && s.consecutive_replays < options_.max_consecutive_replays) {
    StartReplay(s, *s.expected, /*strict=*/true);
    s.held.emplace_back(seq, std::move(payload));
    return;
  }
  Clear(s.ep.replay_endpoint.empty() ? "gap_no_replay" : "replay_limit");
  s.consecutive_replays = 0;
  InOrder(s, seq, payload);
}

void Subscriber::InOrder(Stream& s, uint64_t seq, const std::string& payload) {
  s.expected = seq + 1;
  Deliver(s, seq, payload);
}

void Subscriber::Deliver(Stream& s, uint64_t seq, const std::string& payload) {
  metrics_->last_sequence_id(s.rank).Set(static_cast<double>(seq));
  DecodeStats ds;
  auto batch = DecodeBatch(payload, &ds);
  if (!batch.ok()) {
    ++stats_->decode_errors;
    metrics_->errors("decode").Increment();
    static common::RateLimiter limiter;
    common::WarnLimited(limiter, "kvevents",
                        "pod {} rank {}: cannot decode batch {} ({} bytes): {}; clearing the pod",
                        options_.source.pod_key, s.rank, seq, payload.size(),
                        common::AsStd(batch.status().message()));
    // Its events are lost: what the index holds for the pod may now be wrong.
    Clear("decode_error");
    return;
  }
  if (ds.skipped_events) {
    stats_->skipped_events += ds.skipped_events;
    metrics_->received(EventKind::kUnknown).Increment(static_cast<double>(ds.skipped_events));
  }
  size_t n[kEventKinds] = {0, 0, 0, 0};
  for (const auto& e : batch->events) ++n[e.index()];
  for (int k = 0; k < 3; ++k) {
    if (n[k]) metrics_->received(static_cast<EventKind>(k)).Increment(static_cast<double>(n[k]));
  }
  Push(Item{std::move(*batch), 0});
}

void Subscriber::StartReplay(Stream& s, uint64_t from, bool strict) {
  ++s.consecutive_replays;
  ++stats_->replay_requests;
  metrics_->replay_requests().Increment();
  try {
    if (!s.dealer) {
      s.dealer.emplace(*context_, zmq::socket_type::dealer);
      s.dealer->set(zmq::sockopt::linger, 0);
      s.dealer->set(zmq::sockopt::ipv6, 1);
      s.dealer->connect(s.ep.replay_endpoint);
    }
    s.dealer->send(zmq::const_buffer(nullptr, 0),
                   zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    const std::string seq8 = Seq8(from);
    s.dealer->send(zmq::buffer(seq8), zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    metrics_->errors("socket").Increment();
    s.dealer.reset();
  }
  s.replaying = true;
  s.replay_strict = strict;
  s.replay_from = from;
  s.replay_deadline = options_.clock->Now() + options_.replay_timeout;
  s.replayed.clear();
  if (!s.dealer) ReplayFailed(s, "replay socket unavailable");
}

void Subscriber::OnReplayReadable(Stream& s) {
  std::vector<zmq::message_t> frames;
  while (s.replaying && s.dealer && RecvMultipart(*s.dealer, &frames)) {
    // ["", seq, payload] (before vLLM PR #45177) or ["", topic, seq, payload] (after).
    const size_t n = frames.size();
    if ((n != 3 && n != 4) || frames[0].size() != 0 || frames[n - 2].size() != 8) {
      metrics_->errors("replay_protocol").Increment();
      ReplayFailed(s, fmt::format("malformed replay reply ({} frames)", n));
      return;
    }
    const uint64_t seq = ReadSeq(frames[n - 2]);
    if (seq == kEndSeq && frames[n - 1].size() == 0) {
      ReplayDone(s);
      return;
    }
    if (!s.replaying) return;
    OnReplayed(s, seq, frames[n - 1].to_string());
  }
}

void Subscriber::OnReplayed(Stream& s, uint64_t seq, const std::string& payload) {
  if (!s.expected) {
    s.expected = seq;  // start-up replay: take whatever history the engine still has
  }
  if (seq < *s.expected) return;  // already applied
  if (seq > *s.expected) {
    if (s.replay_strict) {
      ReplayFailed(s, fmt::format("replay starts at {}, after the requested {}", seq, *s.expected));
      return;
    }
    s.expected = seq;
  }
  s.replayed.emplace(seq, std::hash<std::string>{}(payload));
  InOrder(s, seq, payload);
}

void Subscriber::ReplayDone(Stream& s) {
  s.replaying = false;
  ++stats_->replay_success;
  metrics_->replay_success().Increment();
  FlushHeld(s);
}

void Subscriber::ReplayFailed(Stream& s, const std::string& why) {
  ++stats_->replay_failures;
  metrics_->replay_failures().Increment();
  static common::RateLimiter limiter;
  common::WarnLimited(limiter, "kvevents",
                      "pod {} rank {}: replay from {} failed: {}; clearing the pod and "
                      "continuing from live events",
                      options_.source.pod_key, s.rank, s.replay_from, why);
  s.dealer.reset();  // late replies of this request must not be taken for the next one
  s.replaying = false;
  s.replayed.clear();
  // A failed start-up replay with nothing applied leaves nothing to clear.
  if (s.replay_strict || s.expected) Clear("replay_failed");
  s.expected.reset();
  FlushHeld(s);
}

void Subscriber::FlushHeld(Stream& s) {
  std::deque<std::pair<uint64_t, std::string>> held;
  held.swap(s.held);
  while (!held.empty()) {
    auto [seq, payload] = std::move(held.front());
    held.pop_front();
    OnLive(s, seq, std::move(payload));  // may start another replay, which holds the rest
  }
}

void Subscriber::SocketLoop() {
  std::vector<zmq::pollitem_t> items;
  std::vector<std::pair<Stream*, int>> owners;  // (stream, 0 sub / 1 monitor / 2 dealer)
  while (!stop_) {
    auto now = options_.clock->Now();
    auto next = now + options_.poll_interval;
    for (auto& sp : streams_) {
      Stream& s = *sp;
      if (s.conn == Stream::Conn::kWaiting && now >= s.conn_deadline) Connect(s);
      if (s.replaying && now >= s.replay_deadline) ReplayFailed(s, "timeout");
      if (s.conn == Stream::Conn::kWaiting) next = std::min(next, s.conn_deadline);
      if (s.replaying) next = std::min(next, s.replay_deadline);
    }
    items.clear();
    owners.clear();
    for (auto& sp : streams_) {
      Stream& s = *sp;
      if (s.monitor) {
        items.push_back({s.monitor->handle(), 0, ZMQ_POLLIN, 0});
        owners.emplace_back(&s, 1);
      }
      if (s.sub) {
        items.push_back({s.sub->handle(), 0, ZMQ_POLLIN, 0});
        owners.emplace_back(&s, 0);
      }
      if (s.dealer && s.replaying) {
        items.push_back({s.dealer->handle(), 0, ZMQ_POLLIN, 0});
        owners.emplace_back(&s, 2);
      }
    }
    const auto wait = std::max(std::chrono::milliseconds(1),
                               std::chrono::duration_cast<std::chrono::milliseconds>(next - now));
    try {
      if (items.empty()) {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait_for(l, wait, [&] { return stop_.load(); });
        continue;
      }
      zmq::poll(items.data(), items.size(), wait);
      for (size_t i = 0; i < items.size(); ++i) {
        if (!(items[i].revents & ZMQ_POLLIN)) continue;
        Stream& s = *owners[i].first;
        switch (owners[i].second) {
          case 0:
            OnLiveReadable(s);
            break;
          case 1:
            OnMonitor(s);
            break;
          case 2:
            OnReplayReadable(s);
            break;
        }
      }
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) break;
      metrics_->errors("socket").Increment();
      static common::RateLimiter limiter;
      common::WarnLimited(limiter, "kvevents", "pod {}: socket error: {}", options_.source.pod_key,
                          e.what());
    }
  }
  for (auto& sp : streams_) {
    Teardown(*sp);
    sp->dealer.reset();
  }
}

}  // namespace aibrix::kvevents
