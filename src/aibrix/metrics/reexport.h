// Re-export of the scraped engine metrics on the service's /metrics (spec §9.1, done
// right), evaluated at scrape time from the Store (nothing is accumulated between scrapes):
//
// - Every fresh stored value of a registered gauge, counter or histogram, under its
//   internal name, with the reference's labels: engine_type, gateway_pod, model, namespace,
//   pod, role, role_replica_index, roleset, then model_name for model-scope values (`model`
//   is "" for pod-scope values). Counters carry the engine's current value (not incremented
//   by each scrape as the reference does); histograms are exported whole (buckets, sum,
//   count) plus gauges <name>_p50, <name>_p90, <name>_p99. Role-specific metrics are
//   skipped on pods of the other role (a pod whose name contains "prefill" exports no
//   decode-only metric, and the reverse; spec §4.1). Stale values (older than max_age) are
//   not exported. Series of pods that left the Store vanish with them.
// - `model_replicas` = 1 per ready pod serving a model (pods of a pod group: index 0 only),
//   with model_name.
// - `aibrix_cache_stale_metrics`: how many stored engine metric values (scraped and
//   derived) are older than max_age.
//
// Thread safety: Collect() may run on any thread (it reads the Store's snapshot and each
// pod's metrics under that pod's lock).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "aibrix/common/clock.h"
#include "aibrix/metrics/registry.h"
#include "aibrix/store/store.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace aibrix::metrics {

struct ExporterOptions {
  std::chrono::milliseconds max_age{1000};
  std::string gateway_pod;  // this replica's name (env POD_NAME, else the host name)
  const common::Clock* clock = &common::SystemClock::Instance();
};

class EngineMetricsExporter final : public prometheus::Collectable {
 public:
  // `store` and `registry` must outlive the exporter.
  EngineMetricsExporter(const store::Store& store, const EngineMetricRegistry& registry,
                        ExporterOptions options);
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const store::Store& store_;
  const EngineMetricRegistry& registry_;
  const ExporterOptions options_;
};

}  // namespace aibrix::metrics
