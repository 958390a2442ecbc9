#include "aibrix/store/request_table.h"

#include <utility>

#include "aibrix/store/pod.h"
#include "aibrix/store/store.h"

namespace aibrix::store {

RequestTable::Id::Id(std::string_view id) {
  if (id.size() <= kInlineId) {
    std::memcpy(inline_.data(), id.data(), id.size());
    size_ = static_cast<uint8_t>(id.size());
  } else {
    heap_.assign(id);
  }
}

bool RequestTable::Insert(std::string_view id, InFlightRequest request) {
  const size_t hash = IdHash{}(id);
  Shard& shard = ShardFor(hash);
  common::MutexLock lock(&shard.mu);
  if (shard.requests.find(id, hash) != shard.requests.end()) return false;
  shard.requests.emplace(Id(id), std::move(request));
  return true;
}

std::optional<InFlightRequest> RequestTable::Take(std::string_view id) {
  const size_t hash = IdHash{}(id);
  Shard& shard = ShardFor(hash);
  common::MutexLock lock(&shard.mu);
  auto it = shard.requests.find(id, hash);
  if (it == shard.requests.end()) return std::nullopt;
  InFlightRequest request = std::move(it->second);
  shard.requests.erase(it);
  return request;
}

std::optional<RequestTable::Prefill> RequestTable::TakePrefill(std::string_view id) {
  const size_t hash = IdHash{}(id);
  Shard& shard = ShardFor(hash);
  common::MutexLock lock(&shard.mu);
  auto it = shard.requests.find(id, hash);
  if (it == shard.requests.end()) return std::nullopt;
  Prefill prefill{it->second.pod, std::exchange(it->second.prefill_tokens, 0)};
  return prefill;
}

std::vector<InFlightRequest> RequestTable::TakeExpired(std::chrono::steady_clock::time_point now) {
  std::vector<InFlightRequest> expired;
  for (Shard& shard : shards_) {
    common::MutexLock lock(&shard.mu);
    for (auto it = shard.requests.begin(); it != shard.requests.end();) {
      if (it->second.expires && *it->second.expires <= now) {
        expired.push_back(std::move(it->second));
        shard.requests.erase(it++);
      } else {
        ++it;
      }
    }
  }
  return expired;
}

size_t RequestTable::size() const {
  size_t total = 0;
  for (const Shard& shard : shards_) {
    common::MutexLock lock(&shard.mu);
    total += shard.requests.size();
  }
  return total;
}

}  // namespace aibrix::store
