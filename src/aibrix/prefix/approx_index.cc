#include "aibrix/prefix/approx_index.h"

#include <algorithm>
#include <mutex>

#include "aibrix/prefix/all_stats.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace aibrix::prefix {
namespace {

constexpr uint32_t kNil = ~uint32_t{0};
const char* const kTier = "GPU";

}  // namespace

struct ApproxIndex::Metrics {
  explicit Metrics(prometheus::Registry& r)
      : pod_blocks(prometheus::BuildGauge()
                       .Name("aibrix_prefix_index_pod_blocks")
                       .Help("Block memberships held per pod (all tiers) in the prefix index")
                       .Register(r)),
        bytes_family(prometheus::BuildGauge()
                         .Name("aibrix_prefix_index_bytes")
                         .Help("Bytes used by the prefix index, counted from table capacities")
                         .Register(r)),
        evictions(prometheus::BuildCounter()
                      .Name("aibrix_prefix_index_approx_evictions_total")
                      .Help("Blocks dropped from the routing-fed prefix index, by reason")
                      .Register(r)),
        records(prometheus::BuildCounter()
                    .Name("aibrix_prefix_index_approx_records_total")
                    .Help("Routing decisions recorded in the routing-fed prefix index")
                    .Register(r)
                    .Add({})),
        bytes(bytes_family.Add({{"source", "routing"}})),
        capacity(evictions.Add({{"reason", "capacity"}})),
        ttl(evictions.Add({{"reason", "ttl"}})) {}

  prometheus::Family<prometheus::Gauge>& pod_blocks;
  prometheus::Family<prometheus::Gauge>& bytes_family;
  prometheus::Family<prometheus::Counter>& evictions;
  prometheus::Counter& records;
  prometheus::Gauge& bytes;
  prometheus::Counter& capacity;
  prometheus::Counter& ttl;
};

struct ApproxIndex::PodLru {
  struct Node {
    BlockKey key;
    uint32_t prev, next;  // towards head (newer) / tail (older)
    int64_t stamp_ns;
  };
  explicit PodLru(std::string p) : pod(std::move(p)) {}
  const std::string pod;
  std::mutex mu;
  // Guarded by mu:
  bool removed = false;
  HolderId holder = 0;
  absl::flat_hash_map<BlockKey, uint32_t> index;
  std::vector<Node> nodes;
  std::vector<uint32_t> free;
  uint32_t head = kNil, tail = kNil;
  prometheus::Gauge* gauge = nullptr;
  std::atomic<uint64_t> size{0};
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> evicted{0};

  void Unlink(uint32_t i) {
    Node& n = nodes[i];
    if (n.prev != kNil)
      nodes[n.prev].next = n.next;
    else
      head = n.next;
    if (n.next != kNil)
      nodes[n.next].prev = n.prev;
    else
      tail = n.prev;
  }
  void PushHead(uint32_t i) {
    Node& n = nodes[i];
    n.prev = kNil;
    n.next = head;
    if (head != kNil) nodes[head].prev = i;
    head = i;
    if (tail == kNil) tail = i;
  }
  uint64_t Bytes() const {
    return sizeof(PodLru) + index.capacity() * (sizeof(BlockKey) + sizeof(uint32_t) + 1) +
           nodes.capacity() * sizeof(Node) + free.capacity() * sizeof(uint32_t);
  }
};

ApproxIndex::ApproxIndex(ApproxIndexOptions options, prometheus::Registry* registry)
    : options_(options),
      hasher_(options.block_size, options.scheme),
      table_(epoch_),
      directory_(epoch_),
      metrics_(registry ? std::make_unique<Metrics>(*registry) : nullptr) {}

ApproxIndex::~ApproxIndex() {
  if (!metrics_) return;
  std::unique_lock lock(pods_mu_);
  for (auto& [key, lru] : pods_) {
    std::lock_guard<std::mutex> l(lru->mu);
    if (lru->gauge) metrics_->pod_blocks.Remove(lru->gauge);
  }
}

std::shared_ptr<ApproxIndex::PodLru> ApproxIndex::GetOrCreate(const std::string& pod) {
  {
    std::shared_lock lock(pods_mu_);
    if (auto it = pods_.find(pod); it != pods_.end()) return it->second;
  }
  std::unique_lock lock(pods_mu_);
  auto& slot = pods_[pod];
  if (!slot) {
    slot = std::make_shared<PodLru>(pod);
    slot->holder = directory_.Acquire(pod, kTier);
    if (metrics_) slot->gauge = &metrics_->pod_blocks.Add({{"pod", pod}, {"source", "routing"}});
  }
  return slot;
}

uint64_t ApproxIndex::TrimLocked(PodLru& lru, int64_t now_ns) {
  uint64_t by_cap = 0, by_ttl = 0;
  const int64_t ttl = options_.ttl.count();
  while (lru.tail != kNil) {
    const uint32_t t = lru.tail;
    const bool over = lru.index.size() > options_.max_blocks_per_pod;
    const bool old = now_ns - lru.nodes[t].stamp_ns > ttl;
    if (!over && !old) break;
    (over ? by_cap : by_ttl) += 1;
    table_.Clear(lru.nodes[t].key, lru.holder);
    lru.index.erase(lru.nodes[t].key);
    lru.Unlink(t);
    lru.free.push_back(t);
  }
  const uint64_t n = by_cap + by_ttl;
  if (n > 0) {
    lru.evicted.fetch_add(n, std::memory_order_relaxed);
    memberships_.fetch_sub(n, std::memory_order_relaxed);
    if (metrics_) {
      if (by_cap) metrics_->capacity.Increment(static_cast<double>(by_cap));
      if (by_ttl) metrics_->ttl.Increment(static_cast<double>(by_ttl));
    }
  }
  if (lru.index.empty()) {  // give memory back after a burst
    lru.nodes = {};
    lru.free = {};
    lru.index = {};
  }
  return n;
}

void ApproxIndex::RecordKeys(std::span<const BlockKey> keys, const std::string& pod) {
  if (keys.empty()) return;
  std::shared_ptr<PodLru> lru;
  std::unique_lock<std::mutex> lock;
  for (;;) {
    lru = GetOrCreate(pod);
    lock = std::unique_lock<std::mutex>(lru->mu);
    if (!lru->removed) break;
    lock.unlock();
  }
  const int64_t now = options_.clock->Now().time_since_epoch().count();
  uint64_t added = 0;
  // Last block first, so every block ends up more recent than its descendants.
  for (size_t k = keys.size(); k-- > 0;) {
    const BlockKey key = keys[k];
    auto [it, inserted] = lru->index.try_emplace(key, kNil);
    if (!inserted) {
      const uint32_t i = it->second;
      lru->Unlink(i);
      lru->nodes[i].stamp_ns = now;
      lru->PushHead(i);
      continue;
    }
    uint32_t i;
    if (!lru->free.empty()) {
      i = lru->free.back();
      lru->free.pop_back();
    } else {
      i = static_cast<uint32_t>(lru->nodes.size());
      lru->nodes.push_back({});
    }
    lru->nodes[i] = {key, kNil, kNil, now};
    it->second = i;
    lru->PushHead(i);
    table_.Set(key, lru->holder);
    ++added;
  }
  memberships_.fetch_add(added, std::memory_order_relaxed);
  TrimLocked(*lru, now);
  lru->size.store(lru->index.size(), std::memory_order_relaxed);
  const uint64_t b = lru->Bytes();
  pod_bytes_.fetch_add(b - lru->bytes.exchange(b), std::memory_order_relaxed);
  if (metrics_) {
    metrics_->records.Increment();
    if (lru->gauge) lru->gauge->Set(static_cast<double>(lru->index.size()));
    metrics_->bytes.Set(static_cast<double>(bytes()));
  }
}

void ApproxIndex::Record(const HashContext& ctx, std::span<const uint32_t> tokens,
                         const std::string& pod) {
  RecordKeys(hasher_.Hash(ctx, tokens), pod);
}

void ApproxIndex::RemovePod(const std::string& pod) {
  std::shared_ptr<PodLru> lru;
  {
    std::unique_lock lock(pods_mu_);
    auto it = pods_.find(pod);
    if (it == pods_.end()) return;
    lru = std::move(it->second);
    pods_.erase(it);
  }
  std::lock_guard<std::mutex> lock(lru->mu);
  for (const auto& [key, i] : lru->index) table_.Clear(key, lru->holder);
  memberships_.fetch_sub(lru->index.size(), std::memory_order_relaxed);
  lru->index = {};
  lru->nodes = {};
  lru->free = {};
  lru->head = lru->tail = kNil;
  lru->removed = true;
  lru->size.store(0);
  directory_.Release(lru->holder);
  pod_bytes_.fetch_sub(lru->bytes.exchange(0), std::memory_order_relaxed);
  if (metrics_ && lru->gauge) {
    metrics_->pod_blocks.Remove(lru->gauge);
    lru->gauge = nullptr;
  }
}

uint64_t ApproxIndex::Sweep() {
  std::vector<std::shared_ptr<PodLru>> all;
  {
    std::shared_lock lock(pods_mu_);
    for (const auto& [k, p] : pods_) all.push_back(p);
  }
  const int64_t now = options_.clock->Now().time_since_epoch().count();
  uint64_t n = 0;
  for (auto& lru : all) {
    std::lock_guard<std::mutex> lock(lru->mu);
    if (lru->removed) continue;
    n += TrimLocked(*lru, now);
    lru->size.store(lru->index.size(), std::memory_order_relaxed);
    const uint64_t b = lru->Bytes();
    pod_bytes_.fetch_add(b - lru->bytes.exchange(b), std::memory_order_relaxed);
    if (metrics_ && lru->gauge) lru->gauge->Set(static_cast<double>(lru->index.size()));
  }
  if (metrics_) metrics_->bytes.Set(static_cast<double>(bytes()));
  return n;
}

void ApproxIndex::MatchKeys(std::span<const BlockKey> keys, MatchVisitor visit) const {
  KeyCursor cursor(keys);
  thread_local std::vector<HolderMatch> found;
  found.clear();
  EpochManager::ReadGuard guard(epoch_);
  const auto& snap = directory_.snapshot();
  SearchPrefix(table_, snap.group_masks, cursor, &found);
  for (const HolderMatch& m : found) visit(snap.by_id[m.holder].pod, kTier, m.blocks);
}

void ApproxIndex::MatchTokens(const HashContext& ctx, std::span<const uint32_t> tokens,
                              MatchVisitor visit) const {
  KeyCursor cursor(hasher_, ContextRoot(ctx), tokens);
  thread_local std::vector<HolderMatch> found;
  found.clear();
  EpochManager::ReadGuard guard(epoch_);
  const auto& snap = directory_.snapshot();
  SearchPrefix(table_, snap.group_masks, cursor, &found);
  for (const HolderMatch& m : found) visit(snap.by_id[m.holder].pod, kTier, m.blocks);
}

std::vector<PodMatch> ApproxIndex::Match(const HashContext& ctx,
                                         std::span<const uint32_t> tokens) const {
  std::vector<PodMatch> out;
  MatchTokens(ctx, tokens, [&](std::string_view pod, std::string_view tier, uint32_t blocks) {
    out.push_back(PodMatch{std::string(pod), blocks, std::string(tier), MatchSource::kRouting});
  });
  std::sort(out.begin(), out.end(), [](const PodMatch& a, const PodMatch& b) {
    if (a.matched_blocks != b.matched_blocks) return a.matched_blocks > b.matched_blocks;
    return a.pod < b.pod;
  });
  return out;
}

std::optional<PodIndexStats> ApproxIndex::Stats(const std::string& pod) const {
  std::shared_ptr<PodLru> lru;
  {
    std::shared_lock lock(pods_mu_);
    auto it = pods_.find(pod);
    if (it == pods_.end()) return std::nullopt;
    lru = it->second;
  }
  PodIndexStats s;
  s.pod = pod;
  s.source = MatchSource::kRouting;
  s.blocks = lru->size.load();
  s.tiers.push_back(TierCount{kTier, s.blocks});
  s.bytes = lru->bytes.load();
  s.evicted_blocks = lru->evicted.load();
  return s;
}

std::vector<PodIndexStats> ApproxIndex::AllStats() const {
  return AllPodStats(pods_mu_, pods_, [this](const std::string& key) { return Stats(key); });
}

uint64_t ApproxIndex::bytes() const {
  return table_.bytes() + pod_bytes_.load(std::memory_order_relaxed);
}

}  // namespace aibrix::prefix
