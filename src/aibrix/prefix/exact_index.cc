#include "aibrix/prefix/exact_index.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <mutex>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "aibrix/common/logging.h"
#include "aibrix/prefix/engine_map.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace aibrix::prefix {
namespace {

constexpr uint64_t kRootParent = 0;  // parent link of a block that starts at token 0
constexpr uint64_t kZeroEngine = 0x9E3779B97F4A7C15ULL;
constexpr size_t kMaxTiers = 8;
constexpr size_t kPrefetchDistance = 4;  // blocks per stage of the write pipelines

// The reverse maps' key for an engine hash: the group folded in, then mixed (Mix64 is a
// bijection with Mix64(0) = 0, so keys stay distinct and non-zero), so the maps take home
// slots straight from the key. Parent links and orphan lists hold these keys' refs
// (EngineMap::Ref), which must not be 0.
uint64_t EngineKey(kv::EngineHash h, int64_t group) {
  const uint64_t k = group == 0 ? h : h ^ Mix64(0xC0FFEE00ULL + static_cast<uint64_t>(group));
  const uint64_t x = Mix64(k == 0 ? kZeroEngine : k);
  return EngineMap::Ref(x) == 0 ? x | 0x100 : x;
}

std::string NormalizeTier(const std::optional<std::string>& medium) {
  if (!medium || medium->empty()) return "GPU";
  std::string t = *medium;
  for (char& c : t) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return t;
}

bool IsMainGroup(const kv::BlockStored& ev) {
  if (ev.kv_cache_spec_kind) {
    const std::string& k = *ev.kv_cache_spec_kind;
    return k == "full_attention" || k == "mla_attention" || k == "sink_full_attention";
  }
  return ev.group_idx.value_or(0) == 0;
}

std::string AdapterOf(const kv::BlockStored& ev) {
  if (ev.lora_name) return *ev.lora_name;
  if (ev.lora_id && *ev.lora_id >= 0) return fmt::format("#lora-id={}", *ev.lora_id);
  return "";
}

// A removed entry that still had held children. Whether its descendants lose their
// anchoring is settled once per batch (PodWriter::Settle), so a removal and a re-store of
// the same block within one batch cost O(1) whatever hangs below it.
struct PendingRemoval {
  uint64_t e;       // engine key
  BlockKey our;     // its key in the table
  bool clear_owed;  // it was anchored: its table bit is cleared at settlement
};

// One (pod, tier).
struct Holder {
  HolderId id = 0;
  std::string tier;
  size_t stat_slot = 0;  // index in PodState::tier_stats
  EngineMap map;
  // Entries whose parent is absent, by the missing parent's ref.
  absl::flat_hash_map<uint64_t, std::vector<uint64_t>> orphans;
  // Anchored entries sharing an our-key with another anchored entry (count beyond the first).
  absl::flat_hash_map<BlockKey, uint32_t> extra_refs;
  // Children index: parent ref -> keys of the entries whose parent link names it (present
  // parent or not). Built from one scan of the map the first time a removed block has
  // children or a re-anchoring must walk down (engines that evict chain tails first never
  // need it), then kept up to date by every insert and erase: O(1) per change, never
  // rebuilt. Reset by ClearAll.
  bool has_kids = false;
  absl::flat_hash_map<uint64_t, absl::InlinedVector<uint64_t, 1>> kids;
  std::vector<PendingRemoval> pending;  // settled at the end of the batch
  size_t hand = 0;                      // eviction clock hand

  size_t bytes() const {
    return map.bytes() +
           orphans.capacity() * (sizeof(uint64_t) + sizeof(std::vector<uint64_t>) + 1) +
           extra_refs.capacity() * (sizeof(BlockKey) + sizeof(uint32_t) + 1) +
           kids.capacity() * (sizeof(uint64_t) + sizeof(absl::InlinedVector<uint64_t, 1>) + 1) +
           pending.capacity() * sizeof(PendingRemoval);
  }
};

}  // namespace

struct ExactIndex::Metrics {
  explicit Metrics(prometheus::Registry& r)
      : pod_blocks(prometheus::BuildGauge()
                       .Name("aibrix_prefix_index_pod_blocks")
                       .Help("Block memberships held per pod (all tiers) in the prefix index")
                       .Register(r)),
        model_blocks(prometheus::BuildGauge()
                         .Name("aibrix_prefix_index_model_blocks")
                         .Help("Block memberships held per model in the prefix index")
                         .Register(r)),
        bytes_family(prometheus::BuildGauge()
                         .Name("aibrix_prefix_index_bytes")
                         .Help("Bytes used by the prefix index, counted from table capacities")
                         .Register(r)),
        events(prometheus::BuildCounter()
                   .Name("aibrix_prefix_index_events_total")
                   .Help("KV events applied to the exact prefix index, by type")
                   .Register(r)),
        blocks(prometheus::BuildCounter()
                   .Name("aibrix_prefix_index_blocks_total")
                   .Help("Blocks stored/removed/evicted in the exact prefix index")
                   .Register(r)),
        dropped(prometheus::BuildCounter()
                    .Name("aibrix_prefix_index_dropped_total")
                    .Help("Event blocks the exact prefix index could not apply, by reason")
                    .Register(r)),
        bytes(bytes_family.Add({{"source", "events"}})),
        stored_events(events.Add({{"type", "BlockStored"}})),
        removed_events(events.Add({{"type", "BlockRemoved"}})),
        cleared_events(events.Add({{"type", "AllBlocksCleared"}})),
        stored_blocks(blocks.Add({{"op", "stored"}})),
        removed_blocks(blocks.Add({{"op", "removed"}})),
        evicted_blocks(blocks.Add({{"op", "evicted"}})),
        unknown_parent(dropped.Add({{"reason", "unknown_parent"}})),
        bad_block_size(dropped.Add({{"reason", "block_size_mismatch"}})),
        bad_length(dropped.Add({{"reason", "token_length_mismatch"}})),
        non_main_group(dropped.Add({{"reason", "non_main_group"}})),
        too_many_tiers(dropped.Add({{"reason", "too_many_tiers"}})),
        self_reference(dropped.Add({{"reason", "self_reference"}})),
        unknown_remove(dropped.Add({{"reason", "unknown_remove"}})),
        hash_collision(dropped.Add({{"reason", "hash_collision"}})),
        fixup_scans(prometheus::BuildCounter()
                        .Name("aibrix_prefix_index_fixup_scans_total")
                        .Help("Scans of a pod's map because a removed block still had held "
                              "children (engines normally evict chain tails first)")
                        .Register(r)
                        .Add({})) {}

  prometheus::Family<prometheus::Gauge>& pod_blocks;
  prometheus::Family<prometheus::Gauge>& model_blocks;
  prometheus::Family<prometheus::Gauge>& bytes_family;
  prometheus::Family<prometheus::Counter>& events;
  prometheus::Family<prometheus::Counter>& blocks;
  prometheus::Family<prometheus::Counter>& dropped;
  prometheus::Gauge& bytes;
  prometheus::Counter& stored_events;
  prometheus::Counter& removed_events;
  prometheus::Counter& cleared_events;
  prometheus::Counter& stored_blocks;
  prometheus::Counter& removed_blocks;
  prometheus::Counter& evicted_blocks;
  prometheus::Counter& unknown_parent;
  prometheus::Counter& bad_block_size;
  prometheus::Counter& bad_length;
  prometheus::Counter& non_main_group;
  prometheus::Counter& too_many_tiers;
  prometheus::Counter& self_reference;
  prometheus::Counter& unknown_remove;
  prometheus::Counter& hash_collision;
  prometheus::Counter& fixup_scans;

  // Scrape path only (UpdateGauges): the event path never takes it.
  std::mutex scrape_mu;
  absl::flat_hash_map<std::string, prometheus::Gauge*> models;  // guarded by scrape_mu
};

// PodBase: key, mutex, removed flag, gauge, bytes (index_core.h).
struct ExactIndex::PodState : PodBase {
  using PodBase::PodBase;
  // Guarded by mu:
  std::string model;
  std::vector<std::unique_ptr<Holder>> holders;
  absl::flat_hash_set<int64_t> main_groups;
  std::vector<BlockKey> keys;   // scratch
  std::vector<uint64_t> ekeys;  // scratch
  std::vector<size_t> slots;    // scratch
  // Table updates deferred to the end of an event (PodWriter), kept to reuse their memory.
  std::vector<std::pair<BlockKey, Holder*>> table_sets, table_clears;
  std::vector<PendingRemoval> settling;  // scratch of Settle
  std::vector<uint64_t> walk;            // scratch of Reanchor
  // Written under mu, readable without it (Stats, /cache/pods: never blocked by a writer).
  // tier_stats[i].tier is written once, before tier_count is raised past i (release).
  struct TierStat {
    std::string tier;
    std::atomic<uint64_t> blocks{0};
  };
  std::array<TierStat, kMaxTiers> tier_stats;
  std::atomic<size_t> tier_count{0};
  std::atomic<std::shared_ptr<const std::string>> model_name;  // the model last reported
  std::atomic<uint64_t> anchor_work{0};  // for tests: entries visited by (un)anchoring and scans
  std::atomic<uint64_t> entries{0};
  std::atomic<uint64_t> unplaceable{0};
  std::atomic<uint64_t> unknown_removes{0};
  std::atomic<uint64_t> skipped{0};
  std::atomic<uint64_t> evicted{0};
};

namespace {

// Applies events to one pod. Lives for one locked section.
class PodWriter {
 public:
  using PodState = ExactIndex::PodState;
  PodWriter(PodState& pod, IndexCore& core)
      : pod_(pod),
        core_(core),
        table_(core.table()),
        dir_(core.directory()),
        hasher_(core.hasher()),
        epoch_(core.epoch()) {}
  ~PodWriter() { Flush(); }

  // Applies deferred table updates and publishes the batched entry counts.
  // REQUIRES: called before the pod's mutex is released.
  void Flush() {
    FlushTable();
    for (const auto& h : pod_.holders) {
      pod_.tier_stats[h->stat_slot].blocks.store(h->map.size(), std::memory_order_relaxed);
    }
    if (work_ != 0) {
      pod_.anchor_work.fetch_add(work_, std::memory_order_relaxed);
      work_ = 0;
    }
    if (delta_ == 0) return;
    pod_.entries.fetch_add(static_cast<uint64_t>(delta_), std::memory_order_relaxed);
    core_.AddMemberships(delta_);
    delta_ = 0;
  }

  uint64_t stored_events = 0, removed_events = 0, cleared_events = 0;  // applied, by type
  uint64_t fixup_scans = 0;  // holder scans for removed blocks that still had children
  uint64_t stored = 0, removed = 0, unknown_parent = 0, bad_block_size = 0, bad_length = 0,
           non_main = 0, too_many_tiers = 0, self_ref = 0, unknown_remove = 0, collisions = 0;

  Holder* FindHolder(const std::string& tier) {
    for (auto& h : pod_.holders) {
      if (h->tier == tier) return h.get();
    }
    return nullptr;
  }

  Holder* HolderFor(const std::string& tier) {
    if (Holder* h = FindHolder(tier)) return h;
    if (pod_.holders.size() >= kMaxTiers) return nullptr;
    auto h = std::make_unique<Holder>();
    h->tier = tier;
    h->id = dir_.Acquire(pod_.pod_key, tier);
    // Holders leave a pod only when RemovePod retires it, so slots are never reused: the
    // tier name is written once, then published.
    const size_t slot = pod_.holders.size();
    pod_.tier_stats[slot].tier = tier;
    h->stat_slot = slot;
    pod_.tier_count.store(slot + 1, std::memory_order_release);
    pod_.holders.push_back(std::move(h));
    return pod_.holders.back().get();
  }

  // Applies one event of any kind, counting it.
  void Apply(const kv::Event& event, const std::string& model) {
    if (const auto* s = std::get_if<kv::BlockStored>(&event)) {
      Stored(*s, model);
      ++stored_events;
    } else if (const auto* r = std::get_if<kv::BlockRemoved>(&event)) {
      Removed(*r);
      ++removed_events;
    } else {
      ClearAll();
      ++cleared_events;
    }
  }

  void Stored(const kv::BlockStored& ev, const std::string& model) {
    const size_t n = ev.block_hashes.size();
    if (!IsMainGroup(ev)) {
      non_main += n;
      return;
    }
    const int64_t group = ev.group_idx.value_or(0);
    pod_.main_groups.insert(group);
    Holder* h = HolderFor(NormalizeTier(ev.medium));
    if (h == nullptr) {
      too_many_tiers += n;
      return;
    }
    if (n == 0) return;
    if (ev.token_ids.empty()) return StoredInAnotherTier(ev, group, *h);
    if (!TokensFit(ev)) return;
    // The engine keys first, so that the parent's lines (of a block stored long ago, not
    // cached) load meanwhile.
    const uint64_t parent_e =
        ev.parent_block_hash ? EngineKey(*ev.parent_block_hash, group) : kRootParent;
    if (parent_e != kRootParent) h->map.PrefetchProbe(parent_e);
    if (!ComputeEngineKeys(ev, group, parent_e)) return;
    const std::optional<ParentLink> parent = FindParent(ev, model, *h, parent_e);
    if (!parent) return;
    pod_.keys.resize(n);
    hasher_.HashInto(parent->key, ev.token_ids, pod_.keys.data());
    InsertChain(*h, parent_e, parent->slot);
    FlushTable();
  }

 private:
  // Where a stored event's first block hangs: our key of its parent (or the context root),
  // and the parent's slot in the event's holder (kNpos when elsewhere or at the root).
  struct ParentLink {
    BlockKey key;
    size_t slot;
  };

  // A BlockStored without tokens: its hashes, known in the pod's other tiers, are now also
  // held in `h`'s tier (same key, same parent). Unknown hashes are counted.
  void StoredInAnotherTier(const kv::BlockStored& ev, int64_t group, Holder& h) {
    for (kv::EngineHash hash : ev.block_hashes) {
      const uint64_t e = EngineKey(hash, group);
      bool found = false;
      for (auto& other : pod_.holders) {
        if (other.get() == &h) continue;
        const size_t i = other->map.Find(e);
        if (i == EngineMap::kNpos) continue;
        Insert(h, e, other->map.our(i), other->map.parent(i));
        found = true;
        break;
      }
      if (!found && h.map.Find(e) == EngineMap::kNpos) ++unknown_parent;
    }
  }

  // False (counted) when the event's blocks cannot line up with the index's.
  bool TokensFit(const kv::BlockStored& ev) {
    const size_t n = ev.block_hashes.size();
    if (ev.block_size != hasher_.block_size()) {
      bad_block_size += n;
      return false;
    }
    if (ev.token_ids.size() != n * static_cast<size_t>(hasher_.block_size())) {
      bad_length += n;
      return false;
    }
    return true;
  }

  // Fills pod_.ekeys with the event's engine keys. False (counted) when a block names itself
  // or its predecessor as its own hash (self-reference): the event is skipped.
  bool ComputeEngineKeys(const kv::BlockStored& ev, int64_t group, uint64_t parent_e) {
    const size_t n = ev.block_hashes.size();
    auto& ekeys = pod_.ekeys;
    ekeys.resize(n);
    for (size_t i = 0; i < n; ++i) {
      ekeys[i] = EngineKey(ev.block_hashes[i], group);
      if (ekeys[i] == (i == 0 ? parent_e : ekeys[i - 1])) {
        self_ref += n;
        return false;
      }
    }
    return true;
  }

  // The parent's key: looked up in `h`'s map first, then the pod's other tiers; the context
  // root when the event has no parent. nullopt (counted) when the parent is unknown.
  std::optional<ParentLink> FindParent(const kv::BlockStored& ev, const std::string& model,
                                       const Holder& h, uint64_t parent_e) {
    if (parent_e == kRootParent) {
      const std::string adapter = AdapterOf(ev);
      return ParentLink{ContextRoot(HashContext{model, adapter, 0}), EngineMap::kNpos};
    }
    size_t i = h.map.Find(parent_e);
    const size_t parent_slot = i;
    const Holder* where = &h;
    for (size_t t = 0; i == EngineMap::kNpos && t < pod_.holders.size(); ++t) {
      where = pod_.holders[t].get();
      if (where != &h) i = where->map.Find(parent_e);
    }
    if (i == EngineMap::kNpos) {
      unknown_parent += ev.block_hashes.size();
      return std::nullopt;
    }
    return ParentLink{where->map.our(i), parent_slot};
  }

  // Inserts the event's blocks (pod_.ekeys -> pod_.keys), block i chained to block i-1.
  // Three-stage software pipeline (a burst of prefetches for the whole event overflows the
  // core's miss buffers): block i + 2D starts loading its map key lines and table lines;
  // block i + D probes the (now cached) key lines and starts loading the value and meta
  // lines of the slot it will fill (linear probes end several slots past the home slot,
  // often on another line); block i is inserted. The table updates run after the whole
  // event (FlushTable), long after their lines were requested.
  void InsertChain(Holder& h, uint64_t parent_e, size_t parent_slot) {
    const auto& ekeys = pod_.ekeys;
    const auto& keys = pod_.keys;
    const size_t n = ekeys.size();
    EngineMap& m = h.map;
    const auto stage1 = [&](size_t j) {
      m.PrefetchProbe(ekeys[j]);
      table_.PrefetchForWrite(keys[j], h.id);
    };
    const auto stage2 = [&](size_t j) { m.PrefetchSlot(m.ProbeSlot(ekeys[j])); };
    constexpr size_t D = kPrefetchDistance;
    for (size_t j = 0; j < std::min(n, 2 * D); ++j) stage1(j);
    for (size_t j = 0; j < std::min(n, D); ++j) stage2(j);
    for (size_t i = 0; i < n; ++i) {
      if (i + 2 * D < n) stage1(i + 2 * D);
      if (i + D < n) stage2(i + D);
      parent_slot = Insert(h, ekeys[i], keys[i], EngineMap::Ref(i == 0 ? parent_e : ekeys[i - 1]),
                           parent_slot);
      if (parent_slot == EngineMap::kNpos) {  // refused (ref collision): so are its children
        collisions += n - 1 - i;
        break;
      }
    }
  }

 public:
  void Removed(const kv::BlockRemoved& ev) {
    const size_t n = ev.block_hashes.size();
    const int64_t group = ev.group_idx.value_or(0);
    if (!pod_.main_groups.contains(group)) {
      non_main += n;
      return;
    }
    Holder* h = FindHolder(NormalizeTier(ev.medium));
    if (h == nullptr) {
      unknown_remove += n;
      return;
    }
    // Software pipeline (as in Stored): block i + 2D starts loading its control bytes and
    // home slot; block i + D finds its slot and starts loading it; block i is removed from
    // the map (erases move nothing, so the slot found for it still holds it) and starts
    // loading its table line. The table clears run after the event (FlushTable).
    auto& ekeys = pod_.ekeys;
    ekeys.resize(n);
    auto& slots = pod_.slots;
    slots.resize(n);
    EngineMap& m = h->map;
    for (size_t i = 0; i < n; ++i) ekeys[i] = EngineKey(ev.block_hashes[i], group);
    const auto stage2 = [&](size_t j) {
      slots[j] = m.ProbeSlot(ekeys[j]);
      m.PrefetchSlot(slots[j]);
    };
    constexpr size_t D = kPrefetchDistance;
    for (size_t j = 0; j < std::min(n, 2 * D); ++j) m.PrefetchProbe(ekeys[j]);
    for (size_t j = 0; j < std::min(n, D); ++j) stage2(j);
    for (size_t i = 0; i < n; ++i) {
      if (i + 2 * D < n) m.PrefetchProbe(ekeys[i + 2 * D]);
      if (i + D < n) stage2(i + D);
      if (!Remove(*h, ekeys[i], i + 1 < n ? ekeys[i + 1] : kRootParent, slots[i])) {
        ++unknown_remove;
      }
    }
    FlushTable();
    h->map.MaybeShrink();
  }

  void ClearAll() {
    FlushTable();
    for (auto& h : pod_.holders) {
      const EngineMap& m = h->map;
      for (size_t i = 0; i < m.capacity(); ++i) {
        if (m.key(i) != 0 && (m.meta(i) & EngineMap::kAnchored)) table_.Clear(m.our(i), h->id);
      }
      // Removed entries whose clear was deferred to the batch's settlement.
      for (const PendingRemoval& p : h->pending) {
        if (p.clear_owed) table_.Clear(p.our, h->id);
      }
      AddEntries(-static_cast<int64_t>(m.size()));
      h->map.Reset();
      h->orphans = {};
      h->extra_refs = {};
      h->kids = {};
      h->has_kids = false;
      h->pending = {};
      h->hand = 0;
    }
  }

  // Settles every holder's pending removals (end of a batch). REQUIRES: before Flush.
  void SettleAll() {
    for (auto& h : pod_.holders) Settle(*h);
  }

  // Evicts up to `count` memberships, chain tails first. Returns how many.
  uint64_t Evict(uint64_t count) {
    uint64_t done = 0;
    std::vector<Holder*> order;
    for (auto& h : pod_.holders) order.push_back(h.get());
    std::sort(order.begin(), order.end(),
              [](Holder* a, Holder* b) { return a->map.size() > b->map.size(); });
    for (Holder* h : order) {
      EngineMap& m = h->map;
      size_t budget = 2 * m.capacity();  // bounded scan (cycles in hostile input)
      while (done < count && m.size() > 0 && budget-- > 0) {
        if (h->hand >= m.capacity()) h->hand = 0;
        const size_t i = h->hand;
        if (m.key(i) == 0 || (m.meta(i) & EngineMap::kCcMask) != 0) {
          ++h->hand;
          continue;
        }
        // A leaf: evict it and walk up while the parent became a leaf.
        uint64_t e = m.key(i);
        while (done < count) {
          const uint64_t parent = m.parent(m.Find(e));
          Remove(*h, e);
          ++done;
          if (parent == kRootParent) break;
          const size_t p = m.FindRef(parent);
          if (p == EngineMap::kNpos || (m.meta(p) & EngineMap::kCcMask) != 0) break;
          e = m.key(p);
        }
      }
      Settle(*h);
      FlushTable();
      m.MaybeShrink();
      if (done >= count) break;
    }
    return done;
  }

 private:
  void AddEntries(int64_t d) { delta_ += d; }

  // Table updates are deferred and applied in one pass (FlushTable) after the map work of an
  // event, so the table slots prefetched at the start have arrived. Sets and clears are
  // never pending together (each flushes the other kind first), so order is preserved.
  void SetHeld(Holder& h, BlockKey our) {
    if (!pending_clear_.empty()) FlushTable();
    pending_set_.push_back({our, &h});
  }
  void ClearHeld(Holder& h, BlockKey our) {
    if (!pending_set_.empty()) FlushTable();
    if (h.extra_refs.empty()) {
      pending_clear_.push_back({our, &h});
      return;
    }
    if (auto it = h.extra_refs.find(our); it != h.extra_refs.end()) {
      if (--it->second == 0) h.extra_refs.erase(it);
      return;
    }
    pending_clear_.push_back({our, &h});
  }

 public:
  void FlushTable() {
    if (pending_set_.size() + pending_clear_.size() > 1) {
      EpochManager::ReadGuard guard(epoch_);  // released before Set/Clear (they may rebuild)
      for (const auto& [our, h] : pending_set_) table_.Touch(our, h->id);
      for (const auto& [our, h] : pending_clear_) table_.Touch(our, h->id);
    }
    for (const auto& [our, h] : pending_set_) {
      if (table_.Set(our, h->id)) ++h->extra_refs[our];
    }
    pending_set_.clear();
    for (const auto& [our, h] : pending_clear_) table_.Clear(our, h->id);
    pending_clear_.clear();
  }

 private:
  static void IncCc(EngineMap& m, size_t i) {
    uint8_t& meta = m.meta(i);
    if ((meta & EngineMap::kCcMask) != EngineMap::kCcMask) ++meta;
  }
  static void DecCc(EngineMap& m, size_t i) {
    uint8_t& meta = m.meta(i);
    const uint8_t cc = meta & EngineMap::kCcMask;
    if (cc != 0 && cc != EngineMap::kCcMask) --meta;
  }

  // Maps e (parent: its parent's ref) to `our`. `parent_slot` is a hint (the slot where the
  // parent was last seen, or kNpos), checked before use. Returns e's slot, valid until the
  // next change of the map, or kNpos when e's ref collides with another key's.
  size_t Insert(Holder& h, uint64_t e, BlockKey our, uint64_t parent,
                size_t parent_slot = EngineMap::kNpos) {
    EngineMap& m = h.map;
    EngineMap::Probe probe;
    size_t slot = m.FindOrPrepare(e, &probe);
    if (probe == EngineMap::Probe::kFound) {
      if (m.our(slot) == our) return slot;  // re-stored (idempotent)
      // Same engine hash, different content: replace. Its old children stay unanchored
      // (settled now, before the new content is anchored).
      Remove(h, e);
      Settle(h);
      h.orphans.erase(EngineMap::Ref(e));
      slot = m.FindOrPrepare(e, &probe);
    }
    if (probe == EngineMap::Probe::kConflict) {
      ++collisions;
      return EngineMap::kNpos;
    }
    bool anchored = true;
    if (parent != kRootParent) {
      // Within an event the parent is the block inserted just before: no probe.
      const size_t p = parent_slot < m.capacity() && EngineMap::Ref(m.key(parent_slot)) == parent
                           ? parent_slot
                           : m.FindRef(parent);
      if (p != EngineMap::kNpos) {
        IncCc(m, p);
        anchored = (m.meta(p) & EngineMap::kAnchored) != 0;
      } else {
        h.orphans[parent].push_back(e);
        anchored = false;
      }
    }
    m.InsertAt(slot, e, our, parent, anchored ? EngineMap::kAnchored : 0);
    if (h.has_kids && parent != kRootParent) h.kids[parent].push_back(e);
    if (anchored) SetHeld(h, our);
    AddEntries(1);
    ++stored;
    if (!h.orphans.empty()) {
      if (auto it = h.orphans.find(EngineMap::Ref(e)); it != h.orphans.end()) {
        std::vector<uint64_t> kids = std::move(it->second);
        h.orphans.erase(it);
        for (size_t k = 0; k < kids.size(); ++k) IncCc(m, slot);
        if (anchored) Reanchor(h, kids, /*anchor=*/true);
      }
    }
    return slot;
  }

  // Unmaps e. Returns false when absent. When `next` (the key the caller removes next, or
  // kRootParent) is e's parent — tail-first eviction, the common order — the parent's
  // children count is decremented when it is removed instead of by a probe now. `hint`: a
  // slot that may hold e (checked).
  bool Remove(Holder& h, uint64_t e, uint64_t next = kRootParent, size_t hint = EngineMap::kNpos) {
    if (deferred_parent_ != kRootParent && deferred_parent_ != e) SettleDeferred(h);
    EngineMap& m = h.map;
    const size_t i = hint < m.capacity() && m.key(hint) == e ? hint : m.Find(e);
    if (i == EngineMap::kNpos) {
      if (deferred_parent_ != kRootParent) SettleDeferred(h);
      return false;
    }
    const BlockKey our = m.our(i);
    const uint64_t parent = m.parent(i);
    uint8_t meta = m.meta(i);
    if (deferred_parent_ != kRootParent) {  // e is the parent owed a decrement
      if (const uint8_t cc = meta & EngineMap::kCcMask; cc != 0 && cc != EngineMap::kCcMask) {
        --meta;
      }
      deferred_parent_ = kRootParent;
    }
    const bool anchored = (meta & EngineMap::kAnchored) != 0;
    const bool has_children = (meta & EngineMap::kCcMask) != 0;
    if (anchored && !has_children) {
      table_.PrefetchForWrite(our, h.id);  // cleared at the event's FlushTable
      ClearHeld(h, our);
    }
    m.EraseAt(i);
    if (parent != kRootParent) {
      if (h.has_kids) KidsErase(h, parent, e);
      if (next != kRootParent && parent == EngineMap::Ref(next)) {
        deferred_parent_ = next;
        deferred_child_ = e;
      } else {
        UnlinkChild(h, parent, e);
      }
    }
    if (has_children) {
      // Its children wait for it as orphans now (structure: immediate, O(children)); their
      // loss of anchoring and e's own table clear are settled at the end of the batch, so a
      // re-store of e in the same batch costs O(1) (see Settle).
      EnsureKids(h);
      if (auto it = h.kids.find(EngineMap::Ref(e)); it != h.kids.end() && !it->second.empty()) {
        auto& waiting = h.orphans[EngineMap::Ref(e)];
        waiting.insert(waiting.end(), it->second.begin(), it->second.end());
      }
      if (anchored) h.pending.push_back({e, our, true});
    }
    AddEntries(-1);
    ++removed;
    return true;
  }

  // The removed `child` no longer counts for `parent` (a ref): one held child less, or one
  // orphan less when the parent is absent.
  void UnlinkChild(Holder& h, uint64_t parent, uint64_t child) {
    EngineMap& m = h.map;
    if (const size_t p = m.FindRef(parent); p != EngineMap::kNpos) {
      DecCc(m, p);
    } else if (auto it = h.orphans.find(parent); it != h.orphans.end()) {
      auto& v = it->second;
      v.erase(std::remove(v.begin(), v.end(), child), v.end());
      if (v.empty()) h.orphans.erase(it);
    }
  }
  void SettleDeferred(Holder& h) {
    UnlinkChild(h, EngineMap::Ref(deferred_parent_), deferred_child_);
    deferred_parent_ = kRootParent;
  }

  // Builds the children index from one scan of the map (once per holder, counted as a
  // fix-up scan); afterwards Insert and Remove keep it current.
  void EnsureKids(Holder& h) {
    if (h.has_kids) return;
    ++fixup_scans;
    const EngineMap& m = h.map;
    h.kids.reserve(m.size());
    for (size_t i = 0; i < m.capacity(); ++i) {
      if (m.key(i) != 0 && m.parent(i) != kRootParent) h.kids[m.parent(i)].push_back(m.key(i));
    }
    work_ += m.capacity();
    h.has_kids = true;
  }
  static void KidsErase(Holder& h, uint64_t parent, uint64_t child) {
    auto it = h.kids.find(parent);
    if (it == h.kids.end()) return;
    auto& v = it->second;
    if (auto pos = std::find(v.begin(), v.end(), child); pos != v.end()) {
      *pos = v.back();
      v.pop_back();
    }
    if (v.empty()) h.kids.erase(it);
  }

  // Settles `h`'s pending removals: each removed block's deferred table clear, then, for
  // each one that is absent now or present but not anchored (re-stored under a missing
  // parent), its descendants lose their anchoring. A block removed and re-stored anchored
  // within the batch leaves its descendants as they were: O(1) for the pair.
  void Settle(Holder& h) {
    if (h.pending.empty()) return;
    auto& pending = pod_.settling;
    pending.swap(h.pending);
    for (const PendingRemoval& p : pending) {
      if (p.clear_owed) ClearHeld(h, p.our);
    }
    std::vector<uint64_t> roots;
    for (const PendingRemoval& p : pending) {
      const size_t i = h.map.Find(p.e);
      if (i != EngineMap::kNpos && (h.map.meta(i) & EngineMap::kAnchored)) continue;
      if (auto it = h.kids.find(EngineMap::Ref(p.e)); it != h.kids.end()) {
        roots.insert(roots.end(), it->second.begin(), it->second.end());
      }
    }
    pending.clear();
    if (!roots.empty()) Reanchor(h, roots, /*anchor=*/false);
  }

  // Sets (anchor) or clears the anchored state of `roots` and of their held descendants,
  // stopping below entries already in that state. Walks the children index: time ∝ the
  // entries whose state changes.
  void Reanchor(Holder& h, const std::vector<uint64_t>& roots, bool anchor) {
    EngineMap& m = h.map;
    auto& stack = pod_.walk;
    stack.assign(roots.begin(), roots.end());
    while (!stack.empty()) {
      const uint64_t e = stack.back();
      stack.pop_back();
      const size_t i = m.Find(e);
      ++work_;
      if (i == EngineMap::kNpos) continue;
      const bool is = (m.meta(i) & EngineMap::kAnchored) != 0;
      if (is == anchor) continue;
      if (anchor) {
        m.meta(i) |= EngineMap::kAnchored;
        SetHeld(h, m.our(i));
      } else {
        m.meta(i) &= static_cast<uint8_t>(~EngineMap::kAnchored);
        ClearHeld(h, m.our(i));
      }
      if ((m.meta(i) & EngineMap::kCcMask) == 0 && !h.has_kids) continue;  // a leaf
      EnsureKids(h);
      if (auto it = h.kids.find(EngineMap::Ref(e)); it != h.kids.end()) {
        stack.insert(stack.end(), it->second.begin(), it->second.end());
      }
    }
  }

  PodState& pod_;
  IndexCore& core_;
  HolderTable& table_;
  HolderDirectory& dir_;
  const BlockHasher& hasher_;
  EpochManager& epoch_;
  int64_t delta_ = 0;
  uint64_t work_ = 0;  // entries visited by (un)anchoring walks and index builds (tests)
  // A decrement Remove owes to deferred_parent_ (kRootParent: none) for its removed child
  // deferred_child_; paid by the next Remove.
  uint64_t deferred_parent_ = kRootParent;
  uint64_t deferred_child_ = 0;
  std::vector<std::pair<BlockKey, Holder*>>& pending_set_ = pod_.table_sets;
  std::vector<std::pair<BlockKey, Holder*>>& pending_clear_ = pod_.table_clears;
};

uint64_t PodBytes(const ExactIndex::PodState& pod) {
  uint64_t b = sizeof(ExactIndex::PodState) + pod.pod_key.capacity();
  for (const auto& h : pod.holders) b += sizeof(Holder) + h->bytes();
  return b;
}

// Adds a batch's drop counts to the pod's stats. Locked RMWs only for counters that moved
// (the common batch moves none of them).
void CountDrops(const PodWriter& w, ExactIndex::PodState& pod) {
  if (const uint64_t unplaceable = w.unknown_parent + w.collisions) {
    pod.unplaceable.fetch_add(unplaceable, std::memory_order_relaxed);
  }
  if (w.unknown_remove) pod.unknown_removes.fetch_add(w.unknown_remove, std::memory_order_relaxed);
  if (const uint64_t skipped =
          w.bad_block_size + w.bad_length + w.non_main + w.too_many_tiers + w.self_ref) {
    pod.skipped.fetch_add(skipped, std::memory_order_relaxed);
  }
}

// Adds a batch's counts to the index's counters (only those that moved).
void CountMetrics(const PodWriter& w, ExactIndex::Metrics& m) {
  const auto add = [](prometheus::Counter& c, uint64_t n) {
    if (n) c.Increment(static_cast<double>(n));
  };
  add(m.stored_events, w.stored_events);
  add(m.removed_events, w.removed_events);
  add(m.cleared_events, w.cleared_events);
  add(m.stored_blocks, w.stored);
  add(m.removed_blocks, w.removed);
  add(m.unknown_parent, w.unknown_parent);
  add(m.bad_block_size, w.bad_block_size);
  add(m.bad_length, w.bad_length);
  add(m.non_main_group, w.non_main);
  add(m.too_many_tiers, w.too_many_tiers);
  add(m.self_reference, w.self_ref);
  add(m.unknown_remove, w.unknown_remove);
  add(m.hash_collision, w.collisions);
  add(m.fixup_scans, w.fixup_scans);
}

// One rate-limited line when a batch dropped blocks for a reason worth a look.
void WarnDrops(const PodWriter& w, const std::string& pod_key, int block_size) {
  if (w.unknown_parent + w.bad_block_size + w.bad_length + w.self_ref + w.collisions == 0) return;
  static common::RateLimiter limiter;
  common::WarnLimited(limiter, "prefix",
                      "pod {}: dropped blocks: unknown_parent={} block_size_mismatch={} "
                      "(index {}) length_mismatch={} self_reference={} hash_collision={}",
                      pod_key, w.unknown_parent, w.bad_block_size, block_size, w.bad_length,
                      w.self_ref, w.collisions);
}

}  // namespace

ExactIndex::ExactIndex(ExactIndexOptions options, prometheus::Registry* registry)
    : options_(options),
      metrics_(registry ? std::make_unique<Metrics>(*registry) : nullptr),
      core_(options.block_size, options.scheme, MatchSource::kEvents,
            metrics_ ? &metrics_->pod_blocks : nullptr),
      pods_(core_) {}

ExactIndex::~ExactIndex() = default;

void ExactIndex::ApplyBatch(const kv::PodSource& source, const kv::EventBatch& batch) {
  auto [pod, lock] = pods_.LockLive(source.pod_key, [](PodState&) {});
  if (pod->model != source.model || pod->model_name.load(std::memory_order_relaxed) == nullptr) {
    pod->model = source.model;
    pod->model_name.store(std::make_shared<const std::string>(source.model));
  }
  PodWriter w(*pod, core_);
  for (const kv::Event& event : batch.events) w.Apply(event, source.model);
  w.SettleAll();
  w.Flush();
  core_.SetPodBytes(pod->bytes, PodBytes(*pod));
  CountDrops(w, *pod);
  if (metrics_) CountMetrics(w, *metrics_);
  WarnDrops(w, source.pod_key, core_.hasher().block_size());
  lock.unlock();
  EnforceBudget(*pod);
  if (metrics_) UpdatePodGauges(*pod);
}

void ExactIndex::UpdatePodGauges(PodState& pod) {
  // The pod's own mutex only (RemovePod may drop the gauge); model gauges are computed at
  // scrape time (UpdateGauges), so the event path takes no index-wide lock.
  {
    std::lock_guard<std::mutex> pl(pod.mu);
    if (!pod.removed && pod.gauge) pod.gauge->Set(static_cast<double>(pod.entries.load()));
  }
  metrics_->bytes.Set(static_cast<double>(bytes()));
}

void ExactIndex::EnforceBudget(PodState& pod) {
  const auto keep = [&](uint64_t limit) {
    return static_cast<uint64_t>(static_cast<double>(limit) * (1.0 - options_.evict_fraction));
  };
  uint64_t evicted = 0;
  if (pod.entries.load(std::memory_order_relaxed) > options_.max_memberships_per_pod) {
    std::lock_guard<std::mutex> lock(pod.mu);
    const uint64_t have = pod.entries.load(std::memory_order_relaxed);
    const uint64_t target = keep(options_.max_memberships_per_pod);
    if (!pod.removed && have > target) evicted += EvictLocked(pod, have - target);
  }
  for (int round = 0; round < 8; ++round) {
    const uint64_t total = core_.memberships();
    if (total <= options_.max_memberships) break;
    std::shared_ptr<PodState> victim =
        pods_.Max([](const PodState& p) { return p.entries.load(std::memory_order_relaxed); });
    if (!victim) break;
    std::lock_guard<std::mutex> lock(victim->mu);
    if (victim->removed) continue;
    const uint64_t over = total - keep(options_.max_memberships);
    const uint64_t got = EvictLocked(*victim, std::min(over, victim->entries.load()));
    evicted += got;
    if (got == 0) break;
  }
  if (evicted > 0 && metrics_) metrics_->evicted_blocks.Increment(static_cast<double>(evicted));
}

uint64_t ExactIndex::EvictLocked(PodState& pod, uint64_t count) {
  PodWriter w(pod, core_);
  const uint64_t got = w.Evict(count);
  pod.evicted.fetch_add(got, std::memory_order_relaxed);
  core_.SetPodBytes(pod.bytes, PodBytes(pod));
  return got;
}

void ExactIndex::ClearPod(const std::string& pod_key) {
  auto pod = pods_.Find(pod_key);
  if (!pod) return;
  std::lock_guard<std::mutex> lock(pod->mu);
  PodWriter(*pod, core_).ClearAll();
  core_.SetPodBytes(pod->bytes, PodBytes(*pod));
  if (pod->gauge) pod->gauge->Set(0);
}

void ExactIndex::RemovePod(const std::string& pod_key) {
  std::shared_ptr<PodState> pod = pods_.Take(pod_key);
  if (!pod) return;
  std::lock_guard<std::mutex> lock(pod->mu);
  PodWriter(*pod, core_).ClearAll();
  for (auto& h : pod->holders) core_.directory().Release(h->id);
  pod->holders.clear();
  pods_.Retire(*pod);
}

std::optional<PodIndexStats> ExactIndex::Stats(const std::string& pod_key) const {
  // No pod lock: every field is an atomic the writer publishes at the end of each batch, so
  // a pod whose batch runs long never blocks /cache/pods.
  auto pod = pods_.Find(pod_key);
  if (!pod) return std::nullopt;
  PodIndexStats s;
  s.pod = pod->pod_key;
  if (auto model = pod->model_name.load()) s.model = *model;
  s.source = MatchSource::kEvents;
  s.blocks = pod->entries.load();
  const size_t tiers = pod->tier_count.load(std::memory_order_acquire);
  for (size_t i = 0; i < tiers; ++i) {
    const auto& t = pod->tier_stats[i];
    s.tiers.push_back(TierCount{t.tier, t.blocks.load(std::memory_order_relaxed)});
  }
  std::sort(s.tiers.begin(), s.tiers.end(),
            [](const TierCount& a, const TierCount& b) { return a.tier < b.tier; });
  s.bytes = pod->bytes.load();
  s.unplaceable_blocks = pod->unplaceable.load();
  s.unknown_removes = pod->unknown_removes.load();
  s.skipped_events = pod->skipped.load();
  s.evicted_blocks = pod->evicted.load();
  return s;
}

std::vector<PodIndexStats> ExactIndex::AllStats() const {
  return pods_.AllStats([this](const std::string& key) { return Stats(key); });
}

std::vector<uint64_t> ExactIndex::EngineHashesForTest(const std::string& pod_key,
                                                      const std::string& tier) const {
  std::vector<uint64_t> out;
  auto pod = pods_.Find(pod_key);
  if (!pod) return out;
  std::lock_guard<std::mutex> lock(pod->mu);
  for (const auto& h : pod->holders) {
    if (h->tier != tier) continue;
    const EngineMap& m = h->map;
    for (size_t i = 0; i < m.capacity(); ++i) {
      if (m.key(i) != 0) out.push_back(UnMix64(m.key(i)));
    }
  }
  return out;
}

std::map<std::string, uint64_t> ExactIndex::BlocksPerModel() const {
  std::map<std::string, uint64_t> out;
  for (const PodIndexStats& s : AllStats()) out[s.model] += s.blocks;
  return out;
}

uint64_t ExactIndex::AnchorWorkForTest(const std::string& pod_key) const {
  auto pod = pods_.Find(pod_key);
  return pod ? pod->anchor_work.load() : 0;
}

void ExactIndex::UpdateGauges() const {
  if (!metrics_) return;
  metrics_->bytes.Set(static_cast<double>(bytes()));
  // Per-model gauges from the pods' published counters (no pod lock); a model no pod
  // serves any more drops its series.
  const std::map<std::string, uint64_t> per_model = BlocksPerModel();
  std::lock_guard<std::mutex> lock(metrics_->scrape_mu);
  for (auto it = metrics_->models.begin(); it != metrics_->models.end();) {
    if (per_model.contains(it->first)) {
      ++it;
      continue;
    }
    metrics_->model_blocks.Remove(it->second);
    metrics_->models.erase(it++);
  }
  for (const auto& [model, blocks] : per_model) {
    auto*& g = metrics_->models[model];
    if (g == nullptr) g = &metrics_->model_blocks.Add({{"model", model}, {"source", "events"}});
    g->Set(static_cast<double>(blocks));
  }
}

}  // namespace aibrix::prefix
