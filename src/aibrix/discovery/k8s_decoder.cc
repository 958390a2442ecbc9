#include "aibrix/discovery/k8s_decoder.h"

#include <algorithm>
#include <utility>

#include "aibrix/common/status_macros.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "simdjson.h"

namespace aibrix::discovery {
namespace {

namespace dom = simdjson::dom;
static_assert(kJsonPadding >= simdjson::SIMDJSON_PADDING);

// Items of a LIST page reserved up front at most (the array's length comes from untrusted
// bytes; Kubernetes pages hold `limit` items, 500 by default).
constexpr size_t kMaxReserveItems = 10000;

absl::Status Malformed(std::string_view path, std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("{}: {}", path, what));
}

absl::Status Missing(std::string_view what) {
  return absl::NotFoundError(fmt::format("missing {}", what));
}

// Parses `json` (padded). Valid JSON holding an integer simdjson cannot represent (past 64
// bits, in a field we ignore) is normalised by nlohmann/json (big integers become doubles)
// and parsed again: rare, not a hot path.
simdjson::error_code ParseDocument(dom::parser& parser, std::string_view json, dom::element* root) {
  simdjson::error_code error = parser.parse(json.data(), json.size(), false).get(*root);
  if (error != simdjson::NUMBER_ERROR) return error;
  nlohmann::json normalized = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (normalized.is_discarded()) return error;
  const std::string text =
      normalized.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return parser.parse(text.data(), text.size(), /*realloc_if_needed=*/true).get(*root);
}

bool IsNull(const dom::element& value) { return value.type() == dom::element_type::NULL_VALUE; }

// Reads a string field; null leaves `out` unchanged.
absl::Status ReadString(const dom::element& value, std::string_view path, std::string* out) {
  if (IsNull(value)) return absl::OkStatus();
  std::string_view text;
  if (value.get_string().get(text) != simdjson::SUCCESS) return Malformed(path, "not a string");
  out->assign(text.data(), text.size());
  return absl::OkStatus();
}

// Reads an integer field that fits `int`; null leaves `out` unchanged.
absl::Status ReadInt(const dom::element& value, std::string_view path, int* out) {
  if (IsNull(value)) return absl::OkStatus();
  int64_t number = 0;
  if (value.get_int64().get(number) != simdjson::SUCCESS || number < INT32_MIN ||
      number > INT32_MAX) {
    return Malformed(path, "not a 32-bit integer");
  }
  *out = static_cast<int>(number);
  return absl::OkStatus();
}

// Calls fn(key, value) for every field of an object; null is an empty object.
template <class Fn>
absl::Status ForEachField(const dom::element& value, std::string_view path, Fn&& fn) {
  if (IsNull(value)) return absl::OkStatus();
  dom::object object;
  if (value.get_object().get(object) != simdjson::SUCCESS) return Malformed(path, "not an object");
  for (dom::key_value_pair field : object) RETURN_IF_ERROR(fn(field.key, field.value));
  return absl::OkStatus();
}

// Calls fn(element) for every element of an array; null is an empty array.
template <class Fn>
absl::Status ForEachElement(const dom::element& value, std::string_view path, Fn&& fn) {
  if (IsNull(value)) return absl::OkStatus();
  dom::array array;
  if (value.get_array().get(array) != simdjson::SUCCESS) return Malformed(path, "not an array");
  for (dom::element element : array) RETURN_IF_ERROR(fn(element));
  return absl::OkStatus();
}

// A map of strings (labels, annotations). Kubernetes sends keys sorted, so each insertion
// lands at the end.
absl::Status ReadStringMap(const dom::element& value, std::string_view path,
                           std::map<std::string, std::string>* out) {
  out->clear();
  return ForEachField(value, path, [&](std::string_view key, const dom::element& element) {
    std::string_view text;
    if (element.get_string().get(text) != simdjson::SUCCESS) {
      return Malformed(path, fmt::format("value of '{}' is not a string", key));
    }
    out->insert_or_assign(out->end(), std::string(key), std::string(text));
    return absl::OkStatus();
  });
}

// What any object (Pod, ModelAdapter, Status) may carry; filled in one pass over the fields,
// whatever their order (an event's "object" can come before its "type").
struct RawObject {
  std::string kind;
  // metadata
  std::string name;
  std::string ns;
  std::string uid;
  std::string resource_version;
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> annotations;
  std::optional<std::string> deletion_timestamp;
  std::vector<OwnerRef> owners;
  // Pod spec and status
  std::string node_name;
  std::vector<store::Container> containers;
  std::string phase;
  std::string ip;
  bool ready_condition = false;
  // ModelAdapter status
  std::vector<std::string> instances;
  // Status (ERROR events)
  ApiStatus status;
};

absl::Status ReadMetadata(const dom::element& value, RawObject* out) {
  return ForEachField(value, "metadata", [&](std::string_view key, const dom::element& field) {
    if (key == "name") return ReadString(field, "metadata.name", &out->name);
    if (key == "namespace") return ReadString(field, "metadata.namespace", &out->ns);
    if (key == "uid") return ReadString(field, "metadata.uid", &out->uid);
    if (key == "resourceVersion") {
      return ReadString(field, "metadata.resourceVersion", &out->resource_version);
    }
    if (key == "labels") return ReadStringMap(field, "metadata.labels", &out->labels);
    if (key == "annotations") {
      return ReadStringMap(field, "metadata.annotations", &out->annotations);
    }
    if (key == "deletionTimestamp") {
      if (IsNull(field)) return absl::OkStatus();
      std::string timestamp;
      RETURN_IF_ERROR(ReadString(field, "metadata.deletionTimestamp", &timestamp));
      out->deletion_timestamp = std::move(timestamp);
      return absl::OkStatus();
    }
    if (key == "ownerReferences") {
      out->owners.clear();
      return ForEachElement(field, "metadata.ownerReferences", [&](const dom::element& element) {
        OwnerRef owner;
        RETURN_IF_ERROR(ForEachField(
            element, "metadata.ownerReferences[]",
            [&](std::string_view owner_key, const dom::element& owner_field) {
              if (owner_key == "kind") {
                return ReadString(owner_field, "metadata.ownerReferences[].kind", &owner.kind);
              }
              if (owner_key == "name") {
                return ReadString(owner_field, "metadata.ownerReferences[].name", &owner.name);
              }
              return absl::OkStatus();
            }));
        out->owners.push_back(std::move(owner));
        return absl::OkStatus();
      });
    }
    return absl::OkStatus();
  });
}

absl::Status ReadContainer(const dom::element& value, store::Container* out) {
  constexpr std::string_view kPath = "spec.containers[]";
  return ForEachField(value, kPath, [&](std::string_view key, const dom::element& field) {
    if (key == "name") return ReadString(field, "spec.containers[].name", &out->name);
    if (key == "ports") {
      out->ports.clear();
      return ForEachElement(field, "spec.containers[].ports", [&](const dom::element& element) {
        store::ContainerPort port;
        RETURN_IF_ERROR(ForEachField(
            element, "spec.containers[].ports[]",
            [&](std::string_view port_key, const dom::element& port_field) {
              if (port_key == "name") {
                return ReadString(port_field, "spec.containers[].ports[].name", &port.name);
              }
              if (port_key == "containerPort") {
                return ReadInt(port_field, "spec.containers[].ports[].containerPort", &port.port);
              }
              if (port_key == "protocol") {
                return ReadString(port_field, "spec.containers[].ports[].protocol", &port.protocol);
              }
              return absl::OkStatus();
            }));
        out->ports.push_back(std::move(port));
        return absl::OkStatus();
      });
    }
    if (key == "env") {
      out->env.clear();
      return ForEachElement(field, "spec.containers[].env", [&](const dom::element& element) {
        std::string name;
        std::optional<std::string> literal;
        bool value_from = false;
        RETURN_IF_ERROR(ForEachField(
            element, "spec.containers[].env[]",
            [&](std::string_view env_key, const dom::element& env_field) {
              if (env_key == "name") {
                return ReadString(env_field, "spec.containers[].env[].name", &name);
              }
              if (env_key == "value") {
                if (IsNull(env_field)) return absl::OkStatus();
                literal.emplace();
                return ReadString(env_field, "spec.containers[].env[].value", &*literal);
              }
              if (env_key == "valueFrom") value_from = !IsNull(env_field);
              return absl::OkStatus();
            }));
        // valueFrom (secrets, field references) is not resolved: only literal values are
        // kept. An entry with neither is an empty literal, as Kubernetes reads it.
        if (!literal.has_value() && value_from) return absl::OkStatus();
        out->env.emplace_back(std::move(name), literal.value_or(""));
        return absl::OkStatus();
      });
    }
    return absl::OkStatus();
  });
}

absl::Status ReadPodSpec(const dom::element& value, RawObject* out) {
  return ForEachField(value, "spec", [&](std::string_view key, const dom::element& field) {
    if (key == "nodeName") return ReadString(field, "spec.nodeName", &out->node_name);
    if (key == "containers") {
      out->containers.clear();
      return ForEachElement(field, "spec.containers", [&](const dom::element& element) {
        store::Container container;
        RETURN_IF_ERROR(ReadContainer(element, &container));
        out->containers.push_back(std::move(container));
        return absl::OkStatus();
      });
    }
    return absl::OkStatus();
  });
}

absl::Status ReadPodStatus(const dom::element& value, RawObject* out) {
  return ForEachField(value, "status", [&](std::string_view key, const dom::element& field) {
    if (key == "phase") return ReadString(field, "status.phase", &out->phase);
    if (key == "podIP") return ReadString(field, "status.podIP", &out->ip);
    if (key == "conditions") {
      out->ready_condition = false;
      return ForEachElement(field, "status.conditions", [&](const dom::element& element) {
        std::string type;
        std::string status;
        RETURN_IF_ERROR(ForEachField(
            element, "status.conditions[]",
            [&](std::string_view condition_key, const dom::element& condition_field) {
              if (condition_key == "type") {
                return ReadString(condition_field, "status.conditions[].type", &type);
              }
              if (condition_key == "status") {
                return ReadString(condition_field, "status.conditions[].status", &status);
              }
              return absl::OkStatus();
            }));
        if (type == "Ready") out->ready_condition = status == "True";
        return absl::OkStatus();
      });
    }
    return absl::OkStatus();
  });
}

absl::Status ReadAdapterStatus(const dom::element& value, RawObject* out) {
  return ForEachField(value, "status", [&](std::string_view key, const dom::element& field) {
    if (key != "instances") return absl::OkStatus();
    out->instances.clear();
    return ForEachElement(field, "status.instances", [&](const dom::element& element) {
      std::string_view pod;
      if (element.get_string().get(pod) != simdjson::SUCCESS) {
        return Malformed("status.instances", "an element is not a string");
      }
      out->instances.emplace_back(pod);
      return absl::OkStatus();
    });
  });
}

absl::Status ReadObject(const dom::element& value, Resource resource, RawObject* out) {
  return ForEachField(value, "object", [&](std::string_view key, const dom::element& field) {
    if (key == "kind") return ReadString(field, "kind", &out->kind);
    if (key == "metadata") return ReadMetadata(field, out);
    if (key == "spec") {
      return resource == Resource::kPods ? ReadPodSpec(field, out) : absl::OkStatus();
    }
    if (key == "status") {
      // A Status object's "status" is a string ("Failure"); a Pod's or ModelAdapter's an
      // object.
      if (field.type() == dom::element_type::STRING) return absl::OkStatus();
      return resource == Resource::kPods ? ReadPodStatus(field, out)
                                         : ReadAdapterStatus(field, out);
    }
    if (key == "code") return ReadInt(field, "code", &out->status.code);
    if (key == "reason") return ReadString(field, "reason", &out->status.reason);
    if (key == "message") return ReadString(field, "message", &out->status.message);
    return absl::OkStatus();
  });
}

// The typed object, once the fields it needs are known to be there.
absl::StatusOr<K8sObject> ToObject(RawObject raw, Resource resource, const DecodeOptions& options) {
  if (!raw.kind.empty() && raw.kind != ResourceKind(resource)) {
    return absl::FailedPreconditionError(
        fmt::format("object of kind '{}' in the {} stream", raw.kind, ResourceName(resource)));
  }
  if (raw.name.empty()) return Missing("metadata.name");
  if (raw.ns.empty()) return Missing(fmt::format("metadata.namespace of {}", raw.name));
  if (resource == Resource::kModelAdapters) {
    return K8sObject(store::ModelAdapterObject{std::move(raw.ns), std::move(raw.name),
                                               std::move(raw.instances)});
  }
  store::PodObject pod;
  pod.deployment = DeploymentName(raw.labels, raw.owners, options);
  pod.ns = std::move(raw.ns);
  pod.name = std::move(raw.name);
  pod.uid = std::move(raw.uid);
  pod.labels = std::move(raw.labels);
  pod.annotations = std::move(raw.annotations);
  pod.ip = std::move(raw.ip);
  pod.phase = std::move(raw.phase);
  pod.node_name = std::move(raw.node_name);
  pod.ready_condition = raw.ready_condition;
  pod.deletion_timestamp = std::move(raw.deletion_timestamp);
  pod.containers = std::move(raw.containers);
  return K8sObject(std::move(pod));
}

std::optional<EventType> ParseEventType(std::string_view type) {
  if (type == "ADDED") return EventType::kAdded;
  if (type == "MODIFIED") return EventType::kModified;
  if (type == "DELETED") return EventType::kDeleted;
  if (type == "BOOKMARK") return EventType::kBookmark;
  if (type == "ERROR") return EventType::kError;
  return std::nullopt;
}

// Strips the last `segments` "-suffix" parts of `name` ("" if it has fewer dashes).
std::string TrimSuffixes(std::string_view name, int segments) {
  for (int i = 0; i < segments; ++i) {
    const size_t dash = name.rfind('-');
    if (dash == std::string_view::npos) return "";
    name = name.substr(0, dash);
  }
  return std::string(name);
}

const std::string* Find(const std::map<std::string, std::string>& map, const std::string& key) {
  auto it = map.find(key);
  return it == map.end() ? nullptr : &it->second;
}

}  // namespace

std::string_view DecodeErrorName(DecodeError error) {
  switch (error) {
    case DecodeError::kMalformed:
      return "malformed";
    case DecodeError::kUnknownType:
      return "unknown_type";
    case DecodeError::kWrongKind:
      return "wrong_kind";
    case DecodeError::kMissingField:
      return "missing_field";
  }
  return "malformed";
}

DecodeError DecodeErrorOf(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnimplemented:
      return DecodeError::kUnknownType;
    case absl::StatusCode::kFailedPrecondition:
      return DecodeError::kWrongKind;
    case absl::StatusCode::kNotFound:
      return DecodeError::kMissingField;
    default:
      return DecodeError::kMalformed;
  }
}

std::string DeploymentName(const std::map<std::string, std::string>& labels,
                           const std::vector<OwnerRef>& owners, const DecodeOptions& options) {
  if (const std::string* fleet = Find(labels, options.fleet_label); fleet && !fleet->empty()) {
    return *fleet;
  }
  const std::string* ray = Find(labels, "ray.io/is-ray-node");
  if (const std::string* name = Find(labels, options.deployment_label);
      name && !name->empty() && !(ray && *ray == "yes")) {
    return *name;
  }
  for (const OwnerRef& owner : owners) {
    if (owner.kind == "ReplicaSet") return TrimSuffixes(owner.name, 1);
    if (owner.kind == "RayCluster") return TrimSuffixes(owner.name, 2);
  }
  return "";
}

K8sDecoder::K8sDecoder(Resource resource, DecodeOptions options)
    : resource_(resource), options_(std::move(options)), parser_(std::make_unique<dom::parser>()) {}

K8sDecoder::~K8sDecoder() = default;

void K8sDecoder::MaybeShrink(size_t document_bytes) {
  if (document_bytes > kShrinkAbove) parser_ = std::make_unique<dom::parser>();
}

absl::StatusOr<WatchEvent> K8sDecoder::DecodeEvent(std::string_view json) {
  dom::element root;
  const simdjson::error_code error = ParseDocument(*parser_, json, &root);
  absl::StatusOr<WatchEvent> result = [&]() -> absl::StatusOr<WatchEvent> {
    if (error != simdjson::SUCCESS) {
      return Malformed("watch event", simdjson::error_message(error));
    }
    std::string type_name;
    bool has_type = false;
    bool has_object = false;
    RawObject raw;
    RETURN_IF_ERROR(
        ForEachField(root, "watch event", [&](std::string_view key, const dom::element& field) {
          if (key == "type") {
            has_type = !IsNull(field);
            return ReadString(field, "type", &type_name);
          }
          if (key == "object") {
            has_object = !IsNull(field);
            raw = RawObject();
            return ReadObject(field, resource_, &raw);
          }
          return absl::OkStatus();
        }));
    if (root.type() != dom::element_type::OBJECT) return Malformed("watch event", "not an object");
    if (!has_type) return Missing("type");
    const std::optional<EventType> type = ParseEventType(type_name);
    if (!type) return absl::UnimplementedError(fmt::format("unknown event type '{}'", type_name));
    if (!has_object) return Missing(fmt::format("object of the {} event", type_name));
    WatchEvent event;
    event.type = *type;
    event.resource_version = raw.resource_version;
    switch (*type) {
      case EventType::kBookmark:
        if (raw.resource_version.empty()) return Missing("metadata.resourceVersion of BOOKMARK");
        break;
      case EventType::kError:
        event.status = std::move(raw.status);
        break;
      default: {
        ASSIGN_OR_RETURN(K8sObject object, ToObject(std::move(raw), resource_, options_));
        event.object = std::move(object);
        break;
      }
    }
    return event;
  }();
  MaybeShrink(json.size());
  return result;
}

absl::StatusOr<ListPage> K8sDecoder::DecodeList(std::string_view json) {
  dom::element root;
  const simdjson::error_code error = ParseDocument(*parser_, json, &root);
  absl::StatusOr<ListPage> result = [&]() -> absl::StatusOr<ListPage> {
    if (error != simdjson::SUCCESS) return Malformed("list", simdjson::error_message(error));
    if (root.type() != dom::element_type::OBJECT) return Malformed("list", "not an object");
    ListPage page;
    RETURN_IF_ERROR(
        ForEachField(root, "list", [&](std::string_view key, const dom::element& field) {
          if (key == "metadata") {
            return ForEachField(
                field, "list metadata", [&](std::string_view meta_key, const dom::element& value) {
                  if (meta_key == "resourceVersion") {
                    return ReadString(value, "metadata.resourceVersion", &page.resource_version);
                  }
                  if (meta_key == "continue") {
                    return ReadString(value, "metadata.continue", &page.continue_token);
                  }
                  if (meta_key == "remainingItemCount") {
                    // A hint only: a value of another shape is ignored, as unknown fields.
                    uint64_t remaining = 0;
                    if (value.get_uint64().get(remaining) == simdjson::SUCCESS) {
                      page.remaining_items = remaining;
                    }
                  }
                  return absl::OkStatus();
                });
          }
          if (key == "items") {
            page.items.clear();
            if (dom::array items; field.get_array().get(items) == simdjson::SUCCESS) {
              page.items.reserve(std::min<size_t>(items.size(), kMaxReserveItems));
            }
            return ForEachElement(field, "items", [&](const dom::element& item) {
              RawObject raw;
              absl::StatusOr<K8sObject> object = [&]() -> absl::StatusOr<K8sObject> {
                RETURN_IF_ERROR(ReadObject(item, resource_, &raw));
                return ToObject(std::move(raw), resource_, options_);
              }();
              if (object.ok()) {
                page.items.push_back(std::move(*object));
              } else {
                page.skipped.push_back(object.status());
              }
              return absl::OkStatus();
            });
          }
          return absl::OkStatus();
        }));
    if (page.resource_version.empty()) return Missing("metadata.resourceVersion of the list");
    return page;
  }();
  MaybeShrink(json.size());
  return result;
}

std::optional<ApiStatus> K8sDecoder::DecodeStatus(std::string_view json) {
  dom::element root;
  std::optional<ApiStatus> result;
  if (ParseDocument(*parser_, json, &root) == simdjson::SUCCESS) {
    RawObject raw;
    if (ReadObject(root, resource_, &raw).ok() && raw.kind == "Status") result = raw.status;
  }
  MaybeShrink(json.size());
  return result;
}

}  // namespace aibrix::discovery
