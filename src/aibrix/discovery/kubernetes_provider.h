// Kubernetes discovery (`--discovery kubernetes`): a Pod informer and a ModelAdapter
// informer (informer.h) on one discovery thread, applying the cluster's state to the Store
// (store_sync.h). The API server is found in the cluster (service account) or through
// `--kubeconfig`. Start returns as soon as the informers run; synced() turns true once both
// resources were listed and applied (/readyz waits for it) and stays true while the API
// server is away (the Store keeps the last state; the informers retry with backoff).
//
// Thread safety: Start/Stop from one thread; synced() from any thread; the Store is written
// on the discovery thread only.
#pragma once

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "aibrix/discovery/discovery_metrics.h"
#include "aibrix/discovery/informer.h"
#include "aibrix/discovery/kube_client.h"
#include "aibrix/discovery/provider.h"
#include "aibrix/discovery/store_sync.h"
#include "prometheus/registry.h"

namespace aibrix::discovery {

struct KubernetesOptions {
  std::string kubeconfig;      // "" = in-cluster configuration
  std::string ns;              // "" = all namespaces (Pods and ModelAdapters)
  std::string label_selector;  // Pods only; "" = every pod
  // Informer settings (namespace, selector and resource are filled in per informer).
  InformerOptions informer;
  KubeClientOptions client;
};

class KubernetesProvider final : public Provider, private InformerHandler {
 public:
  // Loads the configuration (kubeconfig or in-cluster) and the TLS material; the error says
  // which file or field is wrong. `registry` must outlive the provider.
  static absl::StatusOr<std::unique_ptr<KubernetesProvider>> Create(KubernetesOptions options,
                                                                    prometheus::Registry& registry);
  ~KubernetesProvider() override;

  absl::Status Start(store::Store& store) override;
  void Stop() override;
  bool synced() const override;
  std::string type() const override { return "kubernetes"; }

 private:
  KubernetesProvider(KubernetesOptions options, std::unique_ptr<KubeClient> client,
                     prometheus::Registry& registry);
  InformerOptions InformerFor(Resource resource) const;
  // InformerHandler: forwards to the StoreSync, and logs the first complete sync.
  void OnList(Resource resource, std::vector<K8sObject> objects,
              std::vector<std::string> deleted) override;
  void OnEvents(Resource resource, std::vector<WatchEvent> events) override;

  // Constant after construction. The client outlives the io_context (calls refer to it).
  const KubernetesOptions options_;
  const std::unique_ptr<KubeClient> client_;
  DiscoveryMetrics metrics_;
  boost::asio::io_context io_;
  // Set by Start; the informers and the sync live on the discovery thread until Stop.
  store::Store* store_ = nullptr;
  std::unique_ptr<StoreSync> sync_;
  std::unique_ptr<Informer> pods_;
  std::unique_ptr<Informer> adapters_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::thread thread_;
  // Discovery thread.
  bool listed_[2] = {false, false};  // by Resource
  // Both resources listed and applied; read by any thread (/readyz).
  std::atomic<bool> synced_{false};
};

}  // namespace aibrix::discovery
