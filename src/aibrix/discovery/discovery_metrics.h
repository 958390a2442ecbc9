// Prometheus metrics of Kubernetes discovery, label `resource` ("pods", "modeladapters"):
//   aibrix_discovery_errors_total{resource,reason}  input skipped or a request that failed
//   aibrix_discovery_events_total{resource,type}    watch events taken (ADDED ... ERROR)
//   aibrix_discovery_lists_total{resource}          complete LISTs (the first and relists)
//   aibrix_discovery_watches_total{resource}        WATCH requests started
//   aibrix_discovery_synced{resource}               1 once the first LIST was applied
//   aibrix_discovery_objects{resource}              objects the informer holds
// Every series of a resource is created up front (the reasons and types are fixed), so the
// informer takes no metrics lock. See docs/metrics.md, "Discovery".
//
// Thread safety: prometheus-cpp counters and gauges may be used from any thread.
#pragma once

#include <string_view>

#include "aibrix/discovery/k8s_decoder.h"
#include "aibrix/discovery/k8s_objects.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace aibrix::discovery {

// The reason label of aibrix_discovery_errors_total.
enum class ErrorReason {
  kMalformed,     // a line or object that is not JSON or has a field of the wrong type
  kUnknownType,   // a watch event type we do not know
  kWrongKind,     // an object of another kind than the watched one
  kMissingField,  // an object without name / namespace, an event without type / object
  kLineTooLong,   // a watch line over the cap: cut off, the watch started again
  kListTooLarge,  // a LIST page body over the cap: the list started again
  kHttpStatus,    // an answer other than 200 (and 410)
  kExpired,       // 410 Gone / Expired: the resourceVersion is too old, relisted
  kWatchError,    // an ERROR event other than 410
  kTimeout,       // connect, first byte, between reads or the whole response
  kConnect,       // refused, unreachable, TLS handshake failed
  kReset,         // the connection broke mid-response
  kBadResponse,   // not HTTP, bad framing
};
inline constexpr int kErrorReasons = 13;
std::string_view ErrorReasonName(ErrorReason reason);
// The decoder's classes map onto the first four reasons.
ErrorReason ReasonOf(DecodeError error);

// The series of one resource.
struct ResourceMetrics {
  prometheus::Counter* errors[kErrorReasons];
  prometheus::Counter* events[5];  // by EventType
  prometheus::Counter* lists;
  prometheus::Counter* watches;
  prometheus::Gauge* synced;
  prometheus::Gauge* objects;

  prometheus::Counter& error(ErrorReason reason) { return *errors[static_cast<int>(reason)]; }
  prometheus::Counter& event(EventType type) { return *events[static_cast<int>(type)]; }
};

class DiscoveryMetrics {
 public:
  // Registers the families on `registry` (which must outlive this object) with the series
  // of both resources.
  explicit DiscoveryMetrics(prometheus::Registry& registry);
  DiscoveryMetrics(const DiscoveryMetrics&) = delete;
  DiscoveryMetrics& operator=(const DiscoveryMetrics&) = delete;

  ResourceMetrics& For(Resource resource) { return resources_[static_cast<int>(resource)]; }

 private:
  ResourceMetrics resources_[2];
};

}  // namespace aibrix::discovery
