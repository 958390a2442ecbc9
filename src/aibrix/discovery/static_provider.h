// Static discovery: the pods and LoRA adapters of a static config file, kept live. Start()
// applies the file; Reload() (SIGHUP, and the file watcher when `watch` is on) reads it again
// and applies the difference to the Store like informer events — DeletePod for endpoints
// gone, AddPod for new ones, UpdatePod for changed ones, and the same for adapters — so KV
// event subscriptions and the prefix indexes follow. A file that does not parse (or cannot
// be read) changes nothing: the error, with file, line and field, is logged and counted.
//
// Pod names carry the endpoint's position in the file (AIBrix's naming, static_config.h):
// inserting an endpoint before others renames those after it (they are deleted and added
// again, with fresh counters and subscriptions). Append new endpoints to avoid that.
//
// Metrics (when a registry is given): aibrix_discovery_config_reloads_total (reloads applied,
// changes or not) and aibrix_discovery_config_reload_errors_total.
//
// Thread safety: Start/Stop from one thread. Reload may be called from any thread (the
// watcher's, a signal-handling one); reloads are serialised.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "aibrix/common/mutex.h"
#include "aibrix/discovery/file_watcher.h"
#include "aibrix/discovery/provider.h"
#include "aibrix/discovery/static_config.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"

namespace aibrix::discovery {

struct StaticProviderOptions {
  // Reload when the file changes (FileWatcher on its directory).
  bool watch = false;
  // Quiet time after the last change event before reloading.
  std::chrono::milliseconds debounce{100};
  // Where the reload counters are exported; may be null (not owned; must outlive the provider).
  prometheus::Registry* registry = nullptr;
};

class StaticProvider final : public Provider {
 public:
  // Reads and parses `path`; the error names the file, line and field (NotFound when it
  // cannot be read).
  static absl::StatusOr<std::unique_ptr<StaticProvider>> FromFile(
      const std::string& path, StaticProviderOptions options = {});
  ~StaticProvider() override;

  // Adds the file's pods and adapters to `store`, then starts watching (when enabled). Errors:
  // the directory cannot be watched.
  absl::Status Start(store::Store& store) override;
  // Reads the file again and applies what changed. On error (unreadable, or the error of
  // ParseStaticConfig) the previous state stays. FailedPrecondition before Start.
  absl::Status Reload() override;
  void Stop() override;
  std::string type() const override { return "static"; }

  // Reloads applied and failed since construction (the metrics' values).
  uint64_t reloads() const { return reloads_.load(); }
  uint64_t reload_errors() const { return reload_errors_.load(); }

 private:
  // What the file declares, by key ("standalone/<name>").
  struct State {
    std::map<std::string, store::PodObject> pods;
    std::map<std::string, store::ModelAdapterObject> adapters;
  };
  enum class Trigger { kRequest, kFileChange };

  StaticProvider(std::string path, StaticProviderOptions options, std::string text,
                 StaticConfig config);
  static State StateOf(const StaticConfig& config);
  // A reload; kFileChange skips a file whose bytes are those applied last.
  absl::Status ReloadFor(Trigger trigger);
  // Writes the difference between the applied state and `next` to the Store.
  void ApplyLocked(State next) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const std::string path_;
  const StaticProviderOptions options_;
  prometheus::Counter* reloads_metric_ = nullptr;
  prometheus::Counter* errors_metric_ = nullptr;
  std::atomic<uint64_t> reloads_{0};
  std::atomic<uint64_t> reload_errors_{0};

  // Serialises reloads (and Start).
  common::Mutex mu_;
  store::Store* store_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::string text_ ABSL_GUARDED_BY(mu_);      // the bytes of the file last read successfully
  StaticConfig pending_ ABSL_GUARDED_BY(mu_);  // parsed by FromFile, applied by Start
  State applied_ ABSL_GUARDED_BY(mu_);

  // Owned by the Start/Stop thread.
  std::unique_ptr<FileWatcher> watcher_;
};

}  // namespace aibrix::discovery
