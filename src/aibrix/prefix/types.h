// Value types shared by the exact index, the approximate index and the match facade.
//
// Thread safety: plain values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace aibrix::prefix {

// Where a holding comes from.
enum class MatchSource { kEvents, kRouting };

inline std::string_view MatchSourceName(MatchSource s) {
  return s == MatchSource::kEvents ? "events" : "routing";
}

// One holder's answer to a query: `pod` holds the first `matched_blocks` blocks in `tier`.
struct PodMatch {
  std::string pod;
  uint32_t matched_blocks = 0;
  std::string tier;
  MatchSource source = MatchSource::kEvents;

  bool operator==(const PodMatch&) const = default;
};

// Per-tier size of one pod.
struct TierCount {
  std::string tier;
  uint64_t blocks = 0;
  bool operator==(const TierCount&) const = default;
};

// What the index holds for one pod (shown by the server in /cache/pods).
struct PodIndexStats {
  std::string pod;
  std::string model;
  MatchSource source = MatchSource::kEvents;
  uint64_t blocks = 0;              // memberships, all tiers
  std::vector<TierCount> tiers;     // per tier
  uint64_t bytes = 0;               // this pod's own structures (reverse maps), from capacities
  uint64_t unplaceable_blocks = 0;  // stored blocks dropped: parent engine hash unknown
  uint64_t unknown_removes = 0;     // removed hashes the pod never stored
  uint64_t skipped_events = 0;      // bad block size / length / non-main group / tiers
  uint64_t evicted_blocks = 0;      // dropped by the memory budget
};

}  // namespace aibrix::prefix
