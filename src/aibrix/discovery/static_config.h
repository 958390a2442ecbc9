// The static discovery file: AIBrix's YAML (`models: [{name, engine?, endpoints?, rolesets?}]`,
// spec §2.5) plus what local use needs. An endpoint is "host:port" or a map
//   {address: "host:port", metric_port, kv_events: bool, kv_events_port, replay_port, lora_id,
//    adapters: [name, ...]}
// Each endpoint becomes a synthetic, ready pod in namespace "standalone" named
// <sanitised model>-<host with dots as dashes>-<index>, the index counting endpoints in file
// order across all models. Each adapter name becomes a ModelAdapter in that namespace whose
// instances are the pods of the endpoints listing it (a LoRA adapter they serve).
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "aibrix/store/pod.h"
#include "aibrix/store/store.h"

namespace aibrix::discovery {

inline constexpr char kStaticNamespace[] = "standalone";

struct StaticEndpoint {
  std::string host;
  int port = store::kDefaultServingPort;
  std::optional<int> metric_port;
  bool kv_events = false;
  std::optional<int> kv_events_port;
  std::optional<int> replay_port;
  std::optional<int64_t> lora_id;
  std::vector<std::string> adapters;  // LoRA adapters served, by name
  std::string role;                   // "prefill" / "decode" inside a roleset, else ""
  std::string roleset;                // roleset name, else ""
  int line = 0;                       // 1-based line in the file, for messages
};

struct StaticModel {
  std::string name;
  std::string engine;                     // "" when not given
  std::vector<StaticEndpoint> endpoints;  // endpoints and roleset members, in file order
};

struct StaticConfig {
  std::vector<StaticModel> models;
};

// Parses the YAML text. Errors name the file, line and field: malformed YAML, unknown
// fields, missing or mistyped fields, invalid ports, endpoints together with rolesets,
// unnamed rolesets, duplicate endpoints, adapters listed twice on an endpoint or named like a
// model of the file.
absl::StatusOr<StaticConfig> ParseStaticConfig(std::string_view yaml, std::string_view origin);
// Reads and parses a file.
absl::StatusOr<StaticConfig> LoadStaticConfig(const std::string& path);

// The reference's name sanitiser: lowercase, '/' and '_' to '-', trim '-', at most 50
// characters, no trailing '-'.
std::string SanitizeModelName(std::string_view model);

// The synthetic pods of a config, in file order.
std::vector<store::PodObject> StaticPods(const StaticConfig& config);
// The config's LoRA adapters, sorted by name, each with its instances (pod names) sorted.
std::vector<store::ModelAdapterObject> StaticAdapters(const StaticConfig& config);

}  // namespace aibrix::discovery
