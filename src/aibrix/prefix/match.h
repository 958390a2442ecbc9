// PrefixMatcher: one call for the routers and for POST /cache/match — hash a prompt once and
// ask both indexes (engine events: exact; routing decisions: approximate) which pods hold
// how many of its leading blocks. Also the JSON shapes the server returns.
//
// JSON of a MatchResponse (POST /cache/match):
//   {"block_size": 16, "total_blocks": 3,
//    "pods": [{"pod": "ns/a", "matched_blocks": 3, "tier": "GPU", "source": "events"}, ...]}
// pods: sorted by matched_blocks (desc), then pod, tier, source; only pods with >= 1 block.
//
// Thread safety: PrefixMatcher is immutable; Match may run on any number of threads
// concurrently with writes to the indexes.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "aibrix/prefix/approx_index.h"
#include "aibrix/prefix/exact_index.h"
#include "aibrix/prefix/types.h"
#include "nlohmann/json_fwd.hpp"

namespace aibrix::prefix {

struct MatchResponse {
  int block_size = kDefaultBlockSize;
  size_t total_blocks = 0;  // complete blocks in the prompt
  std::vector<PodMatch> pods;
};

void to_json(nlohmann::json& j, const PodMatch& m);
void to_json(nlohmann::json& j, const MatchResponse& r);
// For /cache/pods, appended to `out` as a JSON object: {"blocks", "bytes", "evicted_blocks",
// "model", "pod", "skipped_events", "source", "tiers": {"GPU": n, ...}, "unknown_removes",
// "unplaceable_blocks"}.
void AppendJson(std::string* out, const PodIndexStats& s);

class PrefixMatcher {
 public:
  // Either index may be null (not configured). Both must hash alike.
  // Returns InvalidArgument when their block sizes or chain schemes differ, or both are null.
  static absl::StatusOr<PrefixMatcher> Create(const ExactIndex* exact, const ApproxIndex* approx);

  const BlockHasher& hasher() const { return *hasher_; }

  // The prompt's block keys under (model, lora); lora "" = base model.
  std::vector<BlockKey> Keys(std::string_view model, std::string_view lora,
                             std::span<const uint32_t> tokens) const;

  // Receives one holder of a query's leading blocks; valid only during the call.
  using SourceVisitor = absl::FunctionRef<void(std::string_view pod, std::string_view tier,
                                               uint32_t blocks, MatchSource source)>;
  // Both indexes' holders for precomputed keys, unsorted, without allocating: what the
  // routers call per request.
  void VisitKeys(std::span<const BlockKey> keys, SourceVisitor visit) const;

  // Both indexes' answers for precomputed keys, and for tokens, sorted (see above).
  MatchResponse MatchKeys(std::span<const BlockKey> keys) const;
  MatchResponse Match(std::string_view model, std::string_view lora,
                      std::span<const uint32_t> tokens) const;

 private:
  PrefixMatcher(const ExactIndex* exact, const ApproxIndex* approx, const BlockHasher* hasher)
      : exact_(exact), approx_(approx), hasher_(hasher) {}

  const ExactIndex* exact_;
  const ApproxIndex* approx_;
  const BlockHasher* hasher_;
};

}  // namespace aibrix::prefix
