#include "aibrix/profile/profile_cache.h"

#include <utility>

#include "absl/container/flat_hash_set.h"

namespace aibrix::profile {

std::string ProfileKey(std::string_view model, std::string_view deployment) {
  std::string key = kProfileKeyPrefix;
  key.append(model);
  key += '_';
  key.append(deployment);
  return key;
}

ProfileCache::ProfileCache() : snapshot_(std::make_shared<const ProfileMap>()) {}

ProfileMapRef ProfileCache::snapshot() const {
  common::MutexLock lock(&snapshot_mu_);
  return snapshot_;
}

ProfileRef ProfileCache::Find(std::string_view model, std::string_view deployment) const {
  const ProfileMapRef map = snapshot();
  auto it = map->find(ProfileKey(model, deployment));
  return it == map->end() ? nullptr : it->second;
}

size_t ProfileCache::size() const { return snapshot()->size(); }

void ProfileCache::Publish(ProfileMapRef next) {
  common::MutexLock lock(&snapshot_mu_);
  snapshot_ = std::move(next);
}

bool ProfileCache::Update(const std::string& key, GpuProfile profile, Force force) {
  common::MutexLock lock(&write_mu_);
  const ProfileMapRef current = snapshot();
  auto it = current->find(key);
  if (force == Force::kNo && it != current->end() && it->second->created >= profile.created) {
    return false;
  }
  auto next = std::make_shared<ProfileMap>(*current);
  (*next)[key] = std::make_shared<const GpuProfile>(std::move(profile));
  Publish(std::move(next));
  return true;
}

ProfileCache::RefreshResult ProfileCache::Refresh(
    const std::vector<std::string>& present,
    std::vector<std::pair<std::string, GpuProfile>> loaded) {
  const absl::flat_hash_set<std::string> keep(present.begin(), present.end());
  common::MutexLock lock(&write_mu_);
  const ProfileMapRef current = snapshot();
  RefreshResult result;
  auto next = std::make_shared<ProfileMap>();
  next->reserve(keep.size());
  for (const auto& [key, profile] : *current) {
    if (keep.contains(key)) {
      next->emplace(key, profile);
    } else {
      ++result.removed;
    }
  }
  for (auto& [key, profile] : loaded) {
    if (!keep.contains(key)) continue;
    auto it = next->find(key);
    if (it == next->end()) {
      next->emplace(key, std::make_shared<const GpuProfile>(std::move(profile)));
      ++result.added;
    } else if (it->second->created < profile.created) {
      it->second = std::make_shared<const GpuProfile>(std::move(profile));
      ++result.updated;
    }
  }
  if (result.added + result.updated + result.removed > 0) Publish(std::move(next));
  return result;
}

}  // namespace aibrix::profile
