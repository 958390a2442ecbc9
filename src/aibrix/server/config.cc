#include "aibrix/server/config.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <optional>

#include "absl/status/status.h"
#include "aibrix/common/env.h"
#include "aibrix/common/net.h"
#include "aibrix/redis/replica_sync.h"
#include "fmt/format.h"

namespace aibrix::server {
namespace {

using Names = std::initializer_list<const char*>;

// Reads variables into a config, collecting every problem so one start-up error lists them all.
class EnvReader {
 public:
  // The value of the first set spelling of `names` (a conflict between spellings is recorded).
  std::optional<common::EnvValue> Get(Names names, common::EnvSameValue same = nullptr) {
    auto value = common::EnvAny(names, same);
    if (!value.ok()) {
      errors_.emplace_back(value.status().message());
      return std::nullopt;
    }
    return *value;
  }

  void Fail(const common::EnvValue& v, std::string_view why) {
    errors_.push_back(fmt::format("{}={}: {}", v.name, v.value, why));
  }

  void Note(const common::EnvValue& v, std::string_view what) {
    notes_.push_back(fmt::format("{}={}: {}", v.name, v.value, what));
  }

  void String(Names names, std::string* out) {
    if (auto v = Get(names)) *out = v->value;
  }

  void Bool(Names names, bool* out) {
    // Two spellings agree when they parse to the same value ("True" and "1").
    const common::EnvSameValue same = [](std::string_view a, std::string_view b) {
      const std::optional<bool> parsed = common::ParseGoBool(a);
      return a == b || (parsed.has_value() && parsed == common::ParseGoBool(b));
    };
    if (auto v = Get(names, same)) {
      if (auto parsed = common::ParseGoBool(v->value)) {
        *out = *parsed;
      } else {
        Fail(*v, "not a boolean (true/false, 1/0, t/f)");
      }
    }
  }

  // A positive integer up to `max`.
  template <typename Int>
  void PositiveInt(Names names, Int* out, int64_t max = std::numeric_limits<Int>::max()) {
    auto v = Get(names);
    if (!v) return;
    auto parsed = common::ParsePositiveInt(v->value);
    if (!parsed || *parsed > max) {
      Fail(*v, fmt::format("not an integer in 1..{}", max));
      return;
    }
    *out = static_cast<Int>(*parsed);
  }

  // A positive Go duration ("5s", "300ms") or a bare integer counting seconds (what AIBrix's
  // tokenizer-pool variables meant), stored in whole units of `Unit` (at least 1).
  template <typename Unit, typename Int>
  void Duration(Names names, Int* out) {
    auto v = Get(names);
    if (!v) return;
    std::optional<std::chrono::nanoseconds> parsed = common::ParseGoDuration(v->value);
    if (!parsed) {
      if (auto seconds = common::ParsePositiveInt(v->value);
          seconds && *seconds <= std::numeric_limits<int32_t>::max()) {
        parsed = std::chrono::seconds(*seconds);
      }
    }
    if (!parsed || parsed->count() <= 0) {
      Fail(*v, "not a positive duration (e.g. 5s, 300ms; a bare number counts seconds)");
      return;
    }
    const auto units = std::max<int64_t>(1, std::chrono::duration_cast<Unit>(*parsed).count());
    if (units > std::numeric_limits<Int>::max()) {
      Fail(*v, "too long");
      return;
    }
    *out = static_cast<Int>(units);
  }

  // A finite number, positive (or, with allow_zero, non-negative).
  void Number(Names names, double* out, bool allow_zero) {
    auto v = Get(names);
    if (!v) return;
    const std::optional<double> parsed = common::ParseFiniteNumber(v->value);
    if (!parsed || *parsed < 0 || (*parsed == 0 && !allow_zero)) {
      Fail(*v, allow_zero ? "not a non-negative number" : "not a positive number");
      return;
    }
    *out = *parsed;
  }

  // Checks the form of a variable that changes nothing here and notes why.
  template <typename Int>
  void InertInt(Names names, std::string_view why) {
    Int ignored{};
    const size_t errors = errors_.size();
    PositiveInt(names, &ignored);
    if (errors_.size() == errors) NoteIfSet(names, why);
  }
  void InertDuration(Names names, std::string_view why) {
    int64_t ignored = 0;
    const size_t errors = errors_.size();
    Duration<std::chrono::milliseconds>(names, &ignored);
    if (errors_.size() == errors) NoteIfSet(names, why);
  }
  void NoteIfSet(Names names, std::string_view why) {
    if (auto v = Get(names)) Note(*v, why);
  }

  absl::Status status() const {
    if (errors_.empty()) return absl::OkStatus();
    std::string message = "environment: ";
    for (size_t i = 0; i < errors_.size(); ++i) message += (i ? "; " : "") + errors_[i];
    return absl::InvalidArgumentError(message);
  }
  std::vector<std::string> TakeNotes() { return std::move(notes_); }

 private:
  std::vector<std::string> errors_;
  std::vector<std::string> notes_;
};

void ReadTokenizer(EnvReader& env, ServiceConfig& config) {
  bool use_remote = false;
  env.Bool({"AIBRIX_PREFIX_CACHE_USE_REMOTE_TOKENIZER", "AIBRIX_USE_REMOTE_TOKENIZER"},
           &use_remote);
  if (use_remote) config.tokenizer = "remote";
  if (auto type = env.Get({"AIBRIX_PREFIX_CACHE_TOKENIZER_TYPE"})) {
    if (type->value == "remote") {
      config.tokenizer = "remote";
    } else if (type->value != "character") {
      // "character" is AIBrix's default local tokenizer: the default choice here too.
      env.Fail(*type, "unsupported tokenizer type (supported: remote, character)");
    }
  }
  env.String({"AIBRIX_PREFIX_CACHE_REMOTE_TOKENIZER_ENDPOINT", "AIBRIX_REMOTE_TOKENIZER_ENDPOINT"},
             &config.tokenizer_endpoint);
  // Both URLs are checked with the flags' values at start-up (Service::Start).
  env.String({"AIBRIX_VLLM_TOKENIZER_ENDPOINT_TEMPLATE"}, &config.tokenizer_endpoint_template);
  env.Duration<std::chrono::milliseconds>({"AIBRIX_TOKENIZER_REQUEST_TIMEOUT"},
                                          &config.tokenizer_timeout_ms);
  env.Duration<std::chrono::seconds>({"AIBRIX_TOKENIZER_TTL"}, &config.tokenizer_ttl_s);
  env.PositiveInt({"AIBRIX_MAX_TOKENIZERS_PER_POOL"}, &config.max_tokenizers, 100000);
  env.InertDuration({"AIBRIX_TOKENIZER_HEALTH_CHECK_PERIOD"},
                    "no effect: there is no periodic health check; a call that fails on one "
                    "engine moves on to the next");
}

void ReadPrefixCache(EnvReader& env, ServiceConfig& config) {
  env.Bool({"AIBRIX_PREFIX_CACHE_KV_EVENT_SYNC_ENABLED", "AIBRIX_KV_EVENT_SYNC_ENABLED"},
           &config.kv_event_sync);
  env.PositiveInt({"AIBRIX_PREFIX_CACHE_BLOCK_SIZE"}, &config.block_size, 4096);
  env.PositiveInt({"AIBRIX_PREFIX_CACHE_BLOCK_NUMBER"}, &config.approx_blocks_per_pod);
  env.PositiveInt({"AIBRIX_PREFIX_CACHE_EVICTION_DURATION_MINS"}, &config.approx_ttl_minutes);
  env.PositiveInt({"AIBRIX_PREFIX_CACHE_EVICTION_INTERVAL_SECONDS"}, &config.sweep_interval_s,
                  3600);
  env.PositiveInt({"AIBRIX_PREFIX_CACHE_POD_RUNNING_REQUEST_IMBALANCE_ABS_COUNT"},
                  &config.imbalance_abs_count);
  env.Number({"AIBRIX_PREFIX_CACHE_STANDARD_DEVIATION_FACTOR"}, &config.std_dev_factor,
             /*allow_zero=*/false);
  if (auto seed = env.Get({"AIBRIX_PREFIX_CACHE_HASH_SEED"})) {
    char* end = nullptr;
    errno = 0;
    std::strtoull(seed->value.c_str(), &end, 10);
    if (end == seed->value.c_str() || *end != '\0' || errno != 0 || seed->value[0] == '-') {
      env.Fail(*seed, "not an unsigned integer");
    } else {
      env.Note(*seed,
               "no effect: the routing-fed index is not shared between replicas (no statesync)");
    }
  }
  for (Names names : {Names{"AIBRIX_PREFIX_CACHE_KV_EVENT_PUBLISH_ADDR"},
                      Names{"AIBRIX_PREFIX_CACHE_KV_EVENT_SUBSCRIBE_ADDRS"}}) {
    env.NoteIfSet(names, "no effect (AIBrix defines it but never reads it either)");
  }
  // The sync indexer's bounds: the event-fed index follows the engines' own evictions.
  constexpr std::string_view kSyncBound =
      "no effect: the event-fed index drops what the engines evict (BlockRemoved, "
      "AllBlocksCleared) and is bounded by --index-max-memberships(-per-pod)";
  env.InertInt<int64_t>({"AIBRIX_SYNC_MAX_CONTEXTS"}, kSyncBound);
  env.InertInt<int64_t>({"AIBRIX_SYNC_MAX_PREFIXES_PER_CONTEXT"}, kSyncBound);
  env.InertInt<int64_t>({"AIBRIX_SYNC_EVICTION_INTERVAL_SECONDS"}, kSyncBound);
  env.InertInt<int64_t>({"AIBRIX_SYNC_EVICTION_DURATION_MINUTES"}, kSyncBound);
  bool statesync = false;
  env.Bool({"AIBRIX_STATESYNC_ENABLED"}, &statesync);
  if (statesync) {
    env.Fail(*env.Get({"AIBRIX_STATESYNC_ENABLED"}),
             "Redis state sync of the routing-fed prefix index is not supported (with KV event "
             "sync every replica reads the engines' own events instead)");
  }
  env.InertDuration({"AIBRIX_STATESYNC_SYNC_PERIOD"}, "no effect without AIBRIX_STATESYNC_ENABLED");
}

void ReadKvEvents(EnvReader& env, ServiceConfig& config) {
  env.Duration<std::chrono::milliseconds>({"AIBRIX_ZMQ_REPLAY_TIMEOUT"},
                                          &config.kv_replay_timeout_ms);
  env.Duration<std::chrono::milliseconds>({"AIBRIX_ZMQ_RECONNECT_INTERVAL"},
                                          &config.kv_reconnect_ms);
  env.InertDuration({"AIBRIX_ZMQ_POLL_TIMEOUT"},
                    "no effect: KV event sockets are waited on with epoll, never polled");
}

void ReadMetrics(EnvReader& env, ServiceConfig& config) {
  env.PositiveInt({"AIBRIX_POD_METRIC_REFRESH_INTERVAL_MS"}, &config.metric_refresh_ms);
  if (auto endpoint = env.Get({"PROMETHEUS_ENDPOINT"})) {
    env.Fail(*endpoint,
             "the PromQL metric path is not supported (engine metrics are scraped from the pods "
             "directly); unset it");
  }
  // Read only with PROMETHEUS_ENDPOINT in AIBrix too.
  env.InertInt<int64_t>({"AIBRIX_PROMETHEUS_QUERY_INTERVAL_MS"},
                        "no effect without PROMETHEUS_ENDPOINT");
  env.InertInt<int64_t>({"AIBRIX_PROMETHEUS_QUERY_TIMEOUT_MS"},
                        "no effect without PROMETHEUS_ENDPOINT");
}

// AIBrix's Redis connection and the features that use it (docs/redis.md).
void ReadRedis(EnvReader& env, ServiceConfig& config) {
  std::string host;
  env.String({"REDIS_HOST"}, &host);
  int port = 6379;
  env.PositiveInt({"REDIS_PORT"}, &port, 65535);
  if (!host.empty()) {
    config.redis_addr = host.starts_with("unix:")
                            ? host
                            : common::FormatHostPort(host, static_cast<uint16_t>(port));
  }
  env.String({"REDIS_PASSWORD"}, &config.redis_password);
  env.Bool({"AIBRIX_GPU_OPTIMIZER_TRACING_FLAG"}, &config.gpu_optimizer_tracing);
  // The seed spells it with a lower-case "Model"; the reference reads the upper-case name.
  env.Bool({"AIBRIX_MODEL_GPU_PROFILE_CACHING_FLAG", "AIBRIX_Model_GPU_PROFILE_CACHING_FLAG"},
           &config.gpu_profile_caching);
}

// Envoy ext_proc (docs/extproc.md). AIBrix's code reads ROUTING_ALGORITHM, its documentation
// names AIBRIX_ROUTING_ALGORITHM: both spellings are read.
void ReadExtProc(EnvReader& env, ServiceConfig& config) {
  env.String({"ROUTING_ALGORITHM", "AIBRIX_ROUTING_ALGORITHM"}, &config.extproc_default_strategy);
  env.String({"AIBRIX_AUTH_BEARER_TOKEN"}, &config.auth_bearer_token);
  env.PositiveInt({"AIBRIX_GRPC_MAX_MESSAGE_SIZE_BYTES"}, &config.grpc_max_message_bytes);
}

void ReadVtc(EnvReader& env, ServiceConfig& config) {
  env.Number({"AIBRIX_ROUTER_VTC_BASIC_FAIRNESS_WEIGHT"}, &config.vtc_fairness_weight, true);
  env.Number({"AIBRIX_ROUTER_VTC_BASIC_UTILIZATION_WEIGHT"}, &config.vtc_utilization_weight, true);
  env.Number({"AIBRIX_ROUTER_VTC_BASIC_MAX_POD_LOAD"}, &config.vtc_max_pod_load, false);
  env.Number({"AIBRIX_ROUTER_VTC_BASIC_INPUT_TOKEN_WEIGHT"}, &config.vtc_input_token_weight, true);
  env.Number({"AIBRIX_ROUTER_VTC_BASIC_OUTPUT_TOKEN_WEIGHT"}, &config.vtc_output_token_weight,
             true);
  env.PositiveInt({"AIBRIX_ROUTER_VTC_TOKEN_TRACKER_WINDOW_MINUTES"}, &config.vtc_window_minutes,
                  24 * 60);
  env.Number({"AIBRIX_ROUTER_KV_AWARE_LOAD_WEIGHT"}, &config.kv_aware_load_weight, true);
  env.Number({"AIBRIX_ROUTER_KV_AWARE_QUEUE_WEIGHT"}, &config.kv_aware_queue_weight, true);
}

}  // namespace

std::string ServiceConfig::EffectiveTokenizer() const {
  if (!tokenizer.empty()) return tokenizer;
  return kv_event_sync ? "remote" : "local";
}

absl::StatusOr<ServiceConfig> ServiceConfig::FromEnvironment() {
  ServiceConfig config;
  EnvReader env;
  env.String({"AIBRIX_POD_DEPLOYMENT_LABEL"}, &config.pod_deployment_label);
  env.String({"AIBRIX_POD_RAYCLUSTERFLEET_LABEL"}, &config.pod_fleet_label);
  ReadMetrics(env, config);
  ReadPrefixCache(env, config);
  ReadKvEvents(env, config);
  ReadTokenizer(env, config);
  ReadVtc(env, config);
  ReadRedis(env, config);
  ReadExtProc(env, config);
  config.gateway_id = redis::DefaultGatewayId();
  if (absl::Status st = env.status(); !st.ok()) return st;
  config.env_notes = env.TakeNotes();
  return config;
}

}  // namespace aibrix::server
