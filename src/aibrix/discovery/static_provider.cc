#include "aibrix/discovery/static_provider.h"

#include <fstream>
#include <sstream>

#include "aibrix/common/logging.h"
#include "aibrix/common/status_macros.h"
#include "aibrix/common/strings.h"
#include "fmt/format.h"

namespace aibrix::discovery {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(fmt::format("cannot read static config {}", path));
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(fmt::format("error reading static config {}", path));
  return text.str();
}

bool SameAdapter(const store::ModelAdapterObject& a, const store::ModelAdapterObject& b) {
  return a.ns == b.ns && a.name == b.name && a.instances == b.instances;
}

}  // namespace

absl::StatusOr<std::unique_ptr<StaticProvider>> StaticProvider::FromFile(
    const std::string& path, StaticProviderOptions options) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  ASSIGN_OR_RETURN(StaticConfig config, ParseStaticConfig(text, path));
  return std::unique_ptr<StaticProvider>(
      new StaticProvider(path, options, std::move(text), std::move(config)));
}

StaticProvider::StaticProvider(std::string path, StaticProviderOptions options, std::string text,
                               StaticConfig config)
    : path_(std::move(path)), options_(options) {
  if (options_.registry != nullptr) {
    reloads_metric_ = &prometheus::BuildCounter()
                           .Name("aibrix_discovery_config_reloads_total")
                           .Help("Static discovery file reloads applied (changed or not)")
                           .Register(*options_.registry)
                           .Add({});
    errors_metric_ = &prometheus::BuildCounter()
                          .Name("aibrix_discovery_config_reload_errors_total")
                          .Help(
                              "Static discovery file reloads refused (unreadable or invalid "
                              "file; the previous state stays)")
                          .Register(*options_.registry)
                          .Add({});
  }
  common::MutexLock lock(&mu_);
  text_ = std::move(text);
  pending_ = std::move(config);
}

StaticProvider::~StaticProvider() { Stop(); }

StaticProvider::State StaticProvider::StateOf(const StaticConfig& config) {
  State state;
  for (store::PodObject& pod : StaticPods(config)) state.pods.emplace(pod.Key(), std::move(pod));
  for (store::ModelAdapterObject& adapter : StaticAdapters(config)) {
    state.adapters.emplace(adapter.ns + "/" + adapter.name, std::move(adapter));
  }
  return state;
}

absl::Status StaticProvider::Start(store::Store& store) {
  {
    common::MutexLock lock(&mu_);
    store_ = &store;
    ApplyLocked(StateOf(pending_));
    pending_ = StaticConfig{};
    common::Logger("discovery")
        ->info("static discovery: {} pods, {} adapters from {}", applied_.pods.size(),
               applied_.adapters.size(), path_);
  }
  if (!options_.watch) return absl::OkStatus();
  ASSIGN_OR_RETURN(
      watcher_, FileWatcher::Start(
                    path_, [this] { (void)ReloadFor(Trigger::kFileChange); }, options_.debounce));
  // A change between FromFile's read and the watch is seen now.
  (void)ReloadFor(Trigger::kFileChange);
  return absl::OkStatus();
}

void StaticProvider::Stop() {
  if (watcher_) watcher_->Stop();
}

absl::Status StaticProvider::Reload() { return ReloadFor(Trigger::kRequest); }

absl::Status StaticProvider::ReloadFor(Trigger trigger) {
  auto log = common::Logger("discovery");
  common::MutexLock lock(&mu_);
  if (store_ == nullptr) return absl::FailedPreconditionError("static discovery not started");
  absl::StatusOr<std::string> text = ReadFile(path_);
  if (text.ok() && trigger == Trigger::kFileChange && *text == text_) return absl::OkStatus();
  absl::StatusOr<StaticConfig> config =
      text.ok() ? ParseStaticConfig(*text, path_) : absl::StatusOr<StaticConfig>(text.status());
  if (!config.ok()) {
    ++reload_errors_;
    if (errors_metric_ != nullptr) errors_metric_->Increment();
    log->error(
        "static config reload refused, keeping the previous state ({} pods, {} adapters): {}",
        applied_.pods.size(), applied_.adapters.size(), common::AsStd(config.status().message()));
    return config.status();
  }
  text_ = std::move(*text);
  ApplyLocked(StateOf(*config));
  ++reloads_;
  if (reloads_metric_ != nullptr) reloads_metric_->Increment();
  return absl::OkStatus();
}

void StaticProvider::ApplyLocked(State next) {
  store::Store& store = *store_;
  int added = 0, changed = 0, removed = 0, adapters = 0;
  // Adapters and pods that are gone first, then pods, then the adapters that map onto them.
  for (const auto& [key, adapter] : applied_.adapters) {
    if (next.adapters.count(key) == 0) {
      store.DeleteModelAdapter(adapter.ns, adapter.name);
      ++adapters;
    }
  }
  for (const auto& [key, pod] : applied_.pods) {
    if (next.pods.count(key) == 0) {
      store.DeletePod(pod.ns, pod.name);
      ++removed;
    }
  }
  for (const auto& [key, pod] : next.pods) {
    auto old = applied_.pods.find(key);
    if (old == applied_.pods.end()) {
      store.AddPod(pod);
      ++added;
    } else if (!(old->second == pod)) {
      store.UpdatePod(pod);
      ++changed;
    }
  }
  for (const auto& [key, adapter] : next.adapters) {
    auto old = applied_.adapters.find(key);
    if (old == applied_.adapters.end() || !SameAdapter(old->second, adapter)) {
      store.AddModelAdapter(adapter);
      ++adapters;
    }
  }
  applied_ = std::move(next);
  common::Logger("discovery")
      ->info("static config {} applied: {} pods added, {} changed, {} removed; {} adapter changes",
             path_, added, changed, removed, adapters);
}

}  // namespace aibrix::discovery
