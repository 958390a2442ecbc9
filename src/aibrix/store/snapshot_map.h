// SnapshotMap: the immutable key -> record maps of a Store snapshot (pods by key, models by
// name). The map is split into shards held by shared pointers, and a new snapshot shares
// every shard the change does not touch: publishing one pod's change copies one shard (a
// few dozen entries at 10,000 pods) rather than the whole map. Keys are views into the
// records' own key strings, so copying a shard copies no string.
//
//   SnapshotMap<Pod, &Pod::key>::Builder next(previous->pods);
//   next.Put(record);                   // insert or replace by record->key
//   next.Erase("ns/name");
//   SnapshotMap<Pod, &Pod::key> pods = std::move(next).Build();
//
// Thread safety: a built map is immutable and may be read from any thread; a Builder is
// used by one thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"

namespace aibrix::store {

template <class T, std::string T::*kKey>
class SnapshotMap {
 public:
  using Ref = std::shared_ptr<const T>;
  static constexpr size_t kShards = 128;
  using Shard = absl::flat_hash_map<absl::string_view, Ref>;

  // The record of `key`, or null.
  const Ref* Find(std::string_view key) const {
    const auto& shard = shards_[ShardOf(key)];
    if (shard == nullptr) return nullptr;
    auto it = shard->find(absl::string_view(key.data(), key.size()));
    return it == shard->end() ? nullptr : &it->second;
  }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // Calls fn(const Ref&) for every record, in no particular order.
  template <class Fn>
  void ForEach(Fn&& fn) const {
    for (const auto& shard : shards_) {
      if (shard == nullptr) continue;
      for (const auto& [key, value] : *shard) fn(value);
    }
  }

  // Builds the next map from a published one.
  class Builder {
   public:
    explicit Builder(const SnapshotMap& base) : map_(base) {}
    // Inserts or replaces the record under its key. REQUIRES: value != nullptr.
    void Put(Ref value) {
      const std::string& key = (*value).*kKey;
      Shard& shard = Own(ShardOf(key));
      auto [it, inserted] = shard.try_emplace(absl::string_view(key.data(), key.size()));
      if (!inserted) {
        // The key view must point into the record now held.
        shard.erase(it);
        it = shard.try_emplace(absl::string_view(key.data(), key.size())).first;
      } else {
        ++map_.size_;
      }
      it->second = std::move(value);
    }
    // Removes `key`; false when absent.
    bool Erase(std::string_view key) {
      const size_t index = ShardOf(key);
      if (map_.shards_[index] == nullptr ||
          !map_.shards_[index]->contains(absl::string_view(key.data(), key.size()))) {
        return false;
      }
      Own(index).erase(absl::string_view(key.data(), key.size()));
      --map_.size_;
      return true;
    }
    SnapshotMap Build() && { return std::move(map_); }

   private:
    // The shard, copied from the base map on its first change.
    Shard& Own(size_t index) {
      if (owned_[index] == nullptr) {
        const auto& base = map_.shards_[index];
        auto fresh = base == nullptr ? std::make_shared<Shard>() : std::make_shared<Shard>(*base);
        owned_[index] = fresh.get();
        map_.shards_[index] = std::move(fresh);
      }
      return *owned_[index];
    }

    SnapshotMap map_;
    std::array<Shard*, kShards> owned_{};  // the shards copied by this builder
  };

 private:
  static_assert(kShards == 128, "ShardOf takes the top 7 bits");

  // The top bits of the hash (the shards' own tables use the low ones).
  static size_t ShardOf(std::string_view key) {
    const size_t hash = absl::Hash<absl::string_view>{}(absl::string_view(key.data(), key.size()));
    return static_cast<size_t>(static_cast<uint64_t>(hash) >> 57);
  }

  std::array<std::shared_ptr<const Shard>, kShards> shards_;  // null: empty
  size_t size_ = 0;
};

}  // namespace aibrix::store
