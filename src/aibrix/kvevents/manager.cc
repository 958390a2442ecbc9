#include "aibrix/kvevents/manager.h"

#include <charconv>
#include <utility>

#include "aibrix/common/logging.h"
#include "aibrix/common/net.h"
#include "aibrix/common/strings.h"
#include "fmt/format.h"

namespace aibrix::kvevents {
namespace {

int LabelPort(const store::PodObject& pod, const char* label, int fallback) {
  auto it = pod.labels.find(label);
  if (it == pod.labels.end()) return fallback;
  int port = 0;
  const std::string& v = it->second;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), port);
  if (ec != std::errc() || p != v.data() + v.size() || port < 0 || port > 65535) return fallback;
  return port;
}

std::string TcpEndpoint(const std::string& ip, int port) {
  return "tcp://" + common::FormatHostPort(ip, static_cast<uint16_t>(port));
}

}  // namespace

bool PodTarget::operator==(const PodTarget& o) const {
  if (uid != o.uid || ip != o.ip || model != o.model || lora_id != o.lora_id ||
      ranks.size() != o.ranks.size()) {
    return false;
  }
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (ranks[i].endpoint != o.ranks[i].endpoint ||
        ranks[i].replay_endpoint != o.ranks[i].replay_endpoint) {
      return false;
    }
  }
  return true;
}

bool HasTarget(const store::Pod& pod, const EventManagerOptions& options) {
  const store::PodObject& o = pod.object;
  return options.enabled && store::PodKvEventsEnabled(o) && o.phase == "Running" && !o.ip.empty() &&
         !store::PodModelName(o).empty() &&
         LabelPort(o, store::kKvEventsPortLabel, options.default_port) != 0;
}

std::unique_ptr<PodTarget> TargetForPod(const store::Pod& pod, const EventManagerOptions& options) {
  if (!HasTarget(pod, options)) return nullptr;
  const store::PodObject& o = pod.object;
  auto t = std::make_unique<PodTarget>();
  t->uid = o.uid;
  t->ip = o.ip;
  t->model = store::PodModelName(o);
  t->lora_id = store::PodLoraId(o);
  const int port = LabelPort(o, store::kKvEventsPortLabel, options.default_port);
  const int replay = LabelPort(o, store::kKvReplayPortLabel, options.default_replay_port);
  const int dp = store::PodDataParallelSize(o);
  for (int r = 0; r < dp && port + r <= 65535; ++r) {
    RankEndpoint ep;
    ep.endpoint = TcpEndpoint(o.ip, port + r);
    if (replay > 0 && replay + r <= 65535) ep.replay_endpoint = TcpEndpoint(o.ip, replay + r);
    t->ranks.push_back(std::move(ep));
  }
  return t;
}

EventManager::EventManager(store::Store* store, kv::EventSink* sink, prometheus::Registry* registry,
                           EventManagerOptions options)
    : store_(store), sink_(sink), options_(std::move(options)) {
  if (!registry) {
    own_registry_ = std::make_unique<prometheus::Registry>();
    registry = own_registry_.get();
  }
  metrics_ = std::make_unique<KvMetrics>(*registry);
  over_capacity_ = &prometheus::BuildGauge()
                        .Name("aibrix_kvcache_zmq_pods_over_capacity")
                        .Help(
                            "Eligible pods not subscribed because the fleet is at the KV "
                            "event capacity (descriptor limit or --kv-max-ranks)")
                        .Register(*registry)
                        .Add({});
}

EventManager::~EventManager() { Stop(); }

absl::Status EventManager::Start() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (started_) return absl::FailedPreconditionError("event manager already started");
    started_ = true;
    if (!options_.enabled) return absl::OkStatus();
    auto runtime = IngestRuntime::Create(options_.ingest);
    if (!runtime.ok()) return runtime.status();
    runtime_ = std::move(*runtime);
    thread_ = std::thread([this] { Run(); });
  }
  store_->AddListener(this);
  // Pods cached before we listened. Reconciliation reads the current state, so a pod also
  // notified through the listener is handled once more at no cost.
  for (const auto& pod : store_->ListPods()) Enqueue(pod->key);
  return absl::OkStatus();
}

void EventManager::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!started_ || stopping_) return;
    stopping_ = true;
  }
  if (!options_.enabled) return;
  store_->RemoveListener(this);
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::map<std::string, Entry> entries;
  {
    std::lock_guard<std::mutex> l(mu_);
    entries.swap(entries_);
  }
  // Every socket closes at once on the runtime's threads; the subscribers then only let go.
  if (runtime_) runtime_->Stop();
  for (auto& [key, e] : entries) e.subscriber->Stop();
  entries.clear();
  std::lock_guard<std::mutex> l(mu_);
  runtime_.reset();
}

void EventManager::OnPodChanged(const store::PodRef& before, const store::PodRef& after) {
  if (!options_.enabled) return;
  // Nothing to reconcile between two versions without a target (header): no hand-off.
  if ((!before || !HasTarget(*before, options_)) && (!after || !HasTarget(*after, options_))) {
    return;
  }
  Enqueue(after ? after->key : before->key);
}

void EventManager::Enqueue(const std::string& key) {
  if (key.empty()) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) return;
    ++enqueued_;
    if (!queued_.insert(key).second) {
      ++done_;  // already queued: that reconciliation covers this change too
      return;
    }
    queue_.push_back(key);
  }
  cv_.notify_all();
}

bool EventManager::WaitIdle(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(mu_);
  const uint64_t target = enqueued_;
  return cv_.wait_for(l, timeout, [&] { return done_ >= target || stopping_; });
}

void EventManager::Run() {
  while (true) {
    std::string key;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      key = std::move(queue_.front());
      queue_.pop_front();
      queued_.erase(key);
    }
    Reconcile(key);
    {
      std::lock_guard<std::mutex> l(mu_);
      ++done_;
    }
    cv_.notify_all();
  }
}

void EventManager::Reconcile(const std::string& key) {
  auto pod = store_->GetPod(key);
  std::unique_ptr<PodTarget> want;
  if (pod.ok()) want = TargetForPod(**pod, options_);

  std::unique_ptr<Subscriber> old;
  ResyncReason reason = ResyncReason::kConfigChanged;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      if (want && *want == it->second.target) return;  // nothing changed for us
      if (!pod.ok()) {
        reason = ResyncReason::kPodDeleted;
      } else if (!want) {
        reason = ResyncReason::kIneligible;
      } else if (want->ip != it->second.target.ip) {
        reason = ResyncReason::kIpChanged;
      } else if (want->uid != it->second.target.uid) {
        reason = ResyncReason::kPodRecreated;
      } else {
        reason = ResyncReason::kConfigChanged;
      }
      old = std::move(it->second.subscriber);
      subscribed_ranks_ -= static_cast<int>(it->second.target.ranks.size());
      entries_.erase(it);
    }
  }
  auto log = common::Logger("kvevents");
  if (old) {
    old->Stop();
    old.reset();
    // The old subscriber is let go by its applier: nothing for this pod reaches the sink any
    // more until the new subscriber starts.
    sink_->ClearPod(key);
    metrics_->ForPod(key)->resyncs(reason).Increment();
    log->info("pod {}: unsubscribed from KV events ({}), entries cleared", key,
              ResyncReasonName(reason));
    if (!want) metrics_->RemovePod(key);
  }
  if (!want) {
    if (over_capacity_pods_.erase(key) > 0) over_capacity_->Decrement();
    return;
  }
  const int ranks = static_cast<int>(want->ranks.size());
  const int capacity = std::min(options_.ingest.max_ranks, runtime_->rank_capacity());
  if (subscribed_ranks_ + ranks > capacity) {
    if (over_capacity_pods_.insert(key).second) over_capacity_->Increment();
    static common::RateLimiter limiter;
    common::WarnLimited(limiter, "kvevents",
                        "pod {}: not subscribed to KV events: {} engine ranks already are, the "
                        "capacity is {} (descriptor limit / --kv-max-ranks)",
                        key, subscribed_ranks_, capacity);
    return;
  }
  if (over_capacity_pods_.erase(key) > 0) over_capacity_->Decrement();

  SubscriberOptions so = options_.subscriber;
  so.source.pod_key = key;
  so.source.model = want->model;
  so.source.lora_id = want->lora_id;
  so.ranks = want->ranks;
  so.runtime = runtime_;
  auto sub = std::make_unique<Subscriber>(std::move(so), sink_, metrics_->ForPod(key));
  if (auto st = sub->Start(); !st.ok()) {
    log->warn("pod {}: cannot subscribe to KV events: {}", key, common::AsStd(st.message()));
    return;
  }
  log->info("pod {}: subscribed to KV events at {}{}", key, want->ranks.front().endpoint,
            want->ranks.size() > 1 ? fmt::format(" (+{} ranks)", want->ranks.size() - 1) : "");
  subscribed_ranks_ += ranks;
  std::lock_guard<std::mutex> l(mu_);
  entries_[key] = Entry{std::move(*want), std::move(sub)};
}

std::vector<std::string> EventManager::SubscribedPods() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<std::string> keys;
  for (const auto& [k, e] : entries_) keys.push_back(k);
  return keys;
}

std::vector<RankEndpoint> EventManager::Endpoints(const std::string& pod_key) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = entries_.find(pod_key);
  return it == entries_.end() ? std::vector<RankEndpoint>{} : it->second.target.ranks;
}

size_t EventManager::queued_bytes() const {
  std::lock_guard<std::mutex> l(mu_);
  return runtime_ ? runtime_->queued_bytes() + runtime_->held_bytes() : 0;
}

Subscriber::Stats EventManager::PodStats(const std::string& pod_key) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = entries_.find(pod_key);
  return it == entries_.end() ? Subscriber::Stats{} : it->second.subscriber->stats();
}

}  // namespace aibrix::kvevents
