#include "aibrix/gateway/tokenizer_log.h"

#include <algorithm>

#include "aibrix/common/logging.h"

namespace aibrix::gateway {

void TokenizerLog::Check(const std::string& model, const store::SnapshotRef& snapshot) {
  auto it = snapshot->models.find(model);
  if (it == snapshot->models.end()) {
    logged_.erase(model);
    return;
  }
  TokenizerChoice choice = tokenizers_.Choice(it->second.get());
  auto [entry, added] = logged_.try_emplace(model, choice);
  if (!added && entry->second == choice) return;
  entry->second = choice;
  common::Logger("tokenizer")
      ->info("model '{}' {}tokenized by: {}", model, added ? "" : "now ", choice.source);
}

void TokenizerLog::OnPodChanged(const store::PodRef& before, const store::PodRef& after) {
  const bool remote_mode = tokenizers_.remote();
  common::MutexLock lock(&mu_);
  store::SnapshotRef snapshot;  // taken only when needed
  if (after != nullptr) {
    const bool vllm = store::PodEngine(after->object) == "vllm";
    for (const std::string& model : after->models) {
      // Known, and this pod cannot flip the choice: nothing to do (the usual case).
      auto it = logged_.find(model);
      if (it != logged_.end() && (!remote_mode || it->second.remote == vllm)) continue;
      if (!snapshot) snapshot = store_.snapshot();
      Check(model, snapshot);
    }
  }
  if (before != nullptr) {
    for (const std::string& model : before->models) {
      if (after != nullptr && std::binary_search(after->models.begin(), after->models.end(), model))
        continue;
      // The pod left the model: the model may be gone, or have lost its last vLLM engine.
      auto it = logged_.find(model);
      if (it == logged_.end()) continue;
      if (!snapshot) snapshot = store_.snapshot();
      if (!snapshot->models.contains(model) ||
          (it->second.remote && store::PodEngine(before->object) == "vllm")) {
        Check(model, snapshot);
      }
    }
  }
}

}  // namespace aibrix::gateway
