#include "aibrix/discovery/static_provider.h"

#include "aibrix/common/logging.h"
#include "aibrix/common/status_macros.h"

namespace aibrix::discovery {

absl::StatusOr<std::unique_ptr<StaticProvider>> StaticProvider::FromFile(const std::string& path) {
  ASSIGN_OR_RETURN(StaticConfig config, LoadStaticConfig(path));
  return std::make_unique<StaticProvider>(std::move(config));
}

absl::Status StaticProvider::Start(store::Store& store) {
  auto log = common::Logger("discovery");
  size_t added = 0;
  for (const store::PodObject& pod : StaticPods(config_)) {
    if (store.AddPod(pod)) ++added;
    log->debug("static pod {} at {} (model {})", pod.Key(), pod.ip, store::PodModelName(pod));
  }
  log->info("static discovery: {} models, {} pods", config_.models.size(), added);
  return absl::OkStatus();
}

}  // namespace aibrix::discovery
