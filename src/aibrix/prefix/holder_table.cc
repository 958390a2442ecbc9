#include "aibrix/prefix/holder_table.h"

#include <algorithm>
#include <array>
#include <bit>
#include <new>
#include <type_traits>

#include "absl/container/inlined_vector.h"

namespace aibrix::prefix {

// ---------------------------------------------------------------------------- HolderTable

HolderTable::Array* HolderTable::Array::New(size_t cap) {
  void* mem = ::operator new (sizeof(Array) + cap * sizeof(Slot), std::align_val_t{64});
  auto* a = new (mem) Array{cap};
  Slot* slots = a->slots();
  for (size_t i = 0; i < cap; ++i) new (&slots[i]) Slot();
  return a;
}

void HolderTable::Array::Free(Array* a) {
  static_assert(std::is_trivially_destructible_v<Slot>);
  ::operator delete (a, std::align_val_t{64});
}

HolderTable::HolderTable(EpochManager& epoch)
    : epoch_(epoch), shards_(new Shard[size_t{1} << kShardBits]) {
  for (size_t i = 0; i < (size_t{1} << kShardBits); ++i) {
    Array* a = Array::New(kMinCapacity);
    shards_[i].array.store(a, std::memory_order_release);
    shards_[i].slots_hint.store(a->slots(), std::memory_order_relaxed);
    shards_[i].cap_hint.store(a->cap, std::memory_order_relaxed);
  }
  bytes_.store((size_t{1} << kShardBits) * kMinCapacity * sizeof(Slot));
}

HolderTable::~HolderTable() {
  for (size_t i = 0; i < (size_t{1} << kShardBits); ++i) {
    Array::Free(shards_[i].array.load(std::memory_order_acquire));
  }
  for (Array* a : retired_) Array::Free(a);
}

namespace {

// The salt of group g: Mix64(0xA5A5A5A5 + g), 0 for group 0; tabled for the first groups
// (65,536 holders), so a probe's table key costs one xor.
constexpr uint32_t kTabledGroups = 1024;
constexpr auto kGroupSalts = [] {
  std::array<uint64_t, kTabledGroups> salts{};
  for (uint32_t g = 1; g < kTabledGroups; ++g) salts[g] = Mix64(0xA5A5A5A5ULL + g);
  return salts;
}();

}  // namespace

uint64_t HolderTable::TableKey(BlockKey key, uint32_t group) {
  const uint64_t salt = group < kTabledGroups ? kGroupSalts[group] : Mix64(0xA5A5A5A5ULL + group);
  const uint64_t t = key ^ salt;
  return t == 0 ? 0x4000000000000003ULL : t;
}

bool HolderTable::Set(BlockKey key, HolderId holder) {
  const uint64_t tkey = TableKey(key, holder / kHoldersPerGroup);
  const uint64_t bit = uint64_t{1} << (holder % kHoldersPerGroup);
  Shard& shard = ShardOf(tkey);
  std::lock_guard<SpinLock> lock(shard.mu);
  for (int attempt = 0; attempt < 2; ++attempt) {
    Array* arr = shard.array.load(std::memory_order_relaxed);
    size_t idx = Home(tkey, arr->cap);
    size_t dead = ~size_t{0};  // first dead slot on the probe path
    while (true) {
      Slot& s = arr->slots()[idx];
      const uint64_t k = s.key.load(std::memory_order_relaxed);
      if (k == tkey) {
        // Every writer of a slot holds the shard lock: a plain store, not a locked RMW.
        const uint64_t prev = s.mask.load(std::memory_order_relaxed);
        if ((prev & bit) != 0) return true;
        s.mask.store(prev | bit, std::memory_order_release);
        if (prev == 0) ++shard.live;
        return (prev & bit) != 0;
      }
      if (k == 0) break;
      if (dead == ~size_t{0} && s.mask.load(std::memory_order_relaxed) == 0) dead = idx;
      idx = Next(idx, arr->cap);
    }
    if (dead != ~size_t{0}) {
      // Reuse a dead slot (the key is absent: the whole probe path was searched). The key
      // changes before the mask (release): a reader that sees the new mask also sees the new
      // key, and Lookup re-checks the key after reading the mask.
      Slot& s = arr->slots()[dead];
      s.key.store(tkey, std::memory_order_relaxed);
      s.mask.store(bit, std::memory_order_release);
      ++shard.live;
      return false;
    }
    if ((shard.used + 1) * 10 > arr->cap * 7) {
      Rebuild(shard, shard.live + 1);
      continue;  // find the empty slot in the new array
    }
    Slot& s = arr->slots()[idx];
    s.mask.store(bit, std::memory_order_relaxed);
    s.key.store(tkey, std::memory_order_release);  // publishes the mask with the key
    ++shard.used;
    ++shard.live;
    return false;
  }
  return false;  // unreachable: a rebuilt array always has room
}

bool HolderTable::Clear(BlockKey key, HolderId holder) {
  const uint64_t tkey = TableKey(key, holder / kHoldersPerGroup);
  const uint64_t bit = uint64_t{1} << (holder % kHoldersPerGroup);
  Shard& shard = ShardOf(tkey);
  std::lock_guard<SpinLock> lock(shard.mu);
  Array* arr = shard.array.load(std::memory_order_relaxed);
  for (size_t idx = Home(tkey, arr->cap);; idx = Next(idx, arr->cap)) {
    Slot& s = arr->slots()[idx];
    const uint64_t k = s.key.load(std::memory_order_relaxed);
    if (k == 0) return false;
    if (k != tkey) continue;
    const uint64_t prev = s.mask.load(std::memory_order_relaxed);  // writers hold the lock
    if ((prev & bit) == 0) return false;
    s.mask.store(prev & ~bit, std::memory_order_release);
    if (prev == bit) {
      --shard.live;
      if (arr->cap > kMinCapacity && shard.live * 4 < arr->cap) Rebuild(shard, shard.live);
    }
    return true;
  }
}

void HolderTable::Rebuild(Shard& shard, size_t need) {
  Array* old = shard.array.load(std::memory_order_relaxed);
  // Load 0.4 after a rebuild, a multiple of the line size.
  const size_t cap = std::max(kMinCapacity, (need * 5 / 2 / kSlotsPerLine + 1) * kSlotsPerLine);
  Array* fresh = Array::New(cap);
  size_t live = 0;
  for (size_t i = 0; i < old->cap; ++i) {
    const uint64_t mask = old->slots()[i].mask.load(std::memory_order_relaxed);
    if (mask == 0) continue;
    const uint64_t k = old->slots()[i].key.load(std::memory_order_relaxed);
    size_t idx = Home(k, cap);
    while (fresh->slots()[idx].key.load(std::memory_order_relaxed) != 0) idx = Next(idx, cap);
    fresh->slots()[idx].mask.store(mask, std::memory_order_relaxed);
    fresh->slots()[idx].key.store(k, std::memory_order_relaxed);
    ++live;
  }
  shard.used = live;
  shard.live = live;
  bytes_.fetch_add(cap * sizeof(Slot), std::memory_order_relaxed);
  shard.array.store(fresh, std::memory_order_release);
  shard.slots_hint.store(fresh->slots(), std::memory_order_relaxed);
  shard.cap_hint.store(cap, std::memory_order_relaxed);
  Retire(old);
}

void HolderTable::Retire(Array* old) {
  std::vector<Array*> batch;
  {
    std::lock_guard<std::mutex> lock(retire_mu_);
    retired_.push_back(old);
    if (retired_.size() < 8) return;  // still counted in bytes_ until freed
    batch.swap(retired_);
  }
  epoch_.Synchronize();  // no reader can still be probing the retired arrays
  for (Array* a : batch) {
    bytes_.fetch_sub(a->cap * sizeof(Slot), std::memory_order_relaxed);
    Array::Free(a);
  }
}

HolderTable::Probe HolderTable::StartProbe(uint64_t tkey) const {
  Probe probe;
  const Array* arr = ShardOf(tkey).array.load(std::memory_order_acquire);
  probe.tkey_ = tkey;
  probe.array_ = arr;
  probe.home_ = Home(tkey, arr->cap);
  __builtin_prefetch(&arr->slots()[probe.home_]);
  return probe;
}

uint64_t HolderTable::FinishProbe(const Probe& probe) const {
  const auto* arr = static_cast<const Array*>(probe.array_);
  const uint64_t tkey = probe.tkey_;
  for (size_t idx = probe.home_;; idx = Next(idx, arr->cap)) {
    const Slot& s = arr->slots()[idx];
    const uint64_t k = s.key.load(std::memory_order_acquire);
    if (k == tkey) {
      const uint64_t mask = s.mask.load(std::memory_order_acquire);
      // A dead slot may be reused for another key meanwhile: if so, the mask is not ours
      // (and our key is dead, or was re-inserted after this reader started).
      return s.key.load(std::memory_order_relaxed) == tkey ? mask : 0;
    }
    if (k == 0) return 0;
  }
}

void HolderTable::Touch(BlockKey key, HolderId holder) const {
  const uint64_t tkey = TableKey(key, holder / kHoldersPerGroup);
  const Array* arr = ShardOf(tkey).array.load(std::memory_order_acquire);
  const uint64_t k = arr->slots()[Home(tkey, arr->cap)].key.load(std::memory_order_relaxed);
  asm volatile("" : : "r"(k));  // the load is the point
}

void HolderTable::PrefetchForWrite(BlockKey key, HolderId holder) const {
  const uint64_t tkey = TableKey(key, holder / kHoldersPerGroup);
  const Shard& shard = ShardOf(tkey);
  // The hints may be mid-update (one array's capacity, another's slots): the address is
  // computed as an integer and only prefetched, never dereferenced.
  const size_t cap = shard.cap_hint.load(std::memory_order_relaxed);
  const uintptr_t base =
      reinterpret_cast<uintptr_t>(shard.slots_hint.load(std::memory_order_relaxed));
  const uintptr_t home = base + Home(tkey, cap) * sizeof(Slot);
  __builtin_prefetch(reinterpret_cast<const void*>(home), 1);
  // And the next line: a probe continues there when the home line's four slots hold keys
  // (live or dead), about one Set in eight in a churning shard. May run past the array end:
  // a prefetch never faults.
  __builtin_prefetch(reinterpret_cast<const void*>(home + 64), 1);
}

// ------------------------------------------------------------------------ HolderDirectory

HolderDirectory::HolderDirectory(EpochManager& epoch) : epoch_(epoch), snapshot_(new Snapshot()) {}

HolderDirectory::~HolderDirectory() { delete snapshot_.load(std::memory_order_acquire); }

size_t HolderDirectory::size() const {
  common::MutexLock lock(&mu_);
  const Snapshot* s = snapshot_.load(std::memory_order_acquire);
  return s->by_id.size() - free_ids_.size();
}

HolderId HolderDirectory::Acquire(const std::string& pod, const std::string& tier) {
  common::MutexLock lock(&mu_);
  const Snapshot* cur = snapshot_.load(std::memory_order_relaxed);
  if (auto it = cur->by_pod.find(pod); it != cur->by_pod.end()) {
    for (HolderId id : it->second) {
      if (cur->by_id[id].tier == tier) return id;
    }
  }
  auto next = std::make_unique<Snapshot>(*cur);
  HolderId id;
  if (!free_ids_.empty()) {
    std::sort(free_ids_.begin(), free_ids_.end(), std::greater<>());
    id = free_ids_.back();
    free_ids_.pop_back();
  } else {
    id = static_cast<HolderId>(next->by_id.size());
    next->by_id.emplace_back();
  }
  next->by_id[id] = HolderName{pod, tier};
  const size_t group = id / kHoldersPerGroup;
  if (next->group_masks.size() <= group) next->group_masks.resize(group + 1, 0);
  next->group_masks[group] |= uint64_t{1} << (id % kHoldersPerGroup);
  next->by_pod[pod].push_back(id);
  Publish(std::move(next));
  return id;
}

void HolderDirectory::Release(HolderId id) {
  common::MutexLock lock(&mu_);
  const Snapshot* cur = snapshot_.load(std::memory_order_relaxed);
  if (id >= cur->by_id.size() || cur->by_id[id].pod.empty()) return;
  auto next = std::make_unique<Snapshot>(*cur);
  const std::string pod = next->by_id[id].pod;
  auto& ids = next->by_pod[pod];
  ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
  if (ids.empty()) next->by_pod.erase(pod);
  next->by_id[id] = HolderName{};
  next->group_masks[id / kHoldersPerGroup] &= ~(uint64_t{1} << (id % kHoldersPerGroup));
  Publish(std::move(next));  // synchronizes: no reader sees the old name after this
  free_ids_.push_back(id);
}

void HolderDirectory::Publish(std::unique_ptr<Snapshot> next) {
  Snapshot* old = snapshot_.exchange(next.release(), std::memory_order_acq_rel);
  epoch_.Synchronize();
  delete old;
}

// ------------------------------------------------------------------------------ KeyCursor

KeyCursor::KeyCursor(const BlockHasher& hasher, BlockKey root, std::span<const uint32_t> tokens)
    : hasher_(&hasher),
      parent_(root),
      tokens_(tokens),
      n_(hasher.NumBlocks(tokens.size())),
      own_(new BlockKey[n_ == 0 ? 1 : n_]),
      keys_(own_.get()) {}

KeyCursor::KeyCursor(std::span<const BlockKey> keys)
    : n_(keys.size()), done_(keys.size()), keys_(keys.data()) {}

void KeyCursor::EnsureThrough(size_t i) {
  if (i < done_ || i >= n_) return;
  const size_t bs = hasher_->block_size();
  const size_t count = i + 1 - done_;
  hasher_->HashInto(parent_, tokens_.subspan(done_ * bs, count * bs), own_.get() + done_);
  done_ = i + 1;
  parent_ = own_[i];
}

std::span<const BlockKey> KeyCursor::All() {
  if (n_ > 0) EnsureThrough(n_ - 1);
  return {keys_, n_};
}

// --------------------------------------------------------------------------- SearchPrefix

namespace {

struct Alive {
  uint32_t group;
  uint64_t mask;
  HolderTable::Probe probe;  // of the key being read for this group
};

void Emit(uint32_t group, uint64_t mask, size_t blocks, std::vector<HolderMatch>* out) {
  while (mask != 0) {
    const int b = std::countr_zero(mask);
    mask &= mask - 1;
    out->push_back(
        {static_cast<HolderId>(group * kHoldersPerGroup + b), static_cast<uint32_t>(blocks)});
  }
}

// Every holder in `mask` (of `group`) holds position a and not position b (a < b).
struct Drop {
  uint32_t group;
  uint32_t a;
  uint32_t b;
  uint64_t mask;
};

// How many drops ahead Bisect starts loading a midpoint: enough misses in flight to overlap,
// few enough that the prefetches are not dropped for want of line fill buffers.
constexpr size_t kBisectPrefetchAhead = 12;

// Finds where each holder of every drop stops, all drops together, breadth first: each round
// reads every drop's midpoint — starting to load the midpoint kBisectPrefetchAhead drops
// ahead, so the misses overlap instead of following one another — and splits each drop in
// two. `next` is scratch.
void Bisect(const HolderTable& table, const KeyCursor& keys, std::vector<Drop>& drops,
            std::vector<Drop>& next, std::vector<HolderMatch>* out) {
  // The table keys of the midpoints being loaded, by drop index modulo the ring's size.
  constexpr size_t kRing = std::bit_ceil(kBisectPrefetchAhead + 1);
  std::array<HolderTable::Probe, kRing> probes;
  const auto prefetch = [&](size_t i) {
    const Drop& d = drops[i];
    if (d.b == d.a + 1) return;
    probes[i % kRing] =
        table.StartProbe(HolderTable::TableKey(keys.at(d.a + (d.b - d.a) / 2), d.group));
  };
  while (!drops.empty()) {
    for (size_t i = 0; i < std::min(kBisectPrefetchAhead, drops.size()); ++i) prefetch(i);
    next.clear();
    for (size_t i = 0; i < drops.size(); ++i) {
      if (i + kBisectPrefetchAhead < drops.size()) prefetch(i + kBisectPrefetchAhead);
      const Drop& d = drops[i];
      if (d.b == d.a + 1) {
        Emit(d.group, d.mask, d.a + 1, out);
        continue;
      }
      const uint32_t mid = d.a + (d.b - d.a) / 2;
      const uint64_t held = table.FinishProbe(probes[i % kRing]) & d.mask;
      if (const uint64_t gone = d.mask & ~held; gone != 0)
        next.push_back({d.group, d.a, mid, gone});
      if (held != 0) next.push_back({d.group, mid, d.b, held});
    }
    drops.swap(next);
  }
}

}  // namespace

void SearchPrefix(const HolderTable& table, std::span<const uint64_t> candidates, KeyCursor& keys,
                  std::vector<HolderMatch>* out) {
  const size_t n = keys.size();
  if (n == 0 || candidates.empty()) return;
  // Scratch reused by this thread's searches (a search never runs inside another).
  thread_local std::vector<Drop> drops, next;
  drops.clear();
  absl::InlinedVector<Alive, 4> alive;
  keys.EnsureThrough(0);
  const BlockKey k0 = keys.at(0);
  for (uint32_t g = 0; g < candidates.size(); ++g) {
    if (candidates[g] == 0) continue;
    alive.push_back({g, candidates[g], table.StartProbe(HolderTable::TableKey(k0, g))});
  }
  {
    size_t kept = 0;
    for (const Alive& a : alive) {
      if (const uint64_t v = table.FinishProbe(a.probe) & a.mask; v != 0)
        alive[kept++] = {a.group, v, {}};
    }
    alive.resize(kept);
  }
  size_t prev = 0;  // every alive holder holds blocks 0..prev
  while (!alive.empty() && prev + 1 < n) {
    const size_t pos = std::min(prev + kJump, n - 1);
    keys.EnsureThrough(pos);
    for (Alive& a : alive) {
      a.probe = table.StartProbe(HolderTable::TableKey(keys.at(pos), a.group));
    }
    // Hash the next interval while the probes' cache lines load.
    keys.EnsureThrough(std::min(pos + kJump, n - 1));
    size_t kept = 0;
    for (const Alive& a : alive) {
      const uint64_t v = table.FinishProbe(a.probe) & a.mask;
      if (const uint64_t gone = a.mask & ~v; gone != 0) {
        drops.push_back({a.group, static_cast<uint32_t>(prev), static_cast<uint32_t>(pos), gone});
      }
      if (v != 0) alive[kept++] = {a.group, v, {}};
    }
    alive.resize(kept);
    prev = pos;
  }
  for (const Alive& a : alive) Emit(a.group, a.mask, prev + 1, out);
  Bisect(table, keys, drops, next, out);
}

}  // namespace aibrix::prefix
