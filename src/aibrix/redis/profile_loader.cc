#include "aibrix/redis/profile_loader.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "aibrix/common/status_macros.h"
#include "aibrix/common/strings.h"
#include "fmt/format.h"

namespace aibrix::redis {

ProfileLoader::ProfileLoader(profile::ProfileCache& cache, ProfileLoaderOptions options,
                             prometheus::Registry& registry)
    : cache_(cache),
      options_(std::move(options)),
      connection_(options_.connection),
      metrics_(registry, "profile"),
      profiles_(prometheus::BuildGauge()
                    .Name("aibrix_gpu_profiles")
                    .Help("GPU profiles held (loaded from Redis aibrix:profile_* keys)")
                    .Register(registry)
                    .Add({})),
      changes_(prometheus::BuildCounter()
                   .Name("aibrix_gpu_profile_changes_total")
                   .Help("GPU profile cache changes by kind: added, updated, removed")
                   .Register(registry)),
      thread_(
          [this] {
            // The first round runs at once, then one per period.
            if (first_round_) {
              first_round_ = false;
              return std::chrono::nanoseconds(0);
            }
            return std::chrono::duration_cast<std::chrono::nanoseconds>(options_.period);
          },
          [this] { (void)LoadOnce(); }) {}

void ProfileLoader::Start() { thread_.Start(); }
void ProfileLoader::Stop() { thread_.Stop(); }

absl::Status ProfileLoader::LoadOnce() {
  const auto fail = [this](const absl::Status& status) {
    metrics_.Error(status);
    metrics_.Round(false, connection_);
    return status;
  };
  auto keys =
      connection_.Scan(std::string(profile::kProfileKeyPrefix) + "*", 100, options_.max_keys);
  if (!keys.ok()) return fail(keys.status());
  std::vector<std::string> present;
  std::vector<std::pair<std::string, profile::GpuProfile>> loaded;
  for (size_t begin = 0; begin < keys->size(); begin += options_.batch) {
    const size_t end = std::min(keys->size(), begin + options_.batch);
    std::vector<Args> gets;
    gets.reserve(end - begin);
    for (size_t i = begin; i < end; ++i) gets.push_back(Args{"GET", (*keys)[i]});
    auto replies = connection_.Pipeline(gets);
    if (!replies.ok()) return fail(replies.status());
    for (size_t i = begin; i < end; ++i) {
      const std::string& key = (*keys)[i];
      const Reply& reply = (*replies)[i - begin];
      if (reply.type == Reply::Type::kNil) continue;  // deleted since the SCAN
      present.push_back(key);
      if (!reply.is_string()) {
        metrics_.Error(
            "reply", fmt::format("GET {}: {}", key, reply.is_error() ? reply.str : "not a string"));
        continue;
      }
      if (reply.str.size() > options_.max_value_bytes) {
        metrics_.Error("too_large", fmt::format("{}: {} bytes (limit {})", key, reply.str.size(),
                                                options_.max_value_bytes));
        continue;
      }
      auto parsed = profile::ParseGpuProfile(reply.str);
      if (!parsed.ok()) {
        metrics_.Error("garbage",
                       fmt::format("{}: {}", key, common::AsStd(parsed.status().message())));
        continue;
      }
      loaded.emplace_back(key, std::move(*parsed));
    }
  }
  const auto result = cache_.Refresh(present, std::move(loaded));
  if (result.added > 0) changes_.Add({{"change", "added"}}).Increment(result.added);
  if (result.updated > 0) changes_.Add({{"change", "updated"}}).Increment(result.updated);
  if (result.removed > 0) changes_.Add({{"change", "removed"}}).Increment(result.removed);
  profiles_.Set(static_cast<double>(cache_.size()));
  metrics_.Round(true, connection_);
  return absl::OkStatus();
}

}  // namespace aibrix::redis
