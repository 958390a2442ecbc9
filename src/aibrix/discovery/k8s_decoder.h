// Decodes the Kubernetes API's JSON — watch event lines and LIST pages of Pods and
// ModelAdapters — into k8s_objects.h types, with simdjson's DOM parser (validates the whole
// document, then reads only the fields the cache needs; unknown fields, whatever their
// values, integers past 64 bits included, are ignored). Fields read (protocols §6.1, spec §2.2):
//   metadata: name, namespace, uid, resourceVersion, labels, annotations, deletionTimestamp,
//             ownerReferences (kind, name: the deployment name)
//   Pod spec: nodeName, containers[].name / ports[] (name, containerPort, protocol) /
//             env[] (name, literal value; valueFrom entries are skipped)
//   Pod status: phase, podIP, conditions[type=Ready].status
//   ModelAdapter status: instances[]
// A null value counts as absent. A known field of the wrong type makes the object unusable.
//
// Errors are classified (DecodeErrorOf) for the aibrix_discovery_errors_total reason label:
//   malformed      not JSON, or a known field of the wrong type   (InvalidArgument)
//   unknown_type   a watch event type other than the five known    (Unimplemented)
//   wrong_kind     an object whose kind is not the watched one     (FailedPrecondition)
//   missing_field  no name / namespace / resourceVersion / type    (NotFound)
//
// Thread safety: a K8sDecoder is used by one thread at a time (it reuses its parser).
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "aibrix/discovery/k8s_objects.h"

namespace simdjson::dom {
class parser;
}

namespace aibrix::discovery {

// Bytes past the end of a JSON text that must be readable (simdjson reads ahead); the line
// assembler and the LIST body buffer provide them.
inline constexpr size_t kJsonPadding = 64;

// Labels naming a pod's deployment (spec §2.4; env AIBRIX_POD_DEPLOYMENT_LABEL and
// AIBRIX_POD_RAYCLUSTERFLEET_LABEL).
struct DecodeOptions {
  std::string deployment_label = "app.kubernetes.io/name";
  std::string fleet_label = "orchestration.aibrix.ai/raycluster-fleet-name";
};

enum class DecodeError { kMalformed, kUnknownType, kWrongKind, kMissingField };
inline constexpr int kDecodeErrors = 4;
// "malformed", "unknown_type", "wrong_kind", "missing_field".
std::string_view DecodeErrorName(DecodeError error);
// The class of an error returned by K8sDecoder (kMalformed for any other status).
DecodeError DecodeErrorOf(const absl::Status& status);

// An owner reference of an object (only what the deployment name needs).
struct OwnerRef {
  std::string kind;
  std::string name;
};

// The deployment a pod belongs to (spec §2.4): the fleet label, else the deployment label
// (unless label ray.io/is-ray-node is "yes"), else the owning ReplicaSet's name without its
// last "-suffix", else the owning RayCluster's name without its last two; "" when none.
std::string DeploymentName(const std::map<std::string, std::string>& labels,
                           const std::vector<OwnerRef>& owners, const DecodeOptions& options);

class K8sDecoder {
 public:
  explicit K8sDecoder(Resource resource, DecodeOptions options = {});
  ~K8sDecoder();
  K8sDecoder(const K8sDecoder&) = delete;
  K8sDecoder& operator=(const K8sDecoder&) = delete;

  // One watch event, `{"type": T, "object": {...}}`. Errors as classified above; an ERROR
  // event is a successful decode (type kError, its Status in `status`).
  // REQUIRES: kJsonPadding readable bytes follow `json` in memory.
  absl::StatusOr<WatchEvent> DecodeEvent(std::string_view json);
  // One LIST page (`{"metadata": {...}, "items": [...]}`). Malformed JSON fails the page;
  // an unusable item is skipped and its error listed in `skipped`.
  // REQUIRES: as DecodeEvent.
  absl::StatusOr<ListPage> DecodeList(std::string_view json);
  // The Status an error response carries, if its body is one. REQUIRES: as DecodeEvent.
  std::optional<ApiStatus> DecodeStatus(std::string_view json);

 private:
  // A parser that grew past this for one large document is replaced afterwards, so one
  // large line does not keep several times its size allocated.
  static constexpr size_t kShrinkAbove = 4 << 20;
  void MaybeShrink(size_t document_bytes);

  const Resource resource_;
  const DecodeOptions options_;
  std::unique_ptr<simdjson::dom::parser> parser_;
};

}  // namespace aibrix::discovery
