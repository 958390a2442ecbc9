#include "aibrix/prefix/approx_index.h"

#include <algorithm>
#include <mutex>
#include <utility>

#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
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
  // A run of consecutive block keys of one chain; keys[0] names the node in `heads`.
  struct Node {
    std::vector<BlockKey> keys;
    std::vector<uint32_t> kids;  // nodes whose run continues this one
    uint32_t parent = kNil;      // kNil: the run starts at block 0
    uint64_t seq = 0;            // order of the last touch (larger = more recent)
    int64_t stamp_ns = 0;        // time of the last touch
  };
  using PodBase::PodBase;
  // Guarded by mu:
  HolderId holder = 0;
  std::vector<Node> nodes;
  std::vector<uint32_t> free;
  absl::flat_hash_map<BlockKey, uint32_t> heads;          // first key of a run -> node
  absl::btree_set<std::pair<uint64_t, uint32_t>> leaves;  // (seq, node) of childless nodes
  uint64_t blocks = 0;                                    // keys in all runs
  uint64_t next_seq = 0;
  // Readable without mu (stats):
  std::atomic<uint64_t> size{0};
  std::atomic<uint64_t> evicted{0};

  bool IsLeaf(uint32_t i) const { return nodes[i].kids.empty(); }

  // Marks node i touched now (its leaf entry follows).
  void Touch(uint32_t i, uint64_t seq, int64_t now) {
    Node& n = nodes[i];
    if (IsLeaf(i)) {
      leaves.erase({n.seq, i});
      leaves.insert({seq, i});
    }
    n.seq = seq;
    n.stamp_ns = now;
  }

  // Appends a node holding `keys` below `parent` (kNil: at block 0).
  uint32_t AddNode(uint32_t parent, std::span<const BlockKey> keys, uint64_t seq, int64_t now) {
    uint32_t i;
    if (!free.empty()) {
      i = free.back();
      free.pop_back();
    } else {
      i = static_cast<uint32_t>(nodes.size());
      nodes.emplace_back();
    }
    Node& n = nodes[i];
    n.keys.assign(keys.begin(), keys.end());
    n.kids.clear();
    n.parent = parent;
    n.seq = seq;
    n.stamp_ns = now;
    heads[keys[0]] = i;
    if (parent != kNil) {
      if (IsLeaf(parent)) leaves.erase({nodes[parent].seq, parent});
      nodes[parent].kids.push_back(i);
    }
    leaves.insert({seq, i});
    blocks += keys.size();
    return i;
  }

  // Splits node i after its first m keys; the tail becomes its only child and keeps its
  // touch (and its leaf entry). REQUIRES: 0 < m < keys.size().
  void Split(uint32_t i, size_t m) {
    const bool leaf = IsLeaf(i);
    uint32_t t;
    if (!free.empty()) {
      t = free.back();
      free.pop_back();
    } else {
      t = static_cast<uint32_t>(nodes.size());
      nodes.emplace_back();
    }
    Node& head = nodes[i];
    Node& tail = nodes[t];
    tail.keys.assign(head.keys.begin() + static_cast<ptrdiff_t>(m), head.keys.end());
    head.keys.resize(m);
    tail.kids.swap(head.kids);
    head.kids.assign(1, t);
    tail.parent = i;
    tail.seq = head.seq;
    tail.stamp_ns = head.stamp_ns;
    for (uint32_t k : tail.kids) nodes[k].parent = t;
    heads[tail.keys[0]] = t;
    if (leaf) {
      leaves.erase({tail.seq, i});
      leaves.insert({tail.seq, t});
    }
  }

  // Removes node i, a leaf (its keys must have left the holder table).
  void RemoveNode(uint32_t i) {
    Node& n = nodes[i];
    heads.erase(n.keys[0]);
    leaves.erase({n.seq, i});
    if (n.parent != kNil) {
      std::vector<uint32_t>& siblings = nodes[n.parent].kids;
      siblings.erase(std::find(siblings.begin(), siblings.end(), i));
      if (siblings.empty()) leaves.insert({nodes[n.parent].seq, n.parent});
    }
    n.keys = {};
    n.kids = {};
    n.parent = kNil;
    free.push_back(i);
  }

  uint64_t Bytes() const {
    return sizeof(PodLru) + heads.capacity() * (sizeof(BlockKey) + sizeof(uint32_t) + 1) +
           nodes.capacity() * sizeof(Node) + free.capacity() * sizeof(uint32_t) +
           blocks * sizeof(BlockKey) + leaves.size() * 2 * sizeof(std::pair<uint64_t, uint32_t>);
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
  while (!lru.leaves.empty()) {
    const uint32_t i = lru.leaves.begin()->second;
    PodLru::Node& n = lru.nodes[i];
    const bool over = lru.blocks > options_.max_blocks_per_pod;
    const bool old = now_ns - n.stamp_ns > ttl;
    if (!over && !old) break;
    // Over capacity: cut only the excess from the tail; expired: the whole run.
    const size_t cut = old ? n.keys.size()
                           : static_cast<size_t>(std::min<uint64_t>(
                                 lru.blocks - options_.max_blocks_per_pod, n.keys.size()));
    for (size_t k = n.keys.size() - cut; k < n.keys.size(); ++k) {
      core_.table().Clear(n.keys[k], lru.holder);
    }
    lru.blocks -= cut;
    (old ? by_ttl : by_cap) += cut;
    if (cut == n.keys.size()) {
      lru.RemoveNode(i);
    } else {
      n.keys.resize(n.keys.size() - cut);
    }
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
  if (lru.blocks == 0) {  // give memory back after a burst
    lru.nodes = {};
    lru.free = {};
    lru.heads = {};
    lru.leaves.clear();
  }
  return n;
}

void ApproxIndex::PublishLocked(PodLru& lru) {
  lru.size.store(lru.blocks, std::memory_order_relaxed);
  core_.SetPodBytes(lru.bytes, lru.Bytes());
  if (lru.gauge) lru.gauge->Set(static_cast<double>(lru.blocks));
}

void ApproxIndex::RecordKeys(std::span<const BlockKey> keys, const std::string& pod) {
  if (keys.empty()) return;
  auto [lru, lock] = pods_.LockLive(pod, [&](PodLru& created) {
    created.holder = core_.directory().Acquire(pod, kTier);  // the pod's one holder
  });
  const int64_t now = options_.clock->Now().time_since_epoch().count();
  const uint64_t seq = ++lru->next_seq;
  // Walk the runs the prompt follows, touching each.
  uint32_t at = kNil;
  size_t p = 0;
  bool collision = false;
  while (p < keys.size()) {
    const auto it = lru->heads.find(keys[p]);
    if (it == lru->heads.end()) break;
    const uint32_t i = it->second;
    if (lru->nodes[i].parent != at) {  // the key continues another chain: a hash collision
      collision = true;
      break;
    }
    const std::vector<BlockKey>& run = lru->nodes[i].keys;
    const size_t run_size = run.size();
    const size_t limit = std::min(run_size, keys.size() - p);
    size_t m = 1;  // run[0] == keys[p] by the lookup
    while (m < limit && run[m] == keys[p + m]) ++m;
    if (m < run_size) lru->Split(i, m);  // the prompt diverges or ends inside the run
    lru->Touch(i, seq, now);
    at = i;
    p += m;
    if (m < run_size) break;  // diverged (the rest is new) or ended
  }
  uint64_t added = 0;
  if (p < keys.size() && !collision) {
    const std::span<const BlockKey> fresh = keys.subspan(p);
    for (const BlockKey key : fresh) core_.table().PrefetchForWrite(key, lru->holder);
    for (const BlockKey key : fresh) core_.table().Set(key, lru->holder);
    lru->AddNode(at, fresh, seq, now);
    added = fresh.size();
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
  for (const PodLru::Node& n : lru->nodes) {
    for (const BlockKey key : n.keys) core_.table().Clear(key, lru->holder);
  }
  core_.AddMemberships(-static_cast<int64_t>(lru->blocks));
  lru->nodes = {};
  lru->free = {};
  lru->heads = {};
  lru->leaves.clear();
  lru->blocks = 0;
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
