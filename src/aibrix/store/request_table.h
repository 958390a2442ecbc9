// The in-flight request table behind Store::AddRequest/DoneRequest: request id -> where the
// request was counted, so that it is settled exactly once on the same pod and model states.
//
// Sharded 64 ways by the id's hash, each shard on its own cache lines with its own mutex;
// ids up to kInlineId bytes are stored inline, so the common case allocates nothing.
//
// Thread safety: all methods are safe from any thread.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "aibrix/common/mutex.h"

namespace aibrix::store {

class PodState;
class ModelState;

// Where an in-flight request was counted.
struct InFlightRequest {
  std::shared_ptr<PodState> pod;
  ModelState* model = nullptr;  // null when the model had no entry; lives as long as the Store
  int port = 0;
  // The request's normalised load on the pod, fixed point 1e-9 (0 when not computed).
  int64_t load_nanos = 0;
  // Uncached prompt tokens still counted in the pod's pending_prefill_tokens() (0 once the
  // answer began).
  int64_t prefill_tokens = 0;
  // When set, ExpireRequests settles the request at this time if it is still in flight
  // (routing-API requests whose /cache/done never came).
  std::optional<std::chrono::steady_clock::time_point> expires;
};

class RequestTable {
 public:
  RequestTable() = default;
  RequestTable(const RequestTable&) = delete;
  RequestTable& operator=(const RequestTable&) = delete;

  // Inserts `id`; false (and nothing changes) if it is already present.
  bool Insert(std::string_view id, InFlightRequest request);
  // Removes `id` and returns its entry; nullopt if absent.
  std::optional<InFlightRequest> Take(std::string_view id);
  // Zeroes `id`'s prefill_tokens and returns what it held with the pod it counts on; nullopt
  // if `id` is absent.
  struct Prefill {
    std::shared_ptr<PodState> pod;
    int64_t tokens = 0;
  };
  std::optional<Prefill> TakePrefill(std::string_view id);
  size_t size() const;
  // Removes and returns every entry whose `expires` is at or before `now`. Scans all
  // entries: O(requests in flight).
  std::vector<InFlightRequest> TakeExpired(std::chrono::steady_clock::time_point now);

 private:
  // A request id, inline up to kInlineId bytes, on the heap beyond.
  class Id {
   public:
    explicit Id(std::string_view id);
    std::string_view view() const {
      return heap_.empty() ? std::string_view(inline_.data(), size_) : std::string_view(heap_);
    }
    bool operator==(const Id& other) const { return view() == other.view(); }

   private:
    static constexpr size_t kInlineId = 47;
    std::array<char, kInlineId> inline_{};
    uint8_t size_ = 0;
    std::string heap_;
  };
  struct IdHash {
    using is_transparent = void;
    size_t operator()(std::string_view id) const {
      return absl::Hash<absl::string_view>{}(absl::string_view(id.data(), id.size()));
    }
    size_t operator()(const Id& id) const { return (*this)(id.view()); }
  };
  struct IdEq {
    using is_transparent = void;
    bool operator()(const Id& a, const Id& b) const { return a == b; }
    bool operator()(const Id& a, std::string_view b) const { return a.view() == b; }
    bool operator()(std::string_view a, const Id& b) const { return a == b.view(); }
  };
  struct alignas(64) Shard {
    mutable common::Mutex mu;
    absl::flat_hash_map<Id, InFlightRequest, IdHash, IdEq> requests ABSL_GUARDED_BY(mu);
  };
  static constexpr size_t kShards = 64;

  // The top bits pick the shard; the table inside uses the low ones.
  Shard& ShardFor(size_t hash) { return shards_[(hash >> 58) % kShards]; }

  std::array<Shard, kShards> shards_;
};

}  // namespace aibrix::store
