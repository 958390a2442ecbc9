// TokenizerLog: says in the log which tokenizer each model's prompts go through (a KV event
// index only matches when routing hashes the engine's own token ids, so this is the first
// thing to check when KV-aware routing finds nothing). A line when a model first appears
// (at start-up, from the first discovery sync, and later), and again when the choice changes
// (a model's only vLLM engine left, or one came). A model that disappears is forgotten.
//
// Thread safety: a Store listener, called on the Store's writer thread; its state is guarded
// anyway (cheap: one lookup per change). Each change costs a lookup per model of the pod;
// the model's pods are scanned only when its choice can flip (the changed pod's engine
// disagrees with the model's current choice), and the scan stops at the first vLLM engine.
#pragma once

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "aibrix/common/mutex.h"
#include "aibrix/gateway/model_tokenizers.h"
#include "aibrix/store/store.h"

namespace aibrix::gateway {

class TokenizerLog final : public store::PodListener {
 public:
  // Both must outlive the listener.
  TokenizerLog(const ModelTokenizers& tokenizers, const store::Store& store)
      : tokenizers_(tokenizers), store_(store) {}

  void OnPodChanged(const store::PodRef& before, const store::PodRef& after) override;

 private:
  // Logs `model`'s choice if it is new or different from the one logged.
  void Check(const std::string& model, const store::SnapshotRef& snapshot)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ModelTokenizers& tokenizers_;
  const store::Store& store_;
  common::Mutex mu_;
  absl::flat_hash_map<std::string, TokenizerChoice> logged_ ABSL_GUARDED_BY(mu_);
};

}  // namespace aibrix::gateway
