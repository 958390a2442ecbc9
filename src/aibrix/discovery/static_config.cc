#include "aibrix/discovery/static_config.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "aibrix/common/net.h"
#include "aibrix/common/status_macros.h"
#include "aibrix/common/strings.h"
#include "aibrix/common/utf8.h"
#include "fmt/format.h"
#include "yaml-cpp/yaml.h"

namespace aibrix::discovery {
namespace {

// Carries the origin (file name) so every error can say where it is.
class Parser {
 public:
  explicit Parser(std::string_view origin) : origin_(origin) {}

  absl::StatusOr<StaticConfig> Parse(std::string_view text) {
    YAML::Node root;
    try {
      root = YAML::Load(std::string(text));
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(
          fmt::format("{}:{}: malformed YAML: {}", origin_, e.mark.line + 1, e.msg));
    }
    if (!root.IsMap()) return Error(root, "", "the file must be a map with a 'models' list");
    RETURN_IF_ERROR(CheckKeys(root, "", {"models"}));
    YAML::Node models = root["models"];
    if (!models || !models.IsSequence()) return Error(root, "models", "must be a list");
    StaticConfig config;
    std::set<std::string> model_names;
    for (size_t i = 0; i < models.size(); ++i) {
      ASSIGN_OR_RETURN(StaticModel model, ParseModel(models[i], fmt::format("models[{}]", i)));
      model_names.insert(model.name);
      config.models.push_back(std::move(model));
    }
    // An adapter is routed on by its name, like a model: the two must not collide.
    for (const AdapterUse& use : adapter_uses_) {
      if (model_names.count(use.name) != 0) {
        return Error(use.node, use.path,
                     fmt::format("adapter '{}' has the name of a model of this file", use.name));
      }
    }
    return config;
  }

 private:
  absl::Status Error(const YAML::Node& node, std::string_view field, std::string_view what) {
    const int line = node.Mark().line >= 0 ? node.Mark().line + 1 : 0;
    if (field.empty())
      return absl::InvalidArgumentError(fmt::format("{}:{}: {}", origin_, line, what));
    return absl::InvalidArgumentError(
        fmt::format("{}:{}: field '{}': {}", origin_, line, field, what));
  }

  absl::Status CheckKeys(const YAML::Node& map, std::string_view path,
                         std::initializer_list<std::string_view> allowed) {
    for (const auto& item : map) {
      std::string key;
      try {
        key = item.first.as<std::string>();
      } catch (const YAML::Exception&) {
        return Error(item.first, path, "keys must be strings");
      }
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        std::string known;
        for (std::string_view name : allowed)
          known += (known.empty() ? "" : ", ") + std::string(name);
        std::string field = path.empty() ? key : fmt::format("{}.{}", path, key);
        return Error(item.first, field, fmt::format("unknown field (known: {})", known));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> String(const YAML::Node& node, std::string_view field) {
    if (!node.IsScalar()) return Error(node, field, "must be a string");
    std::string value = node.as<std::string>();
    if (value.empty()) return Error(node, field, "must not be empty");
    // Names and addresses reach JSON answers and metric labels.
    if (!common::IsValidUtf8(value)) return Error(node, field, "must be valid UTF-8");
    return value;
  }

  absl::StatusOr<int64_t> Int(const YAML::Node& node, std::string_view field) {
    int64_t value = 0;
    if (!node.IsScalar() || !YAML::convert<int64_t>::decode(node, value)) {
      return Error(node, field, "must be an integer");
    }
    return value;
  }

  absl::StatusOr<int> Port(const YAML::Node& node, std::string_view field) {
    ASSIGN_OR_RETURN(const int64_t value, Int(node, field));
    if (value < 1 || value > 65535) {
      return Error(node, field, fmt::format("invalid port {}: want 1..65535", value));
    }
    return static_cast<int>(value);
  }

  absl::StatusOr<StaticModel> ParseModel(const YAML::Node& node, const std::string& path) {
    if (!node.IsMap()) return Error(node, path, "must be a map with 'name' and 'endpoints'");
    RETURN_IF_ERROR(CheckKeys(node, path, {"name", "engine", "endpoints", "rolesets"}));
    StaticModel model;
    if (!node["name"]) return Error(node, path + ".name", "is required");
    ASSIGN_OR_RETURN(model.name, String(node["name"], path + ".name"));
    if (node["engine"]) {
      ASSIGN_OR_RETURN(model.engine, String(node["engine"], path + ".engine"));
    }
    const YAML::Node endpoints = node["endpoints"];
    const YAML::Node rolesets = node["rolesets"];
    if (endpoints && rolesets) {
      return Error(node, path, "'endpoints' and 'rolesets' are mutually exclusive");
    }
    if (!endpoints && !rolesets) return Error(node, path, "needs 'endpoints' or 'rolesets'");
    if (endpoints) {
      RETURN_IF_ERROR(ParseEndpointList(endpoints, path + ".endpoints", "", "", &model.endpoints));
    } else {
      if (!rolesets.IsSequence()) return Error(rolesets, path + ".rolesets", "must be a list");
      for (size_t i = 0; i < rolesets.size(); ++i) {
        const YAML::Node roleset = rolesets[i];
        const std::string rs_path = fmt::format("{}.rolesets[{}]", path, i);
        if (!roleset.IsMap()) return Error(roleset, rs_path, "must be a map");
        RETURN_IF_ERROR(CheckKeys(roleset, rs_path, {"name", "prefill", "decode"}));
        if (!roleset["name"]) return Error(roleset, rs_path + ".name", "roleset name is required");
        ASSIGN_OR_RETURN(const std::string rs_name, String(roleset["name"], rs_path + ".name"));
        for (const char* role : {"prefill", "decode"}) {
          if (!roleset[role]) continue;
          RETURN_IF_ERROR(ParseEndpointList(roleset[role], rs_path + "." + role, role, rs_name,
                                            &model.endpoints));
        }
      }
    }
    return model;
  }

  absl::Status ParseEndpointList(const YAML::Node& list, const std::string& path,
                                 const std::string& role, const std::string& roleset,
                                 std::vector<StaticEndpoint>* out) {
    if (!list.IsSequence()) return Error(list, path, "must be a list of endpoints");
    for (size_t i = 0; i < list.size(); ++i) {
      ASSIGN_OR_RETURN(StaticEndpoint endpoint,
                       ParseEndpoint(list[i], fmt::format("{}[{}]", path, i)));
      endpoint.role = role;
      endpoint.roleset = roleset;
      const std::string address = common::FormatHostPort(endpoint.host, endpoint.port);
      if (!seen_.insert(address).second) {
        return Error(list[i], fmt::format("{}[{}]", path, i),
                     fmt::format("duplicate endpoint {}", address));
      }
      out->push_back(std::move(endpoint));
    }
    return absl::OkStatus();
  }

  absl::Status ParseAdapters(const YAML::Node& list, const std::string& path,
                             std::vector<std::string>* out) {
    if (!list.IsSequence()) return Error(list, path, "must be a list of adapter names");
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string item_path = fmt::format("{}[{}]", path, i);
      ASSIGN_OR_RETURN(std::string name, String(list[i], item_path));
      if (std::find(out->begin(), out->end(), name) != out->end()) {
        return Error(list[i], item_path, fmt::format("adapter '{}' listed twice", name));
      }
      adapter_uses_.push_back(AdapterUse{name, item_path, list[i]});
      out->push_back(std::move(name));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<StaticEndpoint> ParseEndpoint(const YAML::Node& node, const std::string& path) {
    StaticEndpoint endpoint;
    endpoint.line = node.Mark().line + 1;
    // yaml-cpp nodes are references: assigning one node to another overwrites its content,
    // so each node variable is initialised once.
    const YAML::Node address = node.IsMap() ? node["address"] : node;
    const std::string address_path = node.IsMap() ? path + ".address" : path;
    if (node.IsMap()) {
      RETURN_IF_ERROR(CheckKeys(node, path,
                                {"address", "metric_port", "kv_events", "kv_events_port",
                                 "replay_port", "lora_id", "adapters", "deployment"}));
      if (!address) return Error(node, path + ".address", "is required");
      if (node["metric_port"]) {
        ASSIGN_OR_RETURN(endpoint.metric_port, Port(node["metric_port"], path + ".metric_port"));
      }
      if (node["kv_events"]) {
        bool enabled = false;
        if (!node["kv_events"].IsScalar() ||
            !YAML::convert<bool>::decode(node["kv_events"], enabled)) {
          return Error(node["kv_events"], path + ".kv_events", "must be true or false");
        }
        endpoint.kv_events = enabled;
      }
      if (node["kv_events_port"]) {
        ASSIGN_OR_RETURN(endpoint.kv_events_port,
                         Port(node["kv_events_port"], path + ".kv_events_port"));
      }
      if (node["replay_port"]) {
        ASSIGN_OR_RETURN(endpoint.replay_port, Port(node["replay_port"], path + ".replay_port"));
      }
      if (node["lora_id"]) {
        ASSIGN_OR_RETURN(endpoint.lora_id, Int(node["lora_id"], path + ".lora_id"));
      }
      if (node["adapters"]) {
        RETURN_IF_ERROR(ParseAdapters(node["adapters"], path + ".adapters", &endpoint.adapters));
      }
      if (node["deployment"]) {
        ASSIGN_OR_RETURN(endpoint.deployment, String(node["deployment"], path + ".deployment"));
      }
    } else if (!node.IsScalar()) {
      return Error(node, path, "must be \"host:port\" or a map with 'address'");
    }
    ASSIGN_OR_RETURN(const std::string text, String(address, address_path));
    auto parsed = common::ParseHostPort(text, store::kDefaultServingPort);
    if (!parsed.ok()) return Error(address, address_path, common::AsStd(parsed.status().message()));
    endpoint.host = parsed->host;
    endpoint.port = parsed->port;
    return endpoint;
  }

  // An adapter name as written, for the check against model names once all are known.
  struct AdapterUse {
    std::string name;
    std::string path;
    YAML::Node node;
  };

  std::string origin_;
  std::set<std::string> seen_;
  std::vector<AdapterUse> adapter_uses_;
};

}  // namespace

absl::StatusOr<StaticConfig> ParseStaticConfig(std::string_view yaml, std::string_view origin) {
  try {
    return Parser(origin).Parse(yaml);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        fmt::format("{}:{}: invalid config: {}", origin, e.mark.line + 1, e.msg));
  }
}

absl::StatusOr<StaticConfig> LoadStaticConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(fmt::format("cannot read static config {}", path));
  std::stringstream text;
  text << in.rdbuf();
  return ParseStaticConfig(text.str(), path);
}

std::string SanitizeModelName(std::string_view model) {
  std::string out;
  for (char c : model) {
    if (c == '/' || c == '_') {
      out.push_back('-');
    } else {
      out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    }
  }
  auto trim = [](std::string& s) {
    size_t first = s.find_first_not_of('-');
    if (first == std::string::npos) {
      s.clear();
      return;
    }
    s = s.substr(first, s.find_last_not_of('-') - first + 1);
  };
  trim(out);
  if (out.size() > 50) out.resize(50);
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out;
}

namespace {

// AIBrix's synthetic pod name: <sanitised model>-<host with dots as dashes>-<index in file>.
std::string StaticPodName(const StaticModel& model, const StaticEndpoint& endpoint, int index) {
  std::string host = endpoint.host;
  std::replace(host.begin(), host.end(), '.', '-');
  std::replace(host.begin(), host.end(), ':', '-');
  return fmt::format("{}-{}-{}", SanitizeModelName(model.name), host, index);
}

}  // namespace

std::vector<store::ModelAdapterObject> StaticAdapters(const StaticConfig& config) {
  std::map<std::string, std::vector<std::string>> instances;
  int index = 0;
  for (const StaticModel& model : config.models) {
    for (const StaticEndpoint& endpoint : model.endpoints) {
      const std::string pod = StaticPodName(model, endpoint, index++);
      for (const std::string& adapter : endpoint.adapters) instances[adapter].push_back(pod);
    }
  }
  std::vector<store::ModelAdapterObject> adapters;
  for (auto& [name, pods] : instances) {
    std::sort(pods.begin(), pods.end());
    adapters.push_back(store::ModelAdapterObject{kStaticNamespace, name, std::move(pods)});
  }
  return adapters;
}

std::vector<store::PodObject> StaticPods(const StaticConfig& config) {
  std::vector<store::PodObject> pods;
  int index = 0;
  for (const StaticModel& model : config.models) {
    for (const StaticEndpoint& endpoint : model.endpoints) {
      store::PodObject pod;
      pod.ns = kStaticNamespace;
      pod.name = StaticPodName(model, endpoint, index++);
      pod.uid = pod.ns + "/" + pod.name;
      pod.labels[store::kModelNameLabel] = model.name;
      pod.labels[store::kPortLabel] = std::to_string(endpoint.port);
      if (!model.engine.empty()) pod.labels[store::kEngineLabel] = model.engine;
      if (!endpoint.role.empty()) {
        pod.labels[store::kRoleNameLabel] = endpoint.role;
        pod.labels[store::kRoleSetNameLabel] = endpoint.roleset;
      }
      pod.labels[store::kMetricPortLabel] =
          std::to_string(endpoint.metric_port.value_or(endpoint.port));
      if (endpoint.kv_events) pod.labels[store::kKvEventsEnabledLabel] = "true";
      if (endpoint.kv_events_port) {
        pod.labels[store::kKvEventsPortLabel] = std::to_string(*endpoint.kv_events_port);
      }
      if (endpoint.replay_port) {
        pod.labels[store::kKvReplayPortLabel] = std::to_string(*endpoint.replay_port);
      }
      if (endpoint.lora_id) pod.labels[store::kLoraIdLabel] = std::to_string(*endpoint.lora_id);
      pod.deployment = endpoint.deployment;
      pod.ip = endpoint.host;
      pod.phase = "Running";
      pod.ready_condition = true;
      pod.containers.push_back(
          store::Container{"vllm", {store::ContainerPort{"http", endpoint.port, "TCP"}}, {}});
      pods.push_back(std::move(pod));
    }
  }
  return pods;
}

}  // namespace aibrix::discovery
