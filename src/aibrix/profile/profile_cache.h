// aibrix::profile::ProfileCache — the GPU profiles known to the service, by Redis key
// `aibrix:profile_<model>_<deployment>` (spec §5). The Redis loader replaces the set every
// refresh (Refresh): keys no longer in Redis leave the cache (the reference kept them forever
// ⚠), a key is updated only by a profile with a newer `created`, and a key whose value could
// not be read or parsed this time keeps its last good profile.
//
// Readers (routers, the prediction endpoint) take an immutable snapshot: one mutex-guarded
// shared_ptr copy, never a wait for the loader.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "aibrix/common/mutex.h"
#include "aibrix/profile/gpu_profile.h"

namespace aibrix::profile {

using ProfileRef = std::shared_ptr<const GpuProfile>;
using ProfileMap = absl::flat_hash_map<std::string, ProfileRef>;
using ProfileMapRef = std::shared_ptr<const ProfileMap>;

inline constexpr char kProfileKeyPrefix[] = "aibrix:profile_";

// "aibrix:profile_<model>_<deployment>".
std::string ProfileKey(std::string_view model, std::string_view deployment);

class ProfileCache {
 public:
  ProfileCache();
  ProfileCache(const ProfileCache&) = delete;
  ProfileCache& operator=(const ProfileCache&) = delete;

  // The current profiles (never null).
  ProfileMapRef snapshot() const;
  // The profile of (model, deployment), or null.
  ProfileRef Find(std::string_view model, std::string_view deployment) const;
  size_t size() const;

  // The reference's UpdateModelProfile: stores `profile` under `key` if the key is absent,
  // `force` is set, or the cached profile's `created` is older. Returns whether it stored.
  enum class Force { kNo, kYes };
  bool Update(const std::string& key, GpuProfile profile, Force force = Force::kNo);

  // One refresh from the source of truth: `present` lists every key that exists there;
  // `loaded` holds those whose value parsed (others keep their cached profile, if any).
  // Cached keys not in `present` are removed.
  struct RefreshResult {
    size_t added = 0;
    size_t updated = 0;
    size_t removed = 0;
  };
  RefreshResult Refresh(const std::vector<std::string>& present,
                        std::vector<std::pair<std::string, GpuProfile>> loaded);

 private:
  // Publishes `next`. REQUIRES: write_mu_ held.
  void Publish(ProfileMapRef next) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

  // Serialises writers (copy, modify, publish); readers never take it.
  common::Mutex write_mu_;
  // Held only to copy or swap the pointer.
  mutable common::Mutex snapshot_mu_;
  ProfileMapRef snapshot_ ABSL_GUARDED_BY(snapshot_mu_);
};

}  // namespace aibrix::profile
