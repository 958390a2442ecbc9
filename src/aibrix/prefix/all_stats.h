// AllStats() of both indexes: the stats of every registered pod, sorted by pod key.
//
// Thread safety: takes `mu` shared only to copy the keys; `stats` is called without it, and a
// pod removed in between is skipped.
#pragma once

#include <algorithm>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "aibrix/prefix/types.h"

namespace aibrix::prefix {

template <typename PodMap, typename StatsFn>
std::vector<PodIndexStats> AllPodStats(std::shared_mutex& mu, const PodMap& pods, StatsFn stats) {
  std::vector<std::string> keys;
  {
    std::shared_lock lock(mu);
    for (const auto& [key, pod] : pods) keys.push_back(key);
  }
  std::sort(keys.begin(), keys.end());
  std::vector<PodIndexStats> out;
  for (const std::string& key : keys) {
    if (std::optional<PodIndexStats> s = stats(key)) out.push_back(std::move(*s));
  }
  return out;
}

}  // namespace aibrix::prefix
