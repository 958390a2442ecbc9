#include "aibrix/tracking/request_tracker.h"

#include <algorithm>
#include <mutex>
#include <utility>

namespace aibrix::tracking {

struct RequestTracker::Model {
  Model(const common::Clock& clock, OutputPredictor::Options predictor_options)
      : trace(clock), predictor(clock, predictor_options) {}
  RequestTrace trace;
  OutputPredictor predictor;
};

RequestTracker::RequestTracker(const common::Clock& clock) : RequestTracker(clock, Options{}) {}

RequestTracker::RequestTracker(const common::Clock& clock, Options options)
    : clock_(clock), options_(std::move(options)) {}

RequestTracker::~RequestTracker() = default;

RequestTracker::Model* RequestTracker::Find(const std::string& model) const {
  std::shared_lock lock(mu_);
  auto it = models_.find(model);
  return it == models_.end() ? nullptr : it->second.get();
}

RequestTracker::Model* RequestTracker::FindOrCreate(const std::string& model) {
  if (Model* found = Find(model)) return found;
  std::unique_lock lock(mu_);
  auto it = models_.find(model);
  if (it != models_.end()) return it->second.get();
  if (models_.size() >= options_.max_models) {
    ignored_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  OutputPredictor::Options predictor_options = options_.predictor;
  // Distinct but reproducible random streams per model.
  predictor_options.seed += 0x9e3779b97f4a7c15ULL * (models_.size() + 1);
  auto entry = std::make_unique<Model>(clock_, predictor_options);
  Model* raw = entry.get();
  models_.emplace(model, std::move(entry));
  return raw;
}

void RequestTracker::OnAdmitted(const std::string& model) {
  if (Model* entry = FindOrCreate(model)) entry->trace.AddRequest();
}

void RequestTracker::OnFinished(const std::string& model, int64_t input_tokens,
                                std::optional<int64_t> output_tokens) {
  Model* entry = FindOrCreate(model);
  if (entry == nullptr) return;
  if (!output_tokens.has_value()) {
    entry->trace.DoneRequest();
    return;
  }
  entry->trace.DoneRequestTrace(input_tokens, *output_tokens);
  entry->predictor.AddTrace(input_tokens, *output_tokens, 1);
}

OutputPredictor* RequestTracker::Predictor(const std::string& model) {
  Model* entry = FindOrCreate(model);
  return entry == nullptr ? nullptr : &entry->predictor;
}

nlohmann::json RequestTracker::TraceJson(const std::string& model) const {
  const Model* entry = Find(model);
  if (entry == nullptr) return nlohmann::json();
  return nlohmann::json(entry->trace.ToMap());
}

std::vector<RequestTracker::ModelTrace> RequestTracker::SwapTraces() {
  std::vector<std::pair<std::string, Model*>> entries;
  {
    std::shared_lock lock(mu_);
    entries.reserve(models_.size());
    for (const auto& [name, entry] : models_) entries.emplace_back(name, entry.get());
  }
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<ModelTrace> out;
  for (auto& [name, entry] : entries) {
    TraceSnapshot snapshot = entry->trace.Swap();
    if (snapshot.total_requests == 0 && snapshot.completed_requests == 0) continue;
    out.push_back(ModelTrace{std::move(name), std::move(snapshot)});
  }
  return out;
}

size_t RequestTracker::model_count() const {
  std::shared_lock lock(mu_);
  return models_.size();
}

}  // namespace aibrix::tracking
