#include "aibrix/gateway/model_tokenizers.h"

#include <algorithm>
#include <set>

#include "aibrix/common/logging.h"
#include "aibrix/common/net.h"
#include "aibrix/common/strings.h"
#include "fmt/format.h"
#include "fmt/ranges.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace aibrix::gateway {
namespace {

// Ready engines tried per request before giving up (each attempt has its own retries).
constexpr size_t kMaxPodsPerRequest = 2;

// Engines that serve vLLM's /tokenize (the engine label is vllm, or absent: vllm by default).
bool ServesVllmTokenize(const store::Pod& pod) { return store::PodEngine(pod.object) == "vllm"; }

}  // namespace

// Spec §9.4, registered only with the remote tokenizer.
struct ModelTokenizers::PoolMetrics {
  explicit PoolMetrics(prometheus::Registry& registry)
      : active(prometheus::BuildGauge()
                   .Name("aibrix_tokenizer_pool_active_tokenizers")
                   .Help("Remote tokenizer clients in the pool, one per (endpoint, model)")
                   .Register(registry)
                   .Add({})),
        created(prometheus::BuildCounter()
                    .Name("aibrix_tokenizer_pool_creation_successes_total")
                    .Help("Remote tokenizer clients created")
                    .Register(registry)
                    .Add({})),
        creation_failed(prometheus::BuildCounter()
                            .Name("aibrix_tokenizer_pool_creation_failures_total")
                            .Help("Remote tokenizer clients that could not be created (bad URL)")
                            .Register(registry)
                            .Add({})),
        unhealthy(prometheus::BuildCounter()
                      .Name("aibrix_tokenizer_pool_unhealthy_tokenizers_total")
                      .Help("Tokenize calls an endpoint failed (unreachable, timeout, 5xx); the "
                            "next endpoint or the local tokenizer answered instead")
                      .Register(registry)
                      .Add({})),
        requests(prometheus::BuildCounter()
                     .Name("aibrix_tokenizer_pool_requests_total")
                     .Help("Prompts tokenized through the pool, by model (`other` for a model "
                           "without ready pods)")
                     .Register(registry)),
        latency(prometheus::BuildHistogram()
                    .Name("aibrix_tokenizer_pool_latency_seconds")
                    .Help("Time to tokenize one prompt through the pool, fallbacks included")
                    .Register(registry)) {}

  void Finished(const std::string& model, std::chrono::steady_clock::duration took) {
    requests.Add({{"model", model}}).Increment();
    // Prometheus' default buckets, as the reference's.
    static const prometheus::Histogram::BucketBoundaries kBuckets = {
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
    latency.Add({{"model", model}}, kBuckets).Observe(std::chrono::duration<double>(took).count());
  }

  prometheus::Gauge& active;
  prometheus::Counter& created;
  prometheus::Counter& creation_failed;
  prometheus::Counter& unhealthy;
  prometheus::Family<prometheus::Counter>& requests;
  prometheus::Family<prometheus::Histogram>& latency;
};

// One remote tokenization: asks the endpoints in order, one at a time, then falls back to
// the local tokenizer. Kept alive by the callback of the call in flight.
class ModelTokenizers::RemoteCall : public std::enable_shared_from_this<RemoteCall> {
 public:
  // REQUIRES: `endpoints` is not empty.
  // `known_model`: the model has ready pods (metrics label it by name, else `other`).
  RemoteCall(const ModelTokenizers& owner, boost::asio::io_context& io, Prompt prompt,
             Callback done, std::vector<std::string> endpoints, bool known_model)
      : owner_(owner),
        io_(io),
        prompt_(std::move(prompt)),
        done_(std::move(done)),
        endpoints_(std::move(endpoints)),
        known_model_(known_model) {}

  // Asks the next endpoint, or falls back when none is left.
  void Next() {
    while (next_ < endpoints_.size()) {
      const std::string& endpoint = endpoints_[next_++];
      bool created = false;
      auto tok = owner_.pool_->Get(endpoint, prompt_.model, &created);
      if (PoolMetrics* m = owner_.metrics_.get()) {
        if (!tok.ok()) {
          m->creation_failed.Increment();
        } else if (created) {
          m->created.Increment();
        }
        m->active.Set(static_cast<double>(owner_.pool_->size()));
      }
      if (!tok.ok()) {
        last_ = tok.status();
        continue;
      }
      auto on_answer = [self = shared_from_this()](absl::StatusOr<tokenizer::TokenIds> ids) {
        self->OnAnswer(std::move(ids));
      };
      if (prompt_.chat) {
        (*tok)->TokenizeChat(io_, prompt_.messages, tokenizer::ChatOptions{}, std::move(on_answer));
      } else {
        (*tok)->Tokenize(io_, prompt_.text, std::move(on_answer));
      }
      return;
    }
    static common::RateLimiter limiter;
    common::WarnLimited(limiter, "tokenizer",
                        "no vLLM tokenizer of model '{}' answered ({}); using the local "
                        "tokenizer",
                        prompt_.model, common::AsStd(last_.message()));
    Finish(owner_.Local(prompt_));
  }

 private:
  void OnAnswer(absl::StatusOr<tokenizer::TokenIds> ids) {
    // The engine rejected the prompt itself: another pod would say the same.
    if (ids.ok() || ids.status().code() == absl::StatusCode::kInvalidArgument) {
      Finish(std::move(ids));
      return;
    }
    last_ = ids.status();
    if (owner_.metrics_) owner_.metrics_->unhealthy.Increment();
    Next();
  }

  void Finish(absl::StatusOr<Ids> ids) {
    if (owner_.metrics_) {
      owner_.metrics_->Finished(known_model_ ? prompt_.model : "other",
                                std::chrono::steady_clock::now() - start_);
    }
    auto done = std::move(done_);
    done(std::move(ids));
  }

  const ModelTokenizers& owner_;
  boost::asio::io_context& io_;
  const Prompt prompt_;
  Callback done_;
  const std::vector<std::string> endpoints_;
  const bool known_model_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  size_t next_ = 0;
  absl::Status last_;
};

ModelTokenizers::ModelTokenizers(const tokenizer::Tokenizer& local) : local_(local) {}

ModelTokenizers::ModelTokenizers(const tokenizer::Tokenizer& local, const store::Store& store,
                                 RemoteTokenizersOptions options)
    : local_(local),
      store_(&store),
      endpoint_(std::move(options.endpoint)),
      endpoint_template_(std::move(options.endpoint_template)) {
  pool_.emplace(std::move(options.call), options.max_tokenizers, options.ttl);
  if (options.registry != nullptr) metrics_ = std::make_unique<PoolMetrics>(*options.registry);
}

ModelTokenizers::~ModelTokenizers() = default;

std::string ModelTokenizers::EngineEndpoint(const store::Pod& pod) const {
  if (endpoint_template_.empty()) {
    return "http://" + common::FormatHostPort(
                           pod.ip(), static_cast<uint16_t>(store::PodServingPort(pod.object)));
  }
  const std::string host =
      pod.ip().find(':') == std::string::npos ? pod.ip() : "[" + pod.ip() + "]";
  std::string url = endpoint_template_;
  if (const size_t at = url.find("%s"); at != std::string::npos) url.replace(at, 2, host);
  return url;
}

std::vector<std::string> ModelTokenizers::Endpoints(const store::ModelPods* pods) const {
  std::vector<std::string> endpoints;
  if (!pool_) return endpoints;
  if (!endpoint_.empty()) endpoints.push_back(endpoint_);
  if (pods == nullptr) return endpoints;
  for (const store::PodRef& pod : pods->ready) {
    if (endpoints.size() == kMaxPodsPerRequest + (endpoint_.empty() ? 0 : 1)) break;
    if (ServesVllmTokenize(*pod)) endpoints.push_back(EngineEndpoint(*pod));
  }
  return endpoints;
}

TokenizerChoice ModelTokenizers::Choice(const store::ModelPods* pods) const {
  if (!pool_) return {false, "local byte tokenizer"};
  if (!endpoint_.empty()) {
    return {true, fmt::format("vLLM /tokenize at {}, then the model's vLLM engines", endpoint_)};
  }
  std::set<std::string> engines;
  if (pods != nullptr) {
    for (const store::PodRef& pod : pods->pods) {
      if (ServesVllmTokenize(*pod)) return {true, "vLLM /tokenize of the model's engines"};
      engines.insert(store::PodEngine(pod->object));
    }
  }
  return {false,
          fmt::format("local byte tokenizer: no vLLM engine serves the model (engines: {})",
                      engines.empty() ? "none" : fmt::format("{}", fmt::join(engines, ", ")))};
}

absl::StatusOr<ModelTokenizers::Ids> ModelTokenizers::Local(const Prompt& prompt) const {
  if (prompt.chat) return local_.TokenizeChat(prompt.messages, tokenizer::ChatOptions{});
  return local_.Tokenize(prompt.text);
}

void ModelTokenizers::TokenizeRemote(boost::asio::io_context& io, Prompt prompt,
                                     Callback done) const {
  if (prompt.chat && prompt.messages.empty()) {
    done(absl::InvalidArgumentError("`messages` must not be empty"));
    return;
  }
  const store::ModelPodsRef pods = store_->ReadyPods(prompt.model);
  std::vector<std::string> endpoints = Endpoints(pods.get());
  if (endpoints.empty()) {
    // Nothing to ask. A model that has vLLM engines, none of them ready, loses its prefix
    // matches: say so. One served by other engines only was announced at start (TokenizerLog).
    if (Choice(pods.get()).remote) {
      static common::RateLimiter limiter;
      common::WarnLimited(limiter, "tokenizer",
                          "model '{}' has no ready vLLM engine to tokenize; using the local "
                          "tokenizer",
                          prompt.model);
    }
    done(Local(prompt));
    return;
  }
  const bool known_model = pods != nullptr;
  std::make_shared<RemoteCall>(*this, io, std::move(prompt), std::move(done), std::move(endpoints),
                               known_model)
      ->Next();
}

}  // namespace aibrix::gateway
