#include "block_pool.h"

#include <algorithm>

namespace aibrix::enginesim {

BlockPool::BlockPool(int num_blocks, int block_size)
    : block_size_(block_size), blocks_(static_cast<size_t>(num_blocks)) {
  for (int i = 0; i < num_blocks; ++i) PushBack(i);
}

void BlockPool::PushBack(int id) {
  Block& b = blocks_[id];
  b.prev = tail_;
  b.next = -1;
  if (tail_ >= 0) {
    blocks_[tail_].next = id;
  } else {
    head_ = id;
  }
  tail_ = id;
  b.in_free_queue = true;
  ++num_free_;
}

void BlockPool::Unlink(int id) {
  Block& b = blocks_[id];
  if (b.prev >= 0) {
    blocks_[b.prev].next = b.next;
  } else {
    head_ = b.next;
  }
  if (b.next >= 0) {
    blocks_[b.next].prev = b.prev;
  } else {
    tail_ = b.prev;
  }
  b.prev = b.next = -1;
  b.in_free_queue = false;
  --num_free_;
}

void BlockPool::Uncache(int id) {
  Block& b = blocks_[id];
  if (!b.cached) return;
  cached_.erase(b.hash);
  b.cached = false;
  b.parent.reset();
  b.tokens.clear();
  b.tokens.shrink_to_fit();
  b.lora_name.clear();
}

int BlockPool::CountCachedPrefix(std::span<const BlockHash> hashes) const {
  int n = 0;
  for (BlockHash h : hashes) {
    if (!cached_.contains(h)) break;
    ++n;
  }
  return n;
}

int BlockPool::CountFreeAmongCached(std::span<const BlockHash> hashes, int n) const {
  int free = 0;
  for (int i = 0; i < n; ++i) {
    if (blocks_[cached_.at(hashes[i])].ref_cnt == 0) ++free;
  }
  return free;
}

std::vector<int> BlockPool::TouchCached(std::span<const BlockHash> hashes, int n) {
  std::vector<int> ids;
  ids.reserve(n);
  for (int i = 0; i < n; ++i) {
    const int id = cached_.at(hashes[i]);
    Block& b = blocks_[id];
    if (b.ref_cnt == 0) Unlink(id);
    ++b.ref_cnt;
    ids.push_back(id);
  }
  return ids;
}

int BlockPool::Allocate() {
  const int id = head_;
  Unlink(id);
  Block& b = blocks_[id];
  if (b.cached) {
    auto& removed =
        std::get<kv::BlockRemoved>(events_.emplace_back(std::in_place_type<kv::BlockRemoved>));
    removed.block_hashes.push_back(b.hash);
    removed.medium = "GPU";
    Uncache(id);
  }
  b.ref_cnt = 1;
  return id;
}

void BlockPool::CacheFullBlocks(std::span<const int> block_ids, std::span<const BlockHash> hashes,
                                std::span<const uint32_t> tokens, int from, int to,
                                std::string_view lora_name, int64_t lora_id) {
  kv::BlockStored* run = nullptr;
  for (int i = from; i < to; ++i) {
    Block& b = blocks_[block_ids[i]];
    const BlockHash h = hashes[i];
    if (b.cached || cached_.contains(h)) {
      run = nullptr;  // a block already announced (here or in another block) ends the run
      continue;
    }
    b.cached = true;
    b.hash = h;
    b.block_index = i;
    if (i > 0) b.parent = hashes[i - 1];
    b.tokens.assign(tokens.begin() + static_cast<ptrdiff_t>(i) * block_size_,
                    tokens.begin() + static_cast<ptrdiff_t>(i + 1) * block_size_);
    b.lora_name = lora_name;
    cached_.emplace(h, block_ids[i]);
    if (run == nullptr) {
      run = &std::get<kv::BlockStored>(events_.emplace_back(std::in_place_type<kv::BlockStored>));
      run->parent_block_hash = b.parent;
      run->block_size = block_size_;
      run->medium = "GPU";
      if (!lora_name.empty()) {
        run->lora_name = std::string(lora_name);
        run->lora_id = lora_id;
      }
    }
    run->block_hashes.push_back(h);
    run->token_ids.insert(run->token_ids.end(), b.tokens.begin(), b.tokens.end());
  }
}

void BlockPool::Free(std::span<const int> block_ids) {
  for (auto it = block_ids.rbegin(); it != block_ids.rend(); ++it) {
    Block& b = blocks_[*it];
    if (--b.ref_cnt == 0) PushBack(*it);
  }
}

bool BlockPool::ResetPrefixCache() {
  if (num_free_ != num_blocks()) return false;
  for (int i = 0; i < num_blocks(); ++i) Uncache(i);
  events_.emplace_back(std::in_place_type<kv::AllBlocksCleared>);
  return true;
}

void BlockPool::DropAll() {
  head_ = tail_ = -1;
  num_free_ = 0;
  cached_.clear();
  for (int i = 0; i < num_blocks(); ++i) {
    blocks_[i] = Block{};
    PushBack(i);
  }
  events_.clear();
}

std::vector<kv::Event> BlockPool::TakeEvents() {
  std::vector<kv::Event> out;
  out.swap(events_);
  return out;
}

std::vector<CachedBlock> BlockPool::Snapshot() const {
  std::vector<CachedBlock> out;
  out.reserve(cached_.size());
  auto add = [&](int id) {
    const Block& b = blocks_[id];
    out.push_back(CachedBlock{.block_id = id,
                              .hash = b.hash,
                              .parent = b.parent,
                              .block_index = b.block_index,
                              .ref_cnt = b.ref_cnt,
                              .tokens = b.tokens,
                              .lora_name = b.lora_name});
  };
  for (int id = head_; id >= 0; id = blocks_[id].next) {
    if (blocks_[id].cached) add(id);
  }
  for (int id = 0; id < num_blocks(); ++id) {
    if (blocks_[id].cached && blocks_[id].ref_cnt > 0) add(id);
  }
  return out;
}

}  // namespace aibrix::enginesim
