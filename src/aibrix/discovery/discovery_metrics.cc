#include "aibrix/discovery/discovery_metrics.h"

#include <string>

namespace aibrix::discovery {

std::string_view ErrorReasonName(ErrorReason reason) {
  switch (reason) {
    case ErrorReason::kMalformed:
      return "malformed";
    case ErrorReason::kUnknownType:
      return "unknown_type";
    case ErrorReason::kWrongKind:
      return "wrong_kind";
    case ErrorReason::kMissingField:
      return "missing_field";
    case ErrorReason::kLineTooLong:
      return "line_too_long";
    case ErrorReason::kListTooLarge:
      return "list_too_large";
    case ErrorReason::kHttpStatus:
      return "http_status";
    case ErrorReason::kExpired:
      return "expired";
    case ErrorReason::kWatchError:
      return "watch_error";
    case ErrorReason::kTimeout:
      return "timeout";
    case ErrorReason::kConnect:
      return "connect";
    case ErrorReason::kReset:
      return "reset";
    case ErrorReason::kBadResponse:
      return "bad_response";
  }
  return "malformed";
}

ErrorReason ReasonOf(DecodeError error) {
  switch (error) {
    case DecodeError::kMalformed:
      return ErrorReason::kMalformed;
    case DecodeError::kUnknownType:
      return ErrorReason::kUnknownType;
    case DecodeError::kWrongKind:
      return ErrorReason::kWrongKind;
    case DecodeError::kMissingField:
      return ErrorReason::kMissingField;
  }
  return ErrorReason::kMalformed;
}

DiscoveryMetrics::DiscoveryMetrics(prometheus::Registry& registry) {
  auto& errors = prometheus::BuildCounter()
                     .Name("aibrix_discovery_errors_total")
                     .Help("Kubernetes discovery input skipped or requests failed, by reason")
                     .Register(registry);
  auto& events = prometheus::BuildCounter()
                     .Name("aibrix_discovery_events_total")
                     .Help("Kubernetes watch events taken, by type")
                     .Register(registry);
  auto& lists = prometheus::BuildCounter()
                    .Name("aibrix_discovery_lists_total")
                    .Help("Complete Kubernetes LISTs applied (the first and every relist)")
                    .Register(registry);
  auto& watches = prometheus::BuildCounter()
                      .Name("aibrix_discovery_watches_total")
                      .Help("Kubernetes WATCH requests started")
                      .Register(registry);
  auto& synced = prometheus::BuildGauge()
                     .Name("aibrix_discovery_synced")
                     .Help("1 once the first Kubernetes LIST of the resource was applied")
                     .Register(registry);
  auto& objects = prometheus::BuildGauge()
                      .Name("aibrix_discovery_objects")
                      .Help("Kubernetes objects the informer holds")
                      .Register(registry);
  for (Resource resource : {Resource::kPods, Resource::kModelAdapters}) {
    const std::string name(ResourceName(resource));
    ResourceMetrics& m = For(resource);
    for (int i = 0; i < kErrorReasons; ++i) {
      m.errors[i] =
          &errors.Add({{"resource", name},
                       {"reason", std::string(ErrorReasonName(static_cast<ErrorReason>(i)))}});
    }
    for (int i = 0; i < 5; ++i) {
      m.events[i] = &events.Add(
          {{"resource", name}, {"type", std::string(EventTypeName(static_cast<EventType>(i)))}});
    }
    m.lists = &lists.Add({{"resource", name}});
    m.watches = &watches.Add({{"resource", name}});
    m.synced = &synced.Add({{"resource", name}});
    m.objects = &objects.Add({{"resource", name}});
  }
}

}  // namespace aibrix::discovery
