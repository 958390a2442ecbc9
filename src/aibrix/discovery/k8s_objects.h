// The Kubernetes API objects the discovery provider reads, as our own types: the resources
// it lists and watches (Pods, AIBrix ModelAdapters), one page of a LIST, one WATCH event and
// the API's Status (protocols §6.2).
//
// Thread safety: plain values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "aibrix/store/pod.h"
#include "aibrix/store/store.h"

namespace aibrix::discovery {

// The resources the provider watches.
enum class Resource { kPods, kModelAdapters };
// "pods" / "modeladapters" (the metric label and the URL's plural).
std::string_view ResourceName(Resource resource);
// The object kind a watch event carries: "Pod" / "ModelAdapter".
std::string_view ResourceKind(Resource resource);

// One object of either resource.
using K8sObject = std::variant<store::PodObject, store::ModelAdapterObject>;
// "namespace/name" of the object.
std::string ObjectKey(const K8sObject& object);

enum class EventType { kAdded, kModified, kDeleted, kBookmark, kError };
// "ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR" (as on the wire).
std::string_view EventTypeName(EventType type);

// A metav1.Status: the object of an ERROR event.
struct ApiStatus {
  int code = 0;        // HTTP status code, e.g. 410
  std::string reason;  // e.g. "Expired", "Gone"
  std::string message;
  // 410 Gone / reason Expired or Gone: the resourceVersion is older than the server's
  // history, so the client must list again.
  bool Expired() const { return code == 410 || reason == "Expired" || reason == "Gone"; }
};

// One line of a watch stream.
struct WatchEvent {
  EventType type = EventType::kAdded;
  // metadata.resourceVersion of the object (for a bookmark: the version to resume from).
  std::string resource_version;
  std::optional<K8sObject> object;  // ADDED, MODIFIED, DELETED
  ApiStatus status;                 // ERROR
};

// One page of a LIST response.
struct ListPage {
  std::string resource_version;  // metadata.resourceVersion: where the watch starts
  std::string continue_token;    // metadata.continue: "" on the last page
  // metadata.remainingItemCount: how many objects the pages after this one hold, a hint
  // (0 when absent or not a count).
  uint64_t remaining_items = 0;
  std::vector<K8sObject> items;
  // Items skipped because they are unusable (no name, wrong field types): their errors, in
  // the decoder's error classification (k8s_decoder.h).
  std::vector<absl::Status> skipped;
};

}  // namespace aibrix::discovery
