#include "aibrix/prefix/approx_index.h"

#include <algorithm>
#include <mutex>

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

// PodBase: key, mutex, removed flag, gauge, bytes (index_core.h).
struct ApproxIndex::PodLru : PodBase {
  struct Node {
    BlockKey key;
    uint32_t prev, next;  // towards head (newer) / tail (older)
    int64_t stamp_ns;
  };
  using PodBase::PodBase;
  // Guarded by mu:
  HolderId holder = 0;
  absl::flat_hash_map<BlockKey, uint32_t> index;
  std::vector<Node> nodes;
  std::vector<uint32_t> free;
  uint32_t head = kNil, tail = kNil;
  // Readable without mu (stats):
  std::atomic<uint64_t> size{0};
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
      metrics_(registry ? std::make_unique<Metrics>(*registry) : nullptr),
      core_(options.block_size, options.scheme, MatchSource::kRouting,
            metrics_ ? &metrics_->pod_blocks : nullptr),
      pods_(core_) {}

ApproxIndex::~ApproxIndex() = default;

uint64_t ApproxIndex::TrimLocked(PodLru& lru, int64_t now_ns) {
  uint64_t by_cap = 0, by_ttl = 0;
  const int64_t ttl = options_.ttl.count();
  while (lru.tail != kNil) {
    const uint32_t t = lru.tail;
    const bool over = lru.index.size() > options_.max_blocks_per_pod;
    const bool old = now_ns - lru.nodes[t].stamp_ns > ttl;
    if (!over && !old) break;
    (over ? by_cap : by_ttl) += 1;
    core_.table().Clear(lru.nodes[t].key, lru.holder);
    lru.index.erase(lru.nodes[t].key);
    lru.Unlink(t);
    lru.free.push_back(t);
  }
  const uint64_t n = by_cap + by_ttl;
  if (n > 0) {
    lru.evicted.fetch_add(n, std::memory_order_relaxed);
    core_.AddMemberships(-static_cast<int64_t>(n));
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

void ApproxIndex::PublishLocked(PodLru& lru) {
  lru.size.store(lru.index.size(), std::memory_order_relaxed);
  core_.SetPodBytes(lru.bytes, lru.Bytes());
  if (lru.gauge) lru.gauge->Set(static_cast<double>(lru.index.size()));
}

void ApproxIndex::RecordKeys(std::span<const BlockKey> keys, const std::string& pod) {
  if (keys.empty()) return;
  auto [lru, lock] = pods_.LockLive(pod, [&](PodLru& created) {
    created.holder = core_.directory().Acquire(pod, kTier);  // the pod's one holder
  });
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
    core_.table().Set(key, lru->holder);
    ++added;
  }
  core_.AddMemberships(static_cast<int64_t>(added));
  TrimLocked(*lru, now);
  PublishLocked(*lru);
  if (metrics_) {
    metrics_->records.Increment();
    metrics_->bytes.Set(static_cast<double>(bytes()));
  }
}

void ApproxIndex::Record(const HashContext& ctx, std::span<const uint32_t> tokens,
                         const std::string& pod) {
  RecordKeys(core_.hasher().Hash(ctx, tokens), pod);
}

void ApproxIndex::RemovePod(const std::string& pod) {
  std::shared_ptr<PodLru> lru = pods_.Take(pod);
  if (!lru) return;
  std::lock_guard<std::mutex> lock(lru->mu);
  for (const auto& [key, i] : lru->index) core_.table().Clear(key, lru->holder);
  core_.AddMemberships(-static_cast<int64_t>(lru->index.size()));
  lru->index = {};
  lru->nodes = {};
  lru->free = {};
  lru->head = lru->tail = kNil;
  lru->size.store(0);
  core_.directory().Release(lru->holder);
  pods_.Retire(*lru);
}

uint64_t ApproxIndex::Sweep() {
  const int64_t now = options_.clock->Now().time_since_epoch().count();
  uint64_t n = 0;
  for (auto& lru : pods_.All()) {
    std::lock_guard<std::mutex> lock(lru->mu);
    if (lru->removed) continue;
    n += TrimLocked(*lru, now);
    PublishLocked(*lru);
  }
  if (metrics_) metrics_->bytes.Set(static_cast<double>(bytes()));
  return n;
}

std::optional<PodIndexStats> ApproxIndex::Stats(const std::string& pod) const {
  std::shared_ptr<PodLru> lru = pods_.Find(pod);
  if (!lru) return std::nullopt;
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
  return pods_.AllStats([this](const std::string& key) { return Stats(key); });
}

}  // namespace aibrix::prefix
