// The shared core of both prefix indexes: a concurrent map from block key to the set of
// holders (a holder is one pod in one tier, e.g. "ns/a" on GPU), a directory naming the
// holders, and the jump search that answers "how many leading blocks does each holder have".
//
// Holder sets: holder ids are dense; holder h lives in group h/64 at bit h%64. The table is
// keyed by (block key, group) and stores one 64-bit mask per group, so up to 64 holders cost
// one probe per key and 1,000 holders cost 16 probes for the first block (after that only
// groups that still match are probed). Unlike interned holder sets, no structure is shared by
// all writers: a writer changes its own bit with one atomic store under a shard lock.
//
// Table layout: 256 shards chosen by the key's top bits, each an open-addressing array of
// 16-byte slots (key, mask), linear probing from a home slot at the start of a cache line
// (multiply-shift over lines), so most probes stay in one line; a shard is rebuilt at load
// 0.7 to load 0.4 (room for the dead slots a churning shard collects before the next
// rebuild). Removing a holder only clears its bit; a slot whose mask is 0 is "dead" and the
// next insert on its probe path reuses it. Readers re-check the slot's key after reading
// its mask, so a reused slot never lends its new mask to the old key. A rebuild (growth, or
// shrink when mostly empty) writes a fresh array, publishes it with one pointer store and
// frees the old one after EpochManager::Synchronize.
//
// Thread safety: Set/Clear may be called from any thread (they lock one shard).
// StartProbe, FinishProbe and SearchPrefix take no lock but REQUIRE the caller to hold an
// EpochManager::ReadGuard of the table's epoch manager for as long as it uses the results'
// backing memory (the directory snapshot, table arrays). Readers observe each slot
// atomically; a query concurrent with writes sees, per key, either the old or the new mask.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "aibrix/common/mutex.h"
#include "aibrix/prefix/block_hash.h"
#include "aibrix/prefix/epoch.h"

namespace aibrix::prefix {

using HolderId = uint32_t;
inline constexpr uint32_t kHoldersPerGroup = 64;

class HolderTable {
 public:
  explicit HolderTable(EpochManager& epoch);
  ~HolderTable();
  HolderTable(const HolderTable&) = delete;
  HolderTable& operator=(const HolderTable&) = delete;

  // Adds `holder` to the holders of `key`. Returns true if it was already there.
  bool Set(BlockKey key, HolderId holder);
  // Removes `holder` from the holders of `key`. Returns true if it was there.
  bool Clear(BlockKey key, HolderId holder);

  // The table key of (key, group): what a probe takes.
  static uint64_t TableKey(BlockKey key, uint32_t group);
  // A read of one table key in two steps: Start starts loading its home line and notes where
  // it is; Finish, later, reads the mask (the other loads of a query overlap in between).
  // REQUIRES: one ReadGuard held across both (a rebuild in between leaves the probe on the
  // array it started on, which the guard keeps alive: the mask as it was a moment earlier).
  class Probe {
   public:
    Probe() = default;

   private:
    friend class HolderTable;
    uint64_t tkey_ = 0;
    const void* array_ = nullptr;
    size_t home_ = 0;
  };
  Probe StartProbe(uint64_t tkey) const;
  // The mask stored under the probe's table key (0 when absent).
  uint64_t FinishProbe(const Probe& probe) const;
  // Reads the home line of (key, holder's group), so that a Set/Clear right after finds it
  // cached: a writer touches a batch of keys first (the loads overlap), then takes the shard
  // locks (each a full fence: a miss inside one cannot overlap the next).
  // REQUIRES: a ReadGuard is held (and released before the Set/Clear calls).
  void Touch(BlockKey key, HolderId holder) const;
  // Starts loading the home line of (key, holder's group) and the next, for a writer about
  // to Set/Clear. Needs no ReadGuard (and must not take one: a writer may rebuild a shard,
  // which waits for readers): it forms the address from per-shard hints and never
  // dereferences it; a stale hint only wastes the prefetch.
  void PrefetchForWrite(BlockKey key, HolderId holder) const;

  // Bytes held by the slot arrays (capacities, not sizes).
  size_t bytes() const { return bytes_.load(std::memory_order_relaxed); }

 private:
  struct Slot {
    std::atomic<uint64_t> key{0};
    std::atomic<uint64_t> mask{0};
  };
  // A shard's slot array: this header, then `cap` slots in the same allocation (one
  // dependent load from the shard to a slot).
  struct alignas(64) Array {
    size_t cap;
    Slot* slots() { return reinterpret_cast<Slot*>(this + 1); }
    const Slot* slots() const { return reinterpret_cast<const Slot*>(this + 1); }
    static Array* New(size_t cap);
    static void Free(Array* a);
  };
  // A test-and-test-and-set lock: the shard's critical sections are a few dozen ns, and
  // unlock is a plain release store (std::mutex costs a second locked instruction).
  class SpinLock {
   public:
    void lock() {
      while (locked_.exchange(true, std::memory_order_acquire)) {
        while (locked_.load(std::memory_order_relaxed)) __builtin_ia32_pause();
      }
    }
    void unlock() { locked_.store(false, std::memory_order_release); }

   private:
    std::atomic<bool> locked_{false};
  };
  struct alignas(64) Shard {
    mutable SpinLock mu;
    std::atomic<Array*> array{nullptr};
    std::atomic<const Slot*> slots_hint{nullptr};  // array's slots, for PrefetchForWrite
    std::atomic<size_t> cap_hint{0};
    size_t used = 0;  // slots with a key (live or dead); guarded by mu
    size_t live = 0;  // slots with a non-zero mask; guarded by mu
  };
  static constexpr int kShardBits = 8;
  static constexpr size_t kMinCapacity = 16;

  __extension__ typedef unsigned __int128 U128;
  // Home slot: the first slot of a cache line (4 slots), chosen by fastrange over the bits
  // below the shard bits. Probes start at a line boundary, so most end in their home line.
  static constexpr size_t kSlotsPerLine = 4;
  static size_t Home(uint64_t tkey, size_t cap) {
    return static_cast<size_t>((U128(tkey << kShardBits) * (cap / kSlotsPerLine)) >> 64) *
           kSlotsPerLine;
  }
  static size_t Next(size_t i, size_t cap) { return i + 1 == cap ? 0 : i + 1; }
  Shard& ShardOf(uint64_t tkey) { return shards_[tkey >> (64 - kShardBits)]; }
  const Shard& ShardOf(uint64_t tkey) const { return shards_[tkey >> (64 - kShardBits)]; }
  // Replaces the shard's array by one sized for `need` live slots. REQUIRES: shard.mu held.
  void Rebuild(Shard& shard, size_t need);
  // Frees `old` after a grace period; batches grace periods over several retired arrays.
  void Retire(Array* old);

  EpochManager& epoch_;
  std::unique_ptr<Shard[]> shards_;
  std::atomic<size_t> bytes_{0};
  std::mutex retire_mu_;
  std::vector<Array*> retired_;  // guarded by retire_mu_
};

// Who a holder id stands for.
struct HolderName {
  std::string pod;   // "namespace/name"; empty for a free id
  std::string tier;  // "GPU", "CPU", ... (upper case)
};

// Allocates holder ids and publishes an immutable snapshot of their names for readers.
class HolderDirectory {
 public:
  struct Snapshot {
    std::vector<HolderName> by_id;
    std::vector<uint64_t> group_masks;  // allocated ids, per group
    absl::flat_hash_map<std::string, std::vector<HolderId>> by_pod;
  };

  explicit HolderDirectory(EpochManager& epoch);
  ~HolderDirectory();
  HolderDirectory(const HolderDirectory&) = delete;
  HolderDirectory& operator=(const HolderDirectory&) = delete;

  // The id of (pod, tier), allocating one (the lowest free id) when new.
  HolderId Acquire(const std::string& pod, const std::string& tier);
  // Frees `id`. REQUIRES: the caller cleared every table bit of `id`. The id is reused only
  // after every reader that could see the old name has left.
  void Release(HolderId id);

  // The current snapshot. REQUIRES: a ReadGuard is held while it is used.
  const Snapshot& snapshot() const { return *snapshot_.load(std::memory_order_acquire); }
  size_t size() const;

 private:
  void Publish(std::unique_ptr<Snapshot> next) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  EpochManager& epoch_;
  mutable common::Mutex mu_;
  std::vector<HolderId> free_ids_ ABSL_GUARDED_BY(mu_);
  std::atomic<Snapshot*> snapshot_;
};

// The query's keys: either precomputed, or hashed lazily from tokens (so a query that
// misses early stops hashing early).
class KeyCursor {
 public:
  KeyCursor(const BlockHasher& hasher, BlockKey root, std::span<const uint32_t> tokens);
  explicit KeyCursor(std::span<const BlockKey> keys);

  size_t size() const { return n_; }
  // REQUIRES: EnsureThrough(i) was called.
  BlockKey at(size_t i) const { return keys_[i]; }
  void EnsureThrough(size_t i);
  // All keys (hashes what is left).
  std::span<const BlockKey> All();

 private:
  const BlockHasher* hasher_ = nullptr;
  BlockKey parent_ = 0;
  std::span<const uint32_t> tokens_;
  size_t n_ = 0;
  size_t done_ = 0;
  std::unique_ptr<BlockKey[]> own_;
  const BlockKey* keys_ = nullptr;
};

struct HolderMatch {
  HolderId holder;
  uint32_t blocks;  // leading blocks held, >= 1
};

// Jump distance of the search (probe every kJump-th block, bisect where holders drop out).
inline constexpr size_t kJump = 32;

// Appends to `out` every holder (restricted to `candidates`, a per-group mask vector, when
// non-empty) that holds at least the first block, with the number of leading blocks it holds.
// Exact when every holder's key set is prefix-closed (holding a key implies holding its
// parent key) — both indexes maintain that invariant. Stops (and stops hashing) at the first
// probe no candidate holds. REQUIRES: a ReadGuard is held.
void SearchPrefix(const HolderTable& table, std::span<const uint64_t> candidates, KeyCursor& keys,
                  std::vector<HolderMatch>* out);

}  // namespace aibrix::prefix
