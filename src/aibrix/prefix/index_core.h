// IndexCore: the skeleton ExactIndex and ApproxIndex share. Both are "a registry of pods, each
// writing its own holder bits into one HolderTable, read by the same lock-free jump search";
// they differ only in how a pod's holdings are fed (engine events vs routing decisions).
//
// The core holds, once:
//  * the block hasher, the EpochManager, the HolderTable and the HolderDirectory;
//  * the membership and per-pod byte counters (bytes() = table + pods' own structures);
//  * the query body (MatchKeys / MatchTokens / Match): a ReadGuard, one directory snapshot,
//    SearchPrefix, then each holder's (pod, tier) visited — no lock, no allocation per query;
//  * the pod registry (PodRegistry<Pod>, below): pod key -> shared state, with the
//    retry-on-removed lookup writers use, and the per-pod size gauge.
//
// Thread safety: queries take no lock and may run on any number of threads concurrently with
// writers. The counters are atomics. PodRegistry takes its own std::shared_mutex (never held
// while a pod's mutex is taken: lock order is registry, then nothing; pod mutexes are taken
// after the registry lock is released). A pod's mutex guards what PodBase says it guards.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "aibrix/prefix/block_hash.h"
#include "aibrix/prefix/epoch.h"
#include "aibrix/prefix/holder_table.h"
#include "aibrix/prefix/types.h"

namespace prometheus {
class Gauge;
template <typename T>
class Family;
}  // namespace prometheus

namespace aibrix::prefix {

// Receives one answer of a query: valid only during the call.
using MatchVisitor =
    absl::FunctionRef<void(std::string_view pod, std::string_view tier, uint32_t blocks)>;

// The holder side of an index: hasher, epoch, table, directory, counters and queries.
class IndexCore {
 public:
  // `source` tags Match() results and the per-pod gauge; `pod_blocks` (optional, owned by
  // the caller's registry, must outlive the core) is the per-pod memberships gauge family.
  IndexCore(int block_size, ChainScheme scheme, MatchSource source,
            prometheus::Family<prometheus::Gauge>* pod_blocks);
  IndexCore(const IndexCore&) = delete;
  IndexCore& operator=(const IndexCore&) = delete;

  const BlockHasher& hasher() const { return hasher_; }
  MatchSource source() const { return source_; }
  EpochManager& epoch() const { return epoch_; }
  HolderTable& table() { return table_; }
  HolderDirectory& directory() { return directory_; }

  // Queries. `keys` must come from hasher() with ContextRoot({model, adapter, 0}). Visits
  // every holder (pod, tier) holding at least the first block, with its leading blocks.
  // A visitor may itself query (any index): each level gets its own result buffer.
  void MatchKeys(std::span<const BlockKey> keys, MatchVisitor visit) const;
  // Hashes lazily (stops hashing when no holder is left) and visits like MatchKeys.
  void MatchTokens(const HashContext& ctx, std::span<const uint32_t> tokens,
                   MatchVisitor visit) const;
  // Collected results tagged with source(), sorted by matched blocks (desc), pod, tier.
  std::vector<PodMatch> Match(const HashContext& ctx, std::span<const uint32_t> tokens) const;

  // Memberships (block, holder) in total. Writers add their net change.
  uint64_t memberships() const { return memberships_.load(std::memory_order_relaxed); }
  void AddMemberships(int64_t delta) {
    memberships_.fetch_add(static_cast<uint64_t>(delta), std::memory_order_relaxed);
  }
  // Records that a pod's own structures now take `bytes` (its previous figure is in
  // `*pod_bytes`). REQUIRES: the caller holds the pod's mutex (the only writer of *pod_bytes).
  void SetPodBytes(std::atomic<uint64_t>& pod_bytes, uint64_t bytes) {
    const uint64_t old = pod_bytes.load(std::memory_order_relaxed);
    if (old == bytes) return;  // the common batch: no RMW on the shared counter
    pod_bytes.store(bytes, std::memory_order_relaxed);
    pod_bytes_.fetch_add(bytes - old, std::memory_order_relaxed);
  }
  // Bytes of the table (capacities) plus every pod's own structures.
  uint64_t bytes() const { return table_.bytes() + pod_bytes_.load(std::memory_order_relaxed); }

  // The per-pod gauge for `pod` (nullptr without a registry), and its removal.
  prometheus::Gauge* AddPodGauge(const std::string& pod);
  void RemovePodGauge(prometheus::Gauge* gauge);

 private:
  template <typename Cursor>
  void Search(Cursor& cursor, MatchVisitor visit) const;

  // Constant after construction.
  const BlockHasher hasher_;
  const MatchSource source_;
  prometheus::Family<prometheus::Gauge>* const pod_blocks_;
  // Thread-safe on their own (see holder_table.h, epoch.h).
  mutable EpochManager epoch_;
  HolderTable table_;
  HolderDirectory directory_;
  std::atomic<uint64_t> memberships_{0};
  std::atomic<uint64_t> pod_bytes_{0};
};

// What every pod entry of either index carries.
struct PodBase {
  explicit PodBase(std::string key) : pod_key(std::move(key)) {}
  const std::string pod_key;
  std::mutex mu;
  // Guarded by mu:
  bool removed = false;                // retired by RemovePod: writers look the pod up again
  prometheus::Gauge* gauge = nullptr;  // memberships of this pod (null without a registry)
  // Written under mu, readable without it:
  std::atomic<uint64_t> bytes{0};  // this pod's own structures (see IndexCore::SetPodBytes)
};

// Pod key -> shared pod state (Pod derives from PodBase). A pod found here may be retired
// concurrently by Take(); writers use LockLive(), which retries until it holds a live pod.
template <typename Pod>
class PodRegistry {
 public:
  explicit PodRegistry(IndexCore& core) : core_(core) {}
  PodRegistry(const PodRegistry&) = delete;
  PodRegistry& operator=(const PodRegistry&) = delete;
  // Removes the pods' gauges (the registry that owns the family outlives the index).
  ~PodRegistry() {
    std::unique_lock lock(mu_);
    for (auto& [key, pod] : pods_) {
      std::lock_guard<std::mutex> l(pod->mu);
      if (pod->gauge) core_.RemovePodGauge(pod->gauge);
    }
  }

  // The pod's state, or nullptr when unknown.
  std::shared_ptr<Pod> Find(const std::string& key) const {
    std::shared_lock lock(mu_);
    auto it = pods_.find(key);
    return it == pods_.end() ? nullptr : it->second;
  }

  // The pod's state, created (with its gauge, then `init(pod)` under the registry's lock)
  // when unknown.
  template <typename Init>
  std::shared_ptr<Pod> GetOrCreate(const std::string& key, Init init) {
    if (auto pod = Find(key)) return pod;
    std::unique_lock lock(mu_);
    auto& slot = pods_[key];
    if (!slot) {
      slot = std::make_shared<Pod>(key);
      slot->gauge = core_.AddPodGauge(key);
      init(*slot);
    }
    return slot;
  }

  // GetOrCreate, locked and not retired: the returned lock holds the pod's mutex.
  template <typename Init>
  std::pair<std::shared_ptr<Pod>, std::unique_lock<std::mutex>> LockLive(const std::string& key,
                                                                         Init init) {
    for (;;) {  // a concurrent Take may retire the state we found
      std::shared_ptr<Pod> pod = GetOrCreate(key, init);
      std::unique_lock<std::mutex> lock(pod->mu);
      if (!pod->removed) return {std::move(pod), std::move(lock)};
    }
  }

  // Unregisters the pod and returns its state (nullptr when unknown). The caller empties it
  // under its mutex and calls Retire().
  std::shared_ptr<Pod> Take(const std::string& key) {
    std::unique_lock lock(mu_);
    auto it = pods_.find(key);
    if (it == pods_.end()) return nullptr;
    std::shared_ptr<Pod> pod = std::move(it->second);
    pods_.erase(it);
    return pod;
  }
  // Marks a taken pod retired: its bytes leave the total, its gauge is removed.
  // REQUIRES: pod.mu held.
  void Retire(Pod& pod) {
    pod.removed = true;
    core_.SetPodBytes(pod.bytes, 0);
    if (pod.gauge) core_.RemovePodGauge(pod.gauge);
    pod.gauge = nullptr;
  }

  // Every registered pod (a copy of the pointers: no lock is held afterwards).
  std::vector<std::shared_ptr<Pod>> All() const {
    std::vector<std::shared_ptr<Pod>> out;
    std::shared_lock lock(mu_);
    out.reserve(pods_.size());
    for (const auto& [key, pod] : pods_) out.push_back(pod);
    return out;
  }

  // The pod maximising `score(pod)` (> 0), or nullptr. `score` runs under the registry's
  // shared lock: it must not lock the pod.
  template <typename Score>
  std::shared_ptr<Pod> Max(Score score) const {
    std::shared_ptr<Pod> best;
    uint64_t best_score = 0;
    std::shared_lock lock(mu_);
    for (const auto& [key, pod] : pods_) {
      if (const uint64_t s = score(*pod); s > best_score) {
        best_score = s;
        best = pod;
      }
    }
    return best;
  }

  // `stats(key)` of every registered pod, sorted by pod key; a pod removed in between (stats
  // returns nullopt) is skipped. `stats` runs without the registry lock.
  template <typename StatsFn>
  std::vector<PodIndexStats> AllStats(StatsFn stats) const {
    std::vector<std::string> keys;
    {
      std::shared_lock lock(mu_);
      keys.reserve(pods_.size());
      for (const auto& [key, pod] : pods_) keys.push_back(key);
    }
    std::sort(keys.begin(), keys.end());
    std::vector<PodIndexStats> out;
    for (const std::string& key : keys) {
      if (std::optional<PodIndexStats> s = stats(key)) out.push_back(std::move(*s));
    }
    return out;
  }

 private:
  IndexCore& core_;
  // std::shared_mutex rather than absl::Mutex: Debian builds Abseil without TSan
  // annotations, so TSan cannot see absl::Mutex. Never held while taking a pod's mutex
  // (except in the destructor, when no other thread uses the index).
  mutable std::shared_mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Pod>> pods_;  // guarded by mu_
};

}  // namespace aibrix::prefix
