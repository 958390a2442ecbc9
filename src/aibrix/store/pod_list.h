// PodList: the pods of one model in a Store snapshot (all of them, or the ready subset),
// sorted by key. A value type whose copies share storage: the list is cut into chunks of at
// most kMaxChunk pods, each held by a shared pointer, so a new version made by Put or Erase
// copies the chunk index and the one chunk it changes, never the whole list. One pod's
// change in a model of n pods thus copies about n / 48 chunk pointers and up to 64 pod
// references instead of n (each copy of a pod reference touches the pod's reference count,
// a cache miss per pod in a large fleet).
//
//   PodList next = previous;   // shares every chunk
//   next.Put(pod);             // insert or replace by pod->key
//   next.Erase("ns/name");
//
// Reads (size, operator[], random-access iteration in key order) cost a binary search over
// the chunk index at most. Thread safety: a PodList is not synchronised; a published one is
// never modified (writers change a copy), so any number of threads may read it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <string_view>
#include <vector>

#include "aibrix/store/pod.h"

namespace aibrix::store {

class PodList {
 public:
  static constexpr size_t kMaxChunk = 64;    // a chunk that grows beyond this is split in two
  static constexpr size_t kBuildChunk = 48;  // chunk size when built from a vector

  class const_iterator {
   public:
    using iterator_category = std::random_access_iterator_tag;
    using value_type = PodRef;
    using difference_type = std::ptrdiff_t;
    using pointer = const PodRef*;
    using reference = const PodRef&;

    const_iterator() = default;
    reference operator*() const { return (*list_->chunks_[chunk_])[offset_]; }
    pointer operator->() const { return &**this; }
    reference operator[](difference_type n) const { return *(*this + n); }
    const_iterator& operator++() {
      ++index_;
      if (++offset_ == list_->chunks_[chunk_]->size()) {
        ++chunk_;
        offset_ = 0;
      }
      return *this;
    }
    const_iterator operator++(int) {
      const_iterator before = *this;
      ++*this;
      return before;
    }
    const_iterator& operator--() { return *this = const_iterator(list_, index_ - 1); }
    const_iterator operator--(int) {
      const_iterator before = *this;
      --*this;
      return before;
    }
    const_iterator& operator+=(difference_type n) {
      return *this = const_iterator(list_,
                                    static_cast<size_t>(static_cast<difference_type>(index_) + n));
    }
    const_iterator& operator-=(difference_type n) { return *this += -n; }
    friend const_iterator operator+(const_iterator it, difference_type n) { return it += n; }
    friend const_iterator operator+(difference_type n, const_iterator it) { return it += n; }
    friend const_iterator operator-(const_iterator it, difference_type n) { return it -= n; }
    friend difference_type operator-(const const_iterator& a, const const_iterator& b) {
      return static_cast<difference_type>(a.index_) - static_cast<difference_type>(b.index_);
    }
    friend bool operator==(const const_iterator& a, const const_iterator& b) {
      return a.index_ == b.index_;
    }
    friend auto operator<=>(const const_iterator& a, const const_iterator& b) {
      return a.index_ <=> b.index_;
    }

   private:
    friend class PodList;
    const_iterator(const PodList* list, size_t index);

    const PodList* list_ = nullptr;
    size_t index_ = 0;   // position in the list
    size_t chunk_ = 0;   // chunk holding it (chunks_.size() at the end)
    size_t offset_ = 0;  // position in that chunk
  };
  using iterator = const_iterator;
  using value_type = PodRef;
  using size_type = size_t;

  PodList() = default;
  // REQUIRES: `sorted` is sorted by key without duplicates.
  explicit PodList(std::vector<PodRef> sorted);

  size_t size() const { return ends_.empty() ? 0 : ends_.back(); }
  bool empty() const { return ends_.empty(); }
  const PodRef& operator[](size_t i) const;
  const PodRef& front() const { return chunks_.front()->front(); }
  const PodRef& back() const { return chunks_.back()->back(); }
  const_iterator begin() const { return const_iterator(this, 0); }
  const_iterator end() const { return const_iterator(this, size()); }
  // The pod of `key`, or null.
  const PodRef* Find(std::string_view key) const;

  // Inserts `pod` in key order, or replaces the pod of the same key. REQUIRES: pod != null.
  void Put(PodRef pod);
  // Removes the pod of `key`; false when absent.
  bool Erase(std::string_view key);

 private:
  using Chunk = std::vector<PodRef>;
  // The chunk that holds `key` or would hold it: the last whose first key is <= key (0 when
  // none is); chunks_ must not be empty.
  size_t ChunkFor(std::string_view key) const;
  // Position of `key` in `chunk` (first pod whose key is not less than it).
  static size_t OffsetIn(const Chunk& chunk, std::string_view key);
  // Replaces chunk `c` with `pods` (split in two when too big, dropped when empty).
  void Replace(size_t c, Chunk pods);

  std::vector<std::shared_ptr<const Chunk>> chunks_;  // never empty chunks
  std::vector<uint32_t> ends_;  // ends_[c]: pods in chunks 0..c (running total)
};

}  // namespace aibrix::store
