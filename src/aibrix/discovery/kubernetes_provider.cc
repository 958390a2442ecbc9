#include "aibrix/discovery/kubernetes_provider.h"

#include <boost/asio/post.hpp>

#include "aibrix/common/clock.h"
#include "aibrix/common/logging.h"
#include "aibrix/common/status_macros.h"

namespace aibrix::discovery {

absl::StatusOr<std::unique_ptr<KubernetesProvider>> KubernetesProvider::Create(
    KubernetesOptions options, prometheus::Registry& registry) {
  absl::StatusOr<KubeConfig> config = options.kubeconfig.empty()
                                          ? InClusterConfigFromEnvironment()
                                          : LoadKubeConfig(options.kubeconfig);
  if (!config.ok()) return config.status();
  // A watch may stream for up to twice its timeout; the client's deadline leaves a minute more.
  options.client.watch_deadline = std::chrono::duration_cast<std::chrono::milliseconds>(
      2 * options.informer.watch_timeout + std::chrono::minutes(1));
  ASSIGN_OR_RETURN(
      std::unique_ptr<KubeClient> client,
      KubeClient::Create(std::move(*config), options.client, common::SystemClock::Instance()));
  return std::unique_ptr<KubernetesProvider>(
      new KubernetesProvider(std::move(options), std::move(client), registry));
}

KubernetesProvider::KubernetesProvider(KubernetesOptions options,
                                       std::unique_ptr<KubeClient> client,
                                       prometheus::Registry& registry)
    : options_(std::move(options)), client_(std::move(client)), metrics_(registry) {}

KubernetesProvider::~KubernetesProvider() { Stop(); }

InformerOptions KubernetesProvider::InformerFor(Resource resource) const {
  InformerOptions informer = options_.informer;
  informer.resource = resource;
  informer.ns = options_.ns;
  informer.label_selector = resource == Resource::kPods ? options_.label_selector : "";
  return informer;
}

absl::Status KubernetesProvider::Start(store::Store& store) {
  if (thread_.joinable())
    return absl::FailedPreconditionError("kubernetes discovery started twice");
  store_ = &store;
  sync_ = std::make_unique<StoreSync>(store);
  InformerHandler& handler = *this;
  pods_ = std::make_unique<Informer>(io_, *client_, InformerFor(Resource::kPods), handler,
                                     metrics_.For(Resource::kPods));
  adapters_ = std::make_unique<Informer>(io_, *client_, InformerFor(Resource::kModelAdapters),
                                         handler, metrics_.For(Resource::kModelAdapters));
  work_.emplace(io_.get_executor());
  boost::asio::post(io_, [this] {
    pods_->Start();
    adapters_->Start();
  });
  thread_ = std::thread([this] { io_.run(); });
  common::Logger("discovery")
      ->info(
          "kubernetes discovery: {} ({}), namespace {}, pod selector '{}'; waiting for the "
          "first sync",
          client_->config().ServerUrl(), client_->config().origin,
          options_.ns.empty() ? "all" : options_.ns, options_.label_selector);
  return absl::OkStatus();
}

void KubernetesProvider::Stop() {
  if (!thread_.joinable()) return;
  boost::asio::post(io_, [this] {
    pods_->Stop();
    adapters_->Stop();
  });
  work_.reset();
  thread_.join();  // every call was cancelled: the loop runs out of work
}

bool KubernetesProvider::synced() const { return synced_.load(std::memory_order_acquire); }

void KubernetesProvider::OnList(Resource resource, std::vector<K8sObject> objects,
                                std::vector<std::string> deleted) {
  sync_->OnList(resource, std::move(objects), std::move(deleted));
  listed_[static_cast<int>(resource)] = true;
  if (!synced_.load(std::memory_order_relaxed) && listed_[0] && listed_[1]) {
    synced_.store(true, std::memory_order_release);
    common::Logger("discovery")
        ->info("kubernetes discovery synced: {} pods, {} models", store_->ListPods().size(),
               store_->ListModels().size());
  }
}

void KubernetesProvider::OnEvents(Resource resource, std::vector<WatchEvent> events) {
  sync_->OnEvents(resource, std::move(events));
}

}  // namespace aibrix::discovery
