#include "aibrix/store/pod_list.h"

#include <algorithm>
#include <utility>

namespace aibrix::store {

PodList::const_iterator::const_iterator(const PodList* list, size_t index)
    : list_(list), index_(index) {
  const auto& ends = list->ends_;
  chunk_ = static_cast<size_t>(std::upper_bound(ends.begin(), ends.end(), index) - ends.begin());
  offset_ = index - (chunk_ == 0 ? 0 : ends[chunk_ - 1]);
}

PodList::PodList(std::vector<PodRef> sorted) {
  const size_t n = sorted.size();
  if (n == 0) return;
  if (n <= kMaxChunk) {
    chunks_.push_back(std::make_shared<const Chunk>(std::move(sorted)));
    ends_.push_back(static_cast<uint32_t>(n));
    return;
  }
  chunks_.reserve((n + kBuildChunk - 1) / kBuildChunk);
  ends_.reserve(chunks_.capacity());
  for (size_t at = 0; at < n; at += kBuildChunk) {
    const size_t end = std::min(n, at + kBuildChunk);
    chunks_.push_back(std::make_shared<const Chunk>(std::make_move_iterator(sorted.begin() + at),
                                                    std::make_move_iterator(sorted.begin() + end)));
    ends_.push_back(static_cast<uint32_t>(end));
  }
}

const PodRef& PodList::operator[](size_t i) const {
  if (chunks_.size() == 1) return (*chunks_[0])[i];
  const size_t c =
      static_cast<size_t>(std::upper_bound(ends_.begin(), ends_.end(), i) - ends_.begin());
  return (*chunks_[c])[i - (c == 0 ? 0 : ends_[c - 1])];
}

size_t PodList::ChunkFor(std::string_view key) const {
  // The first chunk whose first key is greater than `key`, minus one.
  const auto it =
      std::upper_bound(chunks_.begin() + 1, chunks_.end(), key,
                       [](std::string_view k, const std::shared_ptr<const Chunk>& chunk) {
                         return k < std::string_view(chunk->front()->key);
                       });
  return static_cast<size_t>(it - chunks_.begin()) - 1;
}

size_t PodList::OffsetIn(const Chunk& chunk, std::string_view key) {
  return static_cast<size_t>(std::lower_bound(chunk.begin(), chunk.end(), key,
                                              [](const PodRef& pod, std::string_view k) {
                                                return std::string_view(pod->key) < k;
                                              }) -
                             chunk.begin());
}

const PodRef* PodList::Find(std::string_view key) const {
  if (chunks_.empty()) return nullptr;
  const Chunk& chunk = *chunks_[ChunkFor(key)];
  const size_t at = OffsetIn(chunk, key);
  return at < chunk.size() && chunk[at]->key == key ? &chunk[at] : nullptr;
}

void PodList::Put(PodRef pod) {
  if (chunks_.empty()) {
    chunks_.push_back(std::make_shared<const Chunk>(Chunk{std::move(pod)}));
    ends_.push_back(1);
    return;
  }
  const size_t c = ChunkFor(pod->key);
  Chunk next = *chunks_[c];
  const size_t at = OffsetIn(next, pod->key);
  if (at < next.size() && next[at]->key == pod->key) {
    next[at] = std::move(pod);
  } else {
    next.insert(next.begin() + static_cast<std::ptrdiff_t>(at), std::move(pod));
  }
  Replace(c, std::move(next));
}

bool PodList::Erase(std::string_view key) {
  if (chunks_.empty()) return false;
  const size_t c = ChunkFor(key);
  const size_t at = OffsetIn(*chunks_[c], key);
  if (at == chunks_[c]->size() || (*chunks_[c])[at]->key != key) return false;
  Chunk next;
  next.reserve(chunks_[c]->size() - 1);
  next.insert(next.end(), chunks_[c]->begin(),
              chunks_[c]->begin() + static_cast<std::ptrdiff_t>(at));
  next.insert(next.end(), chunks_[c]->begin() + static_cast<std::ptrdiff_t>(at) + 1,
              chunks_[c]->end());
  Replace(c, std::move(next));
  return true;
}

void PodList::Replace(size_t c, Chunk pods) {
  const auto at = static_cast<std::ptrdiff_t>(c);
  if (pods.empty()) {
    chunks_.erase(chunks_.begin() + at);
    ends_.erase(ends_.begin() + at);
  } else if (pods.size() > kMaxChunk) {
    const auto half = pods.begin() + static_cast<std::ptrdiff_t>(pods.size() / 2);
    chunks_[c] = std::make_shared<const Chunk>(std::make_move_iterator(pods.begin()),
                                               std::make_move_iterator(half));
    chunks_.insert(chunks_.begin() + at + 1,
                   std::make_shared<const Chunk>(std::make_move_iterator(half),
                                                 std::make_move_iterator(pods.end())));
    ends_.insert(ends_.begin() + at, 0);  // set below
  } else {
    chunks_[c] = std::make_shared<const Chunk>(std::move(pods));
  }
  // Running totals from chunk c on.
  uint32_t total = c == 0 ? 0 : ends_[c - 1];
  for (size_t i = c; i < chunks_.size(); ++i) {
    total += static_cast<uint32_t>(chunks_[i]->size());
    ends_[i] = total;
  }
}

}  // namespace aibrix::store
