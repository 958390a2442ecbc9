#include "aibrix/prefix/match.h"

#include <algorithm>

#include "aibrix/common/json_writer.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace aibrix::prefix {

void to_json(nlohmann::json& j, const PodMatch& m) {
  j = nlohmann::json{{"pod", m.pod},
                     {"matched_blocks", m.matched_blocks},
                     {"tier", m.tier},
                     {"source", std::string(MatchSourceName(m.source))}};
}

void to_json(nlohmann::json& j, const MatchResponse& r) {
  nlohmann::json pods = nlohmann::json::array();
  for (const PodMatch& m : r.pods) pods.push_back(m);
  j = nlohmann::json{
      {"block_size", r.block_size}, {"total_blocks", r.total_blocks}, {"pods", std::move(pods)}};
}

void AppendJson(std::string* out, const PodIndexStats& s) {
  common::JsonObjectWriter o(out);
  o.Int("blocks", static_cast<int64_t>(s.blocks));
  o.Int("bytes", static_cast<int64_t>(s.bytes));
  o.Int("evicted_blocks", static_cast<int64_t>(s.evicted_blocks));
  o.String("model", s.model);
  o.String("pod", s.pod);
  o.Int("skipped_events", static_cast<int64_t>(s.skipped_events));
  o.String("source", MatchSourceName(s.source));
  {
    std::vector<const TierCount*> tiers;
    for (const TierCount& t : s.tiers) tiers.push_back(&t);
    std::sort(tiers.begin(), tiers.end(),
              [](const TierCount* a, const TierCount* b) { return a->tier < b->tier; });
    common::JsonObjectWriter by_tier(o.Key("tiers"));
    for (const TierCount* t : tiers) by_tier.Int(t->tier, static_cast<int64_t>(t->blocks));
  }
  o.Int("unknown_removes", static_cast<int64_t>(s.unknown_removes));
  o.Int("unplaceable_blocks", static_cast<int64_t>(s.unplaceable_blocks));
}

absl::StatusOr<PrefixMatcher> PrefixMatcher::Create(const ExactIndex* exact,
                                                    const ApproxIndex* approx) {
  if (exact == nullptr && approx == nullptr) {
    return absl::InvalidArgumentError("prefix matcher: no index configured");
  }
  if (exact != nullptr && approx != nullptr &&
      (exact->hasher().block_size() != approx->hasher().block_size() ||
       exact->hasher().scheme() != approx->hasher().scheme())) {
    return absl::InvalidArgumentError(
        fmt::format("prefix matcher: exact index block size {} and approximate index block "
                    "size {} (or chain schemes) differ",
                    exact->hasher().block_size(), approx->hasher().block_size()));
  }
  return PrefixMatcher(exact, approx, exact ? &exact->hasher() : &approx->hasher());
}

std::vector<BlockKey> PrefixMatcher::Keys(std::string_view model, std::string_view lora,
                                          std::span<const uint32_t> tokens) const {
  return hasher_->Hash(HashContext{model, lora, 0}, tokens);
}

void PrefixMatcher::VisitKeys(std::span<const BlockKey> keys, SourceVisitor visit) const {
  const auto from = [&visit](MatchSource source) {
    return [&visit, source](std::string_view pod, std::string_view tier, uint32_t blocks) {
      visit(pod, tier, blocks, source);
    };
  };
  if (exact_) exact_->MatchKeys(keys, from(MatchSource::kEvents));
  if (approx_) approx_->MatchKeys(keys, from(MatchSource::kRouting));
}

MatchResponse PrefixMatcher::MatchKeys(std::span<const BlockKey> keys) const {
  MatchResponse r;
  r.block_size = hasher_->block_size();
  r.total_blocks = keys.size();
  VisitKeys(keys,
            [&r](std::string_view pod, std::string_view tier, uint32_t blocks, MatchSource source) {
              r.pods.push_back(PodMatch{std::string(pod), blocks, std::string(tier), source});
            });
  std::sort(r.pods.begin(), r.pods.end(), [](const PodMatch& a, const PodMatch& b) {
    if (a.matched_blocks != b.matched_blocks) return a.matched_blocks > b.matched_blocks;
    if (a.pod != b.pod) return a.pod < b.pod;
    if (a.tier != b.tier) return a.tier < b.tier;
    return a.source < b.source;
  });
  return r;
}

MatchResponse PrefixMatcher::Match(std::string_view model, std::string_view lora,
                                   std::span<const uint32_t> tokens) const {
  const std::vector<BlockKey> keys = Keys(model, lora, tokens);
  return MatchKeys(keys);
}

}  // namespace aibrix::prefix
