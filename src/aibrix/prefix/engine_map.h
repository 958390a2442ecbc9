// EngineMap: one holder's (pod, tier) map from engine block hash to our block key, with the
// parent link and the bookkeeping that keeps the holder's key set prefix-closed.
//
// A SwissTable-style open-addressing map (as absl's flat_hash_map): one control byte per
// slot (empty, deleted, or 8 bits of the key) probed 16 at a time with SSE2, and 24-byte
// slots {engine key, our key, link}; the link packs the parent's *ref* (its engine key with
// the low byte cleared) and the meta byte (anchored bit, held-children count). A lookup
// reads one control line and one slot; an erase moves nothing: it marks the slot empty, or
// deleted when a 16-slot window around it was ever full (a probe may have passed it; absl's
// rule). When deleted markers use up the room (load 7/8 counting them) they are dropped in
// place (absl's DropDeletesWithoutResize: no allocation) while the live load is 1/2..3/4;
// above, the map doubles; below, it is compacted to load 0.7; below load 1/4 it shrinks.
// The capacity is any integer >= 16 (multiply-shift "fastrange" home slots). 25 bytes per
// slot.
//
// Refs: parent links name the parent by its ref (56 bits), so refs are unique within a map:
// the home slot and control tag depend only on a key's ref, and FindOrPrepare reports a live
// key with the same ref as a conflict (the caller refuses the new key: a 2^-56 event per
// pair of keys). Keys must already be well mixed (ExactIndex passes Mix64 of the engine
// hash) and have a non-zero ref; ref 0 stands for "no parent".
//
// Thread safety: none; the owning pod's mutex guards it.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <memory>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "aibrix/prefix/block_hash.h"  // BlockKey

namespace aibrix::prefix {

class EngineMap {
 public:
  static constexpr size_t kNpos = ~size_t{0};
  static constexpr uint8_t kAnchored = 0x80;  // meta bit: the membership counts (see exact_index.h)
  static constexpr uint8_t kCcMask = 0x7f;    // meta bits: held children, saturating at 127

  // A key's ref: what parent links store.
  static constexpr uint64_t Ref(uint64_t k) { return k & ~uint64_t{0xff}; }

  EngineMap() { Allocate(kMinCapacity); }
  EngineMap(const EngineMap&) = delete;
  EngineMap& operator=(const EngineMap&) = delete;

  size_t size() const { return size_; }
  // Slot indexes run over [0, capacity()); key(i) is 0 for a free slot.
  size_t capacity() const { return cap_; }
  size_t bytes() const { return cap_ * (sizeof(Slot) + 1) + kWindow; }

  // The slot of key k, or kNpos.
  size_t Find(uint64_t k) const {
    const size_t i = FindRef(Ref(k));
    return i != kNpos && slots_[i].key == k ? i : kNpos;
  }
  // The slot of the key whose ref is r (at most one), or kNpos. REQUIRES: r != 0.
  size_t FindRef(uint64_t r) const {
    const uint8_t tag = Tag(r);
    for (size_t pos = Home(r), step = 0;; pos = Wrap(pos + kWindow), step += kWindow) {
      for (uint32_t m = MatchTag(pos, tag); m != 0; m &= m - 1) {
        const size_t i = Wrap(pos + static_cast<size_t>(std::countr_zero(m)));
        if (Ref(slots_[i].key) == r) return i;
      }
      if (MatchEmpty(pos) != 0 || step >= cap_) return kNpos;
    }
  }

  // Write pipelines (see exact_index.cc), all hints only: stage 1 starts loading k's first
  // control window and the two slot lines from its home (keys sit at or just after home);
  // stage 2, once the control bytes arrived, finds the slot an insert or erase of k touches
  // (ProbeSlot) and starts loading it.
  void PrefetchProbe(uint64_t k) const {
    const size_t h = Home(Ref(k));
    __builtin_prefetch(&ctrl_[h], 1);
    __builtin_prefetch(&slots_[h], 1);
    __builtin_prefetch(reinterpret_cast<const char*>(&slots_[h]) + 64, 1);
  }
  // The slot holding k's ref, else the free slot an insert of k would fill.
  size_t ProbeSlot(uint64_t k) const {
    const size_t i = FindRef(Ref(k));
    return i != kNpos ? i : FirstFree(Ref(k));
  }
  void PrefetchSlot(size_t i) const {
    const char* p = reinterpret_cast<const char*>(&slots_[i]);
    __builtin_prefetch(p, 1);
    // A slot may straddle two lines (a quarter of them do).
    if ((reinterpret_cast<uintptr_t>(p) & 63) > 64 - sizeof(Slot)) __builtin_prefetch(p + 63, 1);
  }

  enum class Probe { kEmpty, kFound, kConflict };
  // One probe for an insert: returns k's slot (kFound), the slot of another key with k's ref
  // (kConflict), or a free slot where k goes (kEmpty), rebuilding first when the map is full.
  // Valid until the next insert, erase or rebuild.
  size_t FindOrPrepare(uint64_t k, Probe* result) {
    if (const size_t i = FindRef(Ref(k)); i != kNpos) {
      *result = slots_[i].key == k ? Probe::kFound : Probe::kConflict;
      return i;
    }
    *result = Probe::kEmpty;
    if (growth_left_ == 0) {
      // The room is used up. Full of live keys: grow to twice the size, so a map filling
      // from empty re-places each key about once (growing to load 0.7 would re-place it four
      // times). Mostly deleted markers and sparse (a map that grew, then churned): compact
      // back to load 0.7. Else (a churning map of steady size): drop the markers in place.
      if (size_ * 4 > cap_ * 3) {
        Rebuild(size_ * 2);
      } else if (size_ * 2 < cap_) {
        Rebuild(size_ * 10 / 7);
      } else {
        DropDeleted();
      }
    }
    return FirstFree(Ref(k));
  }
  // Fills the free slot `i` returned by FindOrPrepare(k). `parent` is a ref (0: none).
  void InsertAt(size_t i, uint64_t k, BlockKey our, uint64_t parent, uint8_t meta) {
    if (ctrl_[i] == kEmpty) --growth_left_;
    SetCtrl(i, Tag(k));
    slots_[i] = {k, our, Ref(parent) | meta};
    ++size_;
  }

  // Frees slot i; nothing else moves.
  void EraseAt(size_t i) {
    // Empty when every 16-slot window around i has another empty slot (no probe can have
    // passed through i); else deleted, so probes keep going (absl's rule).
    const uint32_t after = MatchEmpty(i);  // slot i itself is still full
    const uint32_t before = MatchEmpty(Wrap(i + cap_ - kWindow));
    const bool never_full =
        after != 0 && before != 0 &&
        std::countr_zero(after) + std::countl_zero(before << 16) < static_cast<int>(kWindow);
    SetCtrl(i, never_full ? kEmpty : kDeleted);
    if (never_full) ++growth_left_;
    slots_[i].key = 0;
    --size_;
  }

  uint64_t key(size_t i) const { return slots_[i].key; }
  BlockKey our(size_t i) const { return slots_[i].our; }
  // The parent's ref (0: the block starts at the root).
  uint64_t parent(size_t i) const { return Ref(slots_[i].link); }
  uint8_t& meta(size_t i) { return reinterpret_cast<uint8_t*>(&slots_[i].link)[0]; }
  uint8_t meta(size_t i) const { return static_cast<uint8_t>(slots_[i].link); }

  // Shrinks when mostly empty (call at a point where no slot index is held).
  void MaybeShrink() {
    if (cap_ > kMinCapacity && size_ * 4 < cap_) Rebuild(size_ * 10 / 7);
  }
  void Reset() { Allocate(kMinCapacity); }

 private:
  static_assert(std::endian::native == std::endian::little, "meta() is the link's low byte");
  static constexpr size_t kWindow = 16;  // control bytes probed at once
  static constexpr size_t kMinCapacity = 16;
  // Control bytes: kEmpty, kDeleted, or a full slot's tag (2..255).
  static constexpr uint8_t kEmpty = 0;
  static constexpr uint8_t kDeleted = 1;
  struct Slot {
    uint64_t key;
    BlockKey our;
    uint64_t link;  // Ref(parent) | meta
  };

  __extension__ typedef unsigned __int128 U128;

  size_t Home(uint64_t r) const { return static_cast<size_t>((U128(r) * cap_) >> 64); }
  static uint8_t Tag(uint64_t k) {
    const auto t = static_cast<uint8_t>(k >> 8);
    return t > kDeleted ? t : static_cast<uint8_t>(t + 2);
  }
  size_t Wrap(size_t i) const { return i >= cap_ ? i - cap_ : i; }

  // Bit b: control byte pos + b (the array clones its first bytes past the end, so a
  // window never wraps) equals tag / is empty / is empty or deleted.
#if defined(__SSE2__)
  __m128i Window(size_t pos) const {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(&ctrl_[pos]));
  }
  uint32_t MatchTag(size_t pos, uint8_t tag) const {
    return static_cast<uint32_t>(
        _mm_movemask_epi8(_mm_cmpeq_epi8(Window(pos), _mm_set1_epi8(static_cast<char>(tag)))));
  }
  uint32_t MatchEmpty(size_t pos) const {
    return static_cast<uint32_t>(
        _mm_movemask_epi8(_mm_cmpeq_epi8(Window(pos), _mm_set1_epi8(static_cast<char>(kEmpty)))));
  }
  uint32_t MatchFree(size_t pos) const {  // control byte <= kDeleted
    const __m128i w = Window(pos);
    return static_cast<uint32_t>(
        _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(w, _mm_set1_epi8(kDeleted)), w)));
  }
#else
  template <typename Pred>
  uint32_t MatchIf(size_t pos, Pred pred) const {
    uint32_t m = 0;
    for (size_t b = 0; b < kWindow; ++b) m |= static_cast<uint32_t>(pred(ctrl_[pos + b])) << b;
    return m;
  }
  uint32_t MatchTag(size_t pos, uint8_t tag) const {
    return MatchIf(pos, [tag](uint8_t c) { return c == tag; });
  }
  uint32_t MatchEmpty(size_t pos) const {
    return MatchIf(pos, [](uint8_t c) { return c == kEmpty; });
  }
  uint32_t MatchFree(size_t pos) const {
    return MatchIf(pos, [](uint8_t c) { return c <= kDeleted; });
  }
#endif

  void SetCtrl(size_t i, uint8_t c) {
    ctrl_[i] = c;
    if (i < kWindow) ctrl_[cap_ + i] = c;
  }
  // The first empty or deleted slot on r's probe path (one exists: load < 7/8).
  size_t FirstFree(uint64_t r) const {
    for (size_t pos = Home(r);; pos = Wrap(pos + kWindow)) {
      if (const uint32_t m = MatchFree(pos))
        return Wrap(pos + static_cast<size_t>(std::countr_zero(m)));
    }
  }

  void Allocate(size_t cap) {
    cap_ = std::max(cap, kMinCapacity);
    ctrl_.reset(new uint8_t[cap_ + kWindow]);
    std::memset(ctrl_.get(), kEmpty, cap_ + kWindow);
    slots_.reset(new Slot[cap_]());
    size_ = 0;
    growth_left_ = cap_ * 7 / 8;
  }

  size_t Dist(size_t from, size_t to) const { return to >= from ? to - from : to + cap_ - from; }

  // Re-places every entry within the same arrays, dropping deleted markers (absl's
  // DropDeletesWithoutResize): deleted slots become empty and full ones "to place" (marked
  // deleted); each entry to place stays when its first free slot is in its current probe
  // window, else moves there, swapping with an entry still to place.
  void DropDeleted() {
    for (size_t i = 0; i < cap_; ++i) {
      ctrl_[i] = ctrl_[i] <= kDeleted ? kEmpty : kDeleted;
      if (ctrl_[i] == kEmpty) slots_[i].key = 0;
    }
    std::memcpy(&ctrl_[cap_], &ctrl_[0], kWindow);
    for (size_t i = 0; i < cap_; ++i) {
      while (ctrl_[i] == kDeleted) {
        const uint64_t k = slots_[i].key;
        const size_t h = Home(Ref(k));
        const size_t t = FirstFree(Ref(k));
        if (Dist(h, i) / kWindow == Dist(h, t) / kWindow) {
          SetCtrl(i, Tag(k));
        } else if (ctrl_[t] == kEmpty) {
          slots_[t] = slots_[i];
          slots_[i].key = 0;
          SetCtrl(t, Tag(k));
          SetCtrl(i, kEmpty);
        } else {  // t holds an entry still to place: swap, then place that one
          std::swap(slots_[i], slots_[t]);
          SetCtrl(t, Tag(k));
        }
      }
    }
    growth_left_ = cap_ * 7 / 8 - size_;
  }

  // Re-places every entry into `cap` slots (drops deleted markers).
  void Rebuild(size_t cap) {
    auto ctrl = std::move(ctrl_);
    auto slots = std::move(slots_);
    const size_t old_cap = cap_;
    Allocate(cap);
    for (size_t i = 0; i < old_cap; ++i) {
      if (ctrl[i] <= kDeleted) continue;
      const size_t j = FirstFree(Ref(slots[i].key));
      --growth_left_;
      SetCtrl(j, ctrl[i]);
      slots_[j] = slots[i];
      ++size_;
    }
  }

  size_t cap_ = 0;
  size_t size_ = 0;
  size_t growth_left_ = 0;  // inserts into empty slots left before a rebuild
  std::unique_ptr<uint8_t[]> ctrl_;
  std::unique_ptr<Slot[]> slots_;
};

}  // namespace aibrix::prefix
