// EngineMap: one holder's (pod, tier) map from engine block hash to our block key, with the
// parent link and the bookkeeping that keeps the holder's key set prefix-closed.
//
// Open addressing, linear probing over a compact key array (keys, {our key, parent} pairs
// and meta bytes in three arrays: 25 bytes per slot), capacity any integer (multiply-shift
// "fastrange" home slots) rebuilt to load 0.65 at load 0.8, backward-shift deletion (no
// tombstones).
// Keys must already be well mixed (ExactIndex passes Mix64 of the engine hash): the home slot
// is taken from the key itself, so no probe, erase or resize hashes anything. Key 0 is
// reserved as "empty" (callers remap it).
//
// Thread safety: none; the owning pod's mutex guards it.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>

#include "aibrix/prefix/block_hash.h"  // BlockKey

namespace aibrix::prefix {

class EngineMap {
 public:
  static constexpr size_t kNpos = ~size_t{0};
  static constexpr uint8_t kAnchored = 0x80;  // meta bit: the membership counts (see exact_index.h)
  static constexpr uint8_t kCcMask = 0x7f;    // meta bits: held children, saturating at 127

  EngineMap() { Allocate(kMinCapacity); }

  size_t size() const { return size_; }
  size_t capacity() const { return cap_; }
  size_t bytes() const { return cap_ * kSlotBytes; }

  size_t Find(uint64_t k) const {
    for (size_t i = Home(k);; i = Next(i)) {
      const uint64_t x = keys_[i];
      if (x == k) return i;
      if (x == 0) return kNpos;
    }
  }
  void Prefetch(uint64_t k) const { __builtin_prefetch(&keys_[Home(k)]); }
  // Prefetch for an insert of k: its home slot's key, value and meta lines.
  void PrefetchInsert(uint64_t k) const {
    const size_t h = Home(k);
    __builtin_prefetch(&keys_[h], 1);
    __builtin_prefetch(&vals_[h], 1);
    __builtin_prefetch(&meta_[h], 1);
  }

  // Write pipelines (see exact_index.cc), all hints only: stage 1 starts loading the key
  // lines a probe for k walks (its home line and the next: linear probes at load <= 0.8
  // often cross a line); stage 2, once those lines arrived, probes them without changing
  // anything and starts loading the value and meta lines of the slot an insert or an
  // erase of k will touch (an erase's backward shift also reads the next lines).
  void PrefetchProbe(uint64_t k) const {
    const uint64_t* p = &keys_[Home(k)];
    __builtin_prefetch(p, 1);
    // Linear probes at load <= 0.8 often cross a line (an insert scans 3-13 slots). May run
    // past the array end: a prefetch never faults.
    __builtin_prefetch(p + 8, 1);
  }
  // Returns the slot of k, or the empty slot an insert of k would fill now.
  size_t ProbeSlot(uint64_t k) const {
    for (size_t i = Home(k);; i = Next(i)) {
      const uint64_t x = keys_[i];
      if (x == k || x == 0) return i;
    }
  }
  void PrefetchSlotForInsert(size_t i) const {
    __builtin_prefetch(&vals_[i], 1);
    __builtin_prefetch(&meta_[i], 1);
  }
  // For an erase at slot i: the backward shift reads and moves the entries up to the end of
  // i's cluster (the next empty key), usually a few slots: load their value lines too.
  void PrefetchSlotForErase(size_t i) const {
    __builtin_prefetch(&meta_[i], 1);
    __builtin_prefetch(&vals_[i], 1);
    __builtin_prefetch(&vals_[i] + 4, 1);
  }

  // One probe for an insert: grows first if needed, then returns k's slot (*found = true) or
  // the empty slot where k goes (*found = false). Valid until the next Insert/Erase/Resize.
  size_t FindOrPrepare(uint64_t k, bool* found) {
    if ((size_ + 1) * 5 > cap_ * 4) Resize((size_ + 1) * 20 / 13 + 1);
    for (size_t i = Home(k);; i = Next(i)) {
      const uint64_t x = keys_[i];
      if (x == k || x == 0) {
        *found = x == k;
        return i;
      }
    }
  }
  // Fills the empty slot `i` returned by FindOrPrepare(k).
  void InsertAt(size_t i, uint64_t k, uint64_t our, uint64_t parent, uint8_t meta) {
    keys_[i] = k;
    vals_[i] = {our, parent};
    meta_[i] = meta;
    ++size_;
  }

  // REQUIRES: k != 0 and k absent. Returns its slot (valid until the next Insert/Erase).
  size_t Insert(uint64_t k, uint64_t our, uint64_t parent, uint8_t meta) {
    if ((size_ + 1) * 5 > cap_ * 4) Resize((size_ + 1) * 20 / 13 + 1);
    size_t i = Home(k);
    while (keys_[i] != 0) i = Next(i);
    keys_[i] = k;
    vals_[i] = {our, parent};
    meta_[i] = meta;
    ++size_;
    return i;
  }

  void EraseAt(size_t i) {
    size_t hole = i;
    for (size_t j = Next(i); keys_[j] != 0; j = Next(j)) {
      const size_t h = Home(keys_[j]);
      // Move j into the hole when the hole lies on j's probe path [h, j].
      if (Dist(h, j) >= Dist(hole, j)) {
        keys_[hole] = keys_[j];
        vals_[hole] = vals_[j];
        meta_[hole] = meta_[j];
        hole = j;
      }
    }
    keys_[hole] = 0;
    --size_;
  }

  uint64_t key(size_t i) const { return keys_[i]; }
  BlockKey our(size_t i) const { return vals_[i].our; }
  uint64_t parent(size_t i) const { return vals_[i].parent; }
  // Starts loading slot i's value and meta.
  void PrefetchSlot(size_t i) const {
    __builtin_prefetch(&vals_[i], 1);
    __builtin_prefetch(&meta_[i], 1);
  }
  uint8_t& meta(size_t i) { return meta_[i]; }
  uint8_t meta(size_t i) const { return meta_[i]; }

  // Shrinks when mostly empty (call at a point where no slot index is held).
  void MaybeShrink() {
    if (cap_ > kMinCapacity && size_ * 4 < cap_) Resize(size_ * 20 / 13 + 1);
  }
  void Reset() {
    Allocate(kMinCapacity);
    size_ = 0;
  }

 private:
  static constexpr size_t kMinCapacity = 16;
  static constexpr size_t kSlotBytes = 3 * sizeof(uint64_t) + 1;

  __extension__ typedef unsigned __int128 U128;

  size_t Home(uint64_t k) const { return static_cast<size_t>((U128(k) * cap_) >> 64); }
  size_t Next(size_t i) const { return i + 1 == cap_ ? 0 : i + 1; }
  size_t Dist(size_t from, size_t to) const { return to >= from ? to - from : to + cap_ - from; }

  void Allocate(size_t cap) {
    cap_ = cap;
    keys_.reset(new uint64_t[cap]());
    vals_.reset(new Val[cap]);
    meta_.reset(new uint8_t[cap]);
  }

  void Resize(size_t cap) {
    if (cap < kMinCapacity) cap = kMinCapacity;
    auto keys = std::move(keys_);
    auto vals = std::move(vals_);
    auto meta = std::move(meta_);
    const size_t old_cap = cap_;
    Allocate(cap);
    for (size_t i = 0; i < old_cap; ++i) {
      if (keys[i] == 0) continue;
      size_t j = Home(keys[i]);
      while (keys_[j] != 0) j = Next(j);
      keys_[j] = keys[i];
      vals_[j] = vals[i];
      meta_[j] = meta[i];
    }
  }

  size_t cap_ = 0;
  size_t size_ = 0;
  std::unique_ptr<uint64_t[]> keys_;
  struct Val {
    BlockKey our;
    uint64_t parent;
  };
  std::unique_ptr<Val[]> vals_;
  std::unique_ptr<uint8_t[]> meta_;
};

}  // namespace aibrix::prefix
