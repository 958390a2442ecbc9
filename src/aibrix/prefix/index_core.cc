#include "aibrix/prefix/index_core.h"

#include "prometheus/family.h"
#include "prometheus/gauge.h"

namespace aibrix::prefix {

IndexCore::IndexCore(int block_size, ChainScheme scheme, MatchSource source,
                     prometheus::Family<prometheus::Gauge>* pod_blocks)
    : hasher_(block_size, scheme),
      source_(source),
      pod_blocks_(pod_blocks),
      table_(epoch_),
      directory_(epoch_) {}

template <typename Cursor>
void IndexCore::Search(Cursor& cursor, MatchVisitor visit) const {
  // One result buffer per thread, reused (no allocation per query); moved out for the
  // duration of the call so that a visitor that queries again gets a fresh one.
  thread_local std::vector<HolderMatch> spare;
  std::vector<HolderMatch> found = std::move(spare);
  found.clear();
  {
    EpochManager::ReadGuard guard(epoch_);
    const HolderDirectory::Snapshot& snap = directory_.snapshot();
    SearchPrefix(table_, snap.group_masks, cursor, &found);
    for (const HolderMatch& m : found) {
      const HolderName& name = snap.by_id[m.holder];
      visit(name.pod, name.tier, m.blocks);
    }
  }
  spare = std::move(found);
}

void IndexCore::MatchKeys(std::span<const BlockKey> keys, MatchVisitor visit) const {
  KeyCursor cursor(keys);
  Search(cursor, visit);
}

void IndexCore::MatchTokens(const HashContext& ctx, std::span<const uint32_t> tokens,
                            MatchVisitor visit) const {
  KeyCursor cursor(hasher_, ContextRoot(ctx), tokens);
  Search(cursor, visit);
}

std::vector<PodMatch> IndexCore::Match(const HashContext& ctx,
                                       std::span<const uint32_t> tokens) const {
  std::vector<PodMatch> out;
  MatchTokens(ctx, tokens, [&](std::string_view pod, std::string_view tier, uint32_t blocks) {
    out.push_back(PodMatch{std::string(pod), blocks, std::string(tier), source_});
  });
  std::sort(out.begin(), out.end(), [](const PodMatch& a, const PodMatch& b) {
    if (a.matched_blocks != b.matched_blocks) return a.matched_blocks > b.matched_blocks;
    if (a.pod != b.pod) return a.pod < b.pod;
    return a.tier < b.tier;
  });
  return out;
}

prometheus::Gauge* IndexCore::AddPodGauge(const std::string& pod) {
  if (pod_blocks_ == nullptr) return nullptr;
  return &pod_blocks_->Add({{"pod", pod}, {"source", std::string(MatchSourceName(source_))}});
}

void IndexCore::RemovePodGauge(prometheus::Gauge* gauge) {
  if (pod_blocks_ != nullptr && gauge != nullptr) pod_blocks_->Remove(gauge);
}

}  // namespace aibrix::prefix
