// StoreSync: applies what the informers hand over to the Store (spec §2.3): a LIST as one
// batch (every object added or replaced, the keys gone since removed), the watch events of
// one received chunk as another. Pods without a model (and worker pods) are left out by the
// Store itself; ModelAdapter status.instances map the adapter's name onto those pods of its
// namespace, also when the adapter arrives before them.
//
// Thread safety: called on the discovery thread (the Store serialises writers anyway).
#pragma once

#include <string>
#include <vector>

#include "aibrix/discovery/informer.h"
#include "aibrix/store/store.h"

namespace aibrix::discovery {

class StoreSync final : public InformerHandler {
 public:
  // `store` must outlive this object.
  explicit StoreSync(store::Store& store) : store_(store) {}

  void OnList(Resource resource, std::vector<K8sObject> objects,
              std::vector<std::string> deleted) override;
  void OnEvents(Resource resource, std::vector<WatchEvent> events) override;

 private:
  store::Store& store_;
};

}  // namespace aibrix::discovery
