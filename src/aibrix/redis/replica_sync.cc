#include "aibrix/redis/replica_sync.h"

#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "aibrix/common/env.h"
#include "aibrix/common/status_macros.h"
#include "aibrix/common/strings.h"
#include "fmt/format.h"

namespace aibrix::redis {
namespace {

constexpr int32_t kMaxRunning = 1'000'000;
// The index outlives its members; each publishing round renews it.
constexpr std::chrono::milliseconds kIndexTtl{60'000};

int64_t WallMs(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// HH:MM:SS.mmm (UTC) of a wall time.
std::string UpdateTime(std::chrono::system_clock::time_point t) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch());
  const std::time_t seconds = static_cast<std::time_t>(ms.count() / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  return fmt::format("{:02}:{:02}:{:02}.{:03}", tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ms.count() % 1000);
}

}  // namespace

absl::StatusOr<ReplicaEntry> ParseReplicaEntry(const Reply& hgetall) {
  if (!hgetall.is_array() || hgetall.elements.size() % 2 != 0) {
    return absl::InvalidArgumentError("not a field/value array");
  }
  ReplicaEntry entry;
  std::string_view running;
  bool has_running = false;
  for (size_t i = 0; i < hgetall.elements.size(); i += 2) {
    const Reply& field = hgetall.elements[i];
    const Reply& value = hgetall.elements[i + 1];
    if (!field.is_string() || !value.is_string()) {
      return absl::InvalidArgumentError("a field or value is not a string");
    }
    if (field.str == "gateway_instance_id") {
      entry.gateway = value.str;
    } else if (field.str == "namespace") {
      entry.ns = value.str;
    } else if (field.str == "pod_name") {
      entry.pod = value.str;
    } else if (field.str == "requests_running") {
      running = value.str;
      has_running = true;
    }
  }
  if (entry.gateway.empty()) return absl::InvalidArgumentError("no gateway_instance_id");
  if (entry.ns.empty()) return absl::InvalidArgumentError("no namespace");
  if (entry.pod.empty()) return absl::InvalidArgumentError("no pod_name");
  int64_t n = 0;
  if (!has_running || !absl::SimpleAtoi(common::AsAbsl(running), &n) || n < 0 || n > kMaxRunning) {
    return absl::InvalidArgumentError(fmt::format(
        "requests_running '{}' is not an integer in [0, {}]", running.substr(0, 32), kMaxRunning));
  }
  entry.requests_running = static_cast<int32_t>(n);
  return entry;
}

std::string DefaultGatewayId() {
  if (auto pod = common::EnvString("POD_NAME")) return *pod;
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0') return host;
  return "unknown-gateway";
}

std::string ReplicaSync::Key(std::string_view gateway, std::string_view ns, std::string_view pod) {
  return fmt::format("{}{}:{}:{}", kReplicaKeyPrefix, gateway, ns, pod);
}

ReplicaSync::ReplicaSync(store::Store& store, ReplicaSyncOptions options,
                         prometheus::Registry& registry)
    : store_(store),
      options_(std::move(options)),
      connection_(options_.connection),
      metrics_(registry, "replica"),
      gateways_(prometheus::BuildGauge()
                    .Name("aibrix_redis_replica_gateways")
                    .Help("Other gateway replicas whose running counts the last sync read")
                    .Register(registry)
                    .Add({})),
      last_success_(options_.connection.clock->Now()),
      thread_([this] { return std::chrono::nanoseconds(options_.period); },
              [this] { (void)SyncOnce(); }) {}

void ReplicaSync::Start() { thread_.Start(); }
void ReplicaSync::Stop() { thread_.Stop(); }

absl::Status ReplicaSync::Publish(const store::Snapshot& snapshot) {
  const std::string ttl = std::to_string(options_.key_ttl.count());
  const auto wall = options_.connection.clock->WallNow();
  const std::string now = UpdateTime(wall);
  const std::string expires = std::to_string(WallMs(wall + options_.key_ttl));
  std::vector<Args> commands;
  absl::flat_hash_map<std::string, int32_t> published;
  snapshot.pods.ForEach([&](const store::PodRef& pod) {
    const std::string& key = pod->key;
    const int32_t running = pod->state->running();
    if (running == 0 && !published_.contains(key)) return;
    const std::string redis_key = Key(options_.gateway_id, pod->ns(), pod->name());
    commands.push_back(Args{"HSET", redis_key, "gateway_instance_id", options_.gateway_id,
                            "pod_uid", pod->object.uid, "pod_name", pod->name(), "namespace",
                            pod->ns(), "node_name", pod->object.node_name, "requests_running",
                            std::to_string(running), "seq", std::to_string(pod->state->completed()),
                            "update_time", now});
    commands.push_back(Args{"PEXPIRE", redis_key, ttl});
    commands.push_back(Args{"ZADD", kReplicaIndexKey, expires, redis_key});
    if (running != 0) published.emplace(key, running);
  });
  if (commands.empty()) {
    published_.clear();
    return absl::OkStatus();
  }
  // The index goes too when every replica is gone.
  commands.push_back(Args{"PEXPIRE", kReplicaIndexKey, std::to_string(kIndexTtl.count())});
  ASSIGN_OR_RETURN(std::vector<Reply> replies, connection_.Pipeline(commands));
  for (size_t i = 0; i < replies.size(); ++i) {
    if (replies[i].is_error()) {
      return absl::FailedPreconditionError(
          fmt::format("{} {}: {}", commands[i][0], commands[i][1], replies[i].str));
    }
  }
  published_ = std::move(published);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ReplicaSync::LiveKeys() {
  // The index: drop expired members, read the live ones.
  const std::string now = std::to_string(WallMs(options_.connection.clock->WallNow()));
  const std::vector<Args> index_commands = {
      {"ZREMRANGEBYSCORE", kReplicaIndexKey, "-inf", "(" + now},
      {"ZRANGEBYSCORE", kReplicaIndexKey, now, "+inf", "LIMIT", "0",
       std::to_string(options_.max_keys)}};
  ASSIGN_OR_RETURN(std::vector<Reply> index, connection_.Pipeline(index_commands));
  if (!index[1].is_array()) {
    return absl::FailedPreconditionError(
        fmt::format("ZRANGEBYSCORE {}: {}", kReplicaIndexKey,
                    index[1].is_error() ? index[1].str : "not an array"));
  }
  const std::string own = kReplicaKeyPrefix + options_.gateway_id + ":";
  absl::flat_hash_set<std::string> keys;
  for (const Reply& member : index[1].elements) {
    if (member.is_string() && !member.str.starts_with(own)) keys.insert(member.str);
  }
  // Keys written by replicas that keep no index (the reference gateway): found by a SCAN of
  // the whole keyspace every scan_every rounds, then read every round while they exist.
  if (rounds_++ % static_cast<uint64_t>(std::max(options_.scan_every, 1)) == 0) {
    ASSIGN_OR_RETURN(
        std::vector<std::string> scanned,
        connection_.Scan(std::string(kReplicaKeyPrefix) + "*", 1000, options_.max_keys));
    foreign_.clear();
    for (std::string& key : scanned) {
      if (!key.starts_with(own) && !keys.contains(key)) foreign_.insert(std::move(key));
    }
  }
  keys.insert(foreign_.begin(), foreign_.end());
  return std::vector<std::string>(keys.begin(), keys.end());
}

absl::StatusOr<absl::flat_hash_map<std::string, int32_t>> ReplicaSync::ReadRemote() {
  ASSIGN_OR_RETURN(std::vector<std::string> keys, LiveKeys());
  absl::flat_hash_map<std::string, int32_t> remote;
  absl::flat_hash_set<std::string> gateways;
  for (size_t begin = 0; begin < keys.size(); begin += options_.batch) {
    const size_t end = std::min(keys.size(), begin + options_.batch);
    std::vector<Args> reads;
    reads.reserve(end - begin);
    for (size_t i = begin; i < end; ++i) reads.push_back(Args{"HGETALL", keys[i]});
    ASSIGN_OR_RETURN(std::vector<Reply> replies, connection_.Pipeline(reads));
    for (size_t i = 0; i < replies.size(); ++i) {
      if (replies[i].is_array() && replies[i].elements.empty()) {  // expired
        foreign_.erase(keys[begin + i]);
        continue;
      }
      auto entry = ParseReplicaEntry(replies[i]);
      if (!entry.ok()) {
        metrics_.Error("garbage", fmt::format("{}: {}", keys[begin + i],
                                              common::AsStd(entry.status().message())));
        continue;
      }
      if (entry->gateway == options_.gateway_id) continue;
      gateways.insert(entry->gateway);
      int32_t& sum = remote[entry->ns + "/" + entry->pod];
      sum = std::min(kMaxRunning, sum + entry->requests_running);
    }
  }
  gateways_.Set(static_cast<double>(gateways.size()));
  return remote;
}

void ReplicaSync::Apply(const store::Snapshot& snapshot,
                        const absl::flat_hash_map<std::string, int32_t>& remote) {
  snapshot.pods.ForEach([&](const store::PodRef& pod) {
    auto it = remote.find(pod->key);
    pod->state->set_remote_running(it == remote.end() ? 0 : it->second);
  });
}

absl::Status ReplicaSync::SyncOnce() {
  const store::SnapshotRef snapshot = store_.snapshot();
  absl::Status status = Publish(*snapshot);
  absl::StatusOr<absl::flat_hash_map<std::string, int32_t>> remote;
  if (status.ok()) {
    remote = ReadRemote();
    status = remote.status();
  }
  if (status.ok()) {
    Apply(*snapshot, *remote);
    last_success_ = options_.connection.clock->Now();
    if (remote_is_stale_) {
      remote_is_stale_ = false;
      common::Logger("redis")->info("replica: remote running counts are fresh again");
    }
    metrics_.Round(true, connection_);
    return absl::OkStatus();
  }
  metrics_.Error(status);
  if (!remote_is_stale_ &&
      options_.connection.clock->Now() - last_success_ > options_.stale_after) {
    // Old counts would steer routing by load that may be long gone: route on local counts.
    remote_is_stale_ = true;
    Apply(*snapshot, {});
    gateways_.Set(0);
    common::Logger("redis")->warn(
        "replica: no sync for more than {} ms; remote running counts reset to 0 until Redis "
        "answers",
        options_.stale_after.count());
  }
  metrics_.Round(false, connection_);
  return status;
}

}  // namespace aibrix::redis
