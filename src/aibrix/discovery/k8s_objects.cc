#include "aibrix/discovery/k8s_objects.h"

namespace aibrix::discovery {

std::string_view ResourceName(Resource resource) {
  return resource == Resource::kPods ? "pods" : "modeladapters";
}

std::string_view ResourceKind(Resource resource) {
  return resource == Resource::kPods ? "Pod" : "ModelAdapter";
}

std::string ObjectKey(const K8sObject& object) {
  return std::visit([](const auto& o) { return o.ns + "/" + o.name; }, object);
}

std::string_view EventTypeName(EventType type) {
  switch (type) {
    case EventType::kAdded:
      return "ADDED";
    case EventType::kModified:
      return "MODIFIED";
    case EventType::kDeleted:
      return "DELETED";
    case EventType::kBookmark:
      return "BOOKMARK";
    case EventType::kError:
      return "ERROR";
  }
  return "ERROR";
}

}  // namespace aibrix::discovery
