// SnapshotMap: the immutable key -> record maps of a Store snapshot (pods by key, models by
// name). The map is split into 1,024 shards, grouped 32 to a group; groups and shards are
// held by shared pointers, and a new snapshot shares every group and shard the change does
// not touch: publishing one pod's change copies the group array (32 pointers), one group
// (32) and one shard (about 10 entries at 10,000 pods) rather than the whole map. Each copied
// entry costs a reference-count update on its record, a cache miss in a large fleet, so the
// shards are kept small. A shard is a vector sorted by (key hash, key) whose entries keep
// their hash and a view of the key inside the record, so copying one hashes nothing and
// copies no string.
//
//   SnapshotMap<Pod, &Pod::key>::Builder next(previous->pods);
//   next.Put(record);                   // insert or replace by record->key
//   next.Erase("ns/name");
//   SnapshotMap<Pod, &Pod::key> pods = std::move(next).Build();
//
// Thread safety: a built map is immutable and may be read from any thread; a Builder is
// used by one thread.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"

namespace aibrix::store {

template <class T, std::string T::*kKey>
class SnapshotMap {
 public:
  using Ref = std::shared_ptr<const T>;
  static constexpr size_t kGroups = 32;
  static constexpr size_t kShardsPerGroup = 32;
  static constexpr size_t kShards = kGroups * kShardsPerGroup;
  // One entry: the key's hash (kept, so a shard is copied without hashing anything), a view
  // of the key inside the record, the record. A shard is sorted by (hash, key).
  struct Slot {
    uint64_t hash;
    absl::string_view key;
    Ref value;
  };
  using Shard = std::vector<Slot>;
  using Group = std::array<std::shared_ptr<const Shard>, kShardsPerGroup>;  // null: empty

  // The record of `key`, or null.
  const Ref* Find(std::string_view key) const {
    const uint64_t hash = HashOf(key);
    const size_t index = ShardOf(hash);
    const auto& group = groups_[index / kShardsPerGroup];
    if (group == nullptr) return nullptr;
    const auto& shard = (*group)[index % kShardsPerGroup];
    if (shard == nullptr) return nullptr;
    const auto it = LowerBound(*shard, hash, key);
    return it != shard->end() && it->hash == hash && it->key == ToAbsl(key) ? &it->value : nullptr;
  }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // Calls fn(const Ref&) for every record, in no particular order.
  template <class Fn>
  void ForEach(Fn&& fn) const {
    for (const auto& group : groups_) {
      if (group == nullptr) continue;
      for (const auto& shard : *group) {
        if (shard == nullptr) continue;
        for (const Slot& slot : *shard) fn(slot.value);
      }
    }
  }

  // Builds the next map from a published one.
  class Builder {
   public:
    explicit Builder(const SnapshotMap& base) : map_(base) {}
    // Inserts or replaces the record under its key. REQUIRES: value != nullptr.
    void Put(Ref value) {
      const std::string& key = (*value).*kKey;
      const uint64_t hash = HashOf(key);
      Shard& shard = Own(ShardOf(hash));
      auto it = LowerBound(shard, hash, key);
      if (it != shard.end() && it->hash == hash && it->key == ToAbsl(key)) {
        it->key = ToAbsl(key);  // now a view into the new record
        it->value = std::move(value);
        return;
      }
      shard.insert(it, Slot{hash, ToAbsl(key), std::move(value)});
      ++map_.size_;
    }
    // Removes `key`; false when absent.
    bool Erase(std::string_view key) {
      const uint64_t hash = HashOf(key);
      const size_t index = ShardOf(hash);
      const auto& group = map_.groups_[index / kShardsPerGroup];
      if (group == nullptr || (*group)[index % kShardsPerGroup] == nullptr) return false;
      const auto& base = *(*group)[index % kShardsPerGroup];
      const auto found = LowerBound(base, hash, key);
      if (found == base.end() || found->hash != hash || found->key != ToAbsl(key)) return false;
      const size_t at = static_cast<size_t>(found - base.begin());
      Shard& shard = Own(index);
      shard.erase(shard.begin() + static_cast<std::ptrdiff_t>(at));
      --map_.size_;
      return true;
    }
    SnapshotMap Build() && { return std::move(map_); }

   private:
    // The shard, copied (with its group) from the base map on its first change.
    Shard& Own(size_t index) {
      if (owned_[index] != nullptr) return *owned_[index];
      const size_t g = index / kShardsPerGroup;
      if (owned_groups_[g] == nullptr) {
        const auto& base = map_.groups_[g];
        auto fresh = base == nullptr ? std::make_shared<Group>() : std::make_shared<Group>(*base);
        owned_groups_[g] = fresh.get();
        map_.groups_[g] = std::move(fresh);
      }
      auto& slot = (*owned_groups_[g])[index % kShardsPerGroup];
      auto fresh = slot == nullptr ? std::make_shared<Shard>() : std::make_shared<Shard>(*slot);
      owned_[index] = fresh.get();
      slot = std::move(fresh);
      return *owned_[index];
    }

    SnapshotMap map_;
    std::array<Group*, kGroups> owned_groups_{};  // the groups copied by this builder
    std::array<Shard*, kShards> owned_{};         // the shards copied by this builder
  };

 private:
  static_assert(kShards == 1024, "ShardOf takes the top 10 bits");

  static absl::string_view ToAbsl(std::string_view key) {
    return absl::string_view(key.data(), key.size());
  }
  static uint64_t HashOf(std::string_view key) {
    return static_cast<uint64_t>(absl::Hash<absl::string_view>{}(ToAbsl(key)));
  }
  static size_t ShardOf(uint64_t hash) { return static_cast<size_t>(hash >> 54); }
  template <class Vector>
  static auto LowerBound(Vector& shard, uint64_t hash, std::string_view key) {
    return std::lower_bound(shard.begin(), shard.end(), std::pair(hash, ToAbsl(key)),
                            [](const Slot& slot, const std::pair<uint64_t, absl::string_view>& k) {
                              return slot.hash != k.first ? slot.hash < k.first
                                                          : slot.key < k.second;
                            });
  }

  std::array<std::shared_ptr<const Group>, kGroups> groups_;  // null: empty
  size_t size_ = 0;
};

}  // namespace aibrix::store
