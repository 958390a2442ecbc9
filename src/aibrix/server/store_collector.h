// Store gauges evaluated at scrape time: pods by readiness, models, in-flight requests, and
// per pod and model request counts. Nothing is updated on the request path.
//
// Thread safety: Collect() reads the Store's snapshot; safe from any thread.
#pragma once

#include <vector>

#include "aibrix/store/store.h"
#include "prometheus/collectable.h"

namespace aibrix::server {

class StoreCollector final : public prometheus::Collectable {
 public:
  explicit StoreCollector(const store::Store& store) : store_(store) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const store::Store& store_;
};

}  // namespace aibrix::server
