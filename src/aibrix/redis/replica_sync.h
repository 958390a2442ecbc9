// aibrix::redis::ReplicaSync — shares running-request counts between gateway replicas through
// Redis (spec §3.5), so that every replica's routers see the load the others put on a pod.
//
// Every 100 ms, on its own thread:
//  1. publish, in one pipeline, for each pod this replica has requests on (and once more after
//     its count drops to 0): HSET aibrix:pod:<gateway>:<namespace>:<pod> with the fields
//     gateway_instance_id, pod_uid, pod_name, namespace, node_name, requests_running,
//     seq (completed requests), update_time (HH:MM:SS.mmm UTC), then PEXPIRE 500 ms, so a
//     replica that dies leaves no count behind; and ZADD the key to the index
//     aibrix:pod_index with its expiry (wall ms) as score;
//  2. read the live keys from the index (ZREMRANGEBYSCORE the expired, ZRANGEBYSCORE the
//     rest) and HGETALL the other gateways' keys in pipelines of 100;
//  3. per pod, sum requests_running over the entries of other gateways (this replica's own
//     are excluded) and store it as PodState::remote_running(), which routers add to the
//     local count (PodState::total_running()).
//
// The reference found the keys with SCAN aibrix:pod:* every round, which walks the whole
// keyspace (request traces, profiles, ...) ten times a second per replica: 13 ms a round with
// 2,500 other keys, 32 ms with 20,000 (redis-bench). The index makes a round cost what is
// live. Keys of replicas that keep no index (the reference gateway sharing the Redis) are
// still found, by a SCAN every scan_every rounds (1 s), and read every round until they
// expire. Index scores are wall-clock times: replicas' clocks must agree to well within the
// key TTL (NTP does); the keys' own PEXPIRE stays the truth.
//
// A pod with no local requests is not published (an absent key reads as 0), which keeps the
// traffic to the pods actually in use. Entries that do not parse (missing fields, a count
// that is not an integer in [0, 1e6]) are skipped and counted as aibrix_redis_errors_total
// {feature="replica", reason="garbage"}. When rounds fail (Redis down or slow), the remote
// counts are kept for `stale_after` (1 s), then reset to 0 and the replica routes on its local
// counts alone until Redis answers again.
//
// Thread safety: Start/Stop from one owner thread; SyncOnce runs on the sync thread (or a
// test's, without Start). Remote counts are atomics read by the routers.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "aibrix/common/clock.h"
#include "aibrix/redis/connection.h"
#include "aibrix/redis/feature_metrics.h"
#include "aibrix/redis/periodic.h"
#include "aibrix/store/store.h"

namespace aibrix::redis {

inline constexpr char kReplicaKeyPrefix[] = "aibrix:pod:";
inline constexpr char kReplicaIndexKey[] = "aibrix:pod_index";

// One replica's report for one pod, as read back from Redis.
struct ReplicaEntry {
  std::string gateway;
  std::string ns;
  std::string pod;
  int32_t requests_running = 0;
};

// Parses an HGETALL reply (an array of field, value strings). Errors (InvalidArgument): not
// such an array, a missing or empty gateway_instance_id / namespace / pod_name, a
// requests_running that is not an integer in [0, 1000000].
absl::StatusOr<ReplicaEntry> ParseReplicaEntry(const Reply& hgetall);

// The gateway id of this process: $POD_NAME, else the host name, else "unknown-gateway".
std::string DefaultGatewayId();

struct ReplicaSyncOptions {
  ConnectionOptions connection;
  std::string gateway_id;  // must be unique per replica
  std::chrono::milliseconds period{100};
  std::chrono::milliseconds key_ttl{500};
  std::chrono::milliseconds stale_after{1000};
  size_t max_keys = 100000;
  size_t batch = 100;
  // A SCAN for keys outside the index every this many rounds (the first round scans).
  int scan_every = 10;
  // connection.clock also gives the monotonic time of staleness and the wall time of
  // update_time.
};

class ReplicaSync {
 public:
  // `store` and `registry` are borrowed and must outlive the sync.
  ReplicaSync(store::Store& store, ReplicaSyncOptions options, prometheus::Registry& registry);
  ~ReplicaSync() { Stop(); }
  ReplicaSync(const ReplicaSync&) = delete;
  ReplicaSync& operator=(const ReplicaSync&) = delete;

  void Start();
  void Stop();

  // One round (publish, read, apply). Errors: the Redis failure that stopped it.
  absl::Status SyncOnce();

  // "aibrix:pod:<gateway>:<namespace>:<pod>".
  static std::string Key(std::string_view gateway, std::string_view ns, std::string_view pod);

  const FeatureMetrics& metrics() const { return metrics_; }

 private:
  absl::Status Publish(const store::Snapshot& snapshot);
  // The other gateways' keys: the index's live members and the keys SCAN found outside it.
  absl::StatusOr<std::vector<std::string>> LiveKeys();
  absl::StatusOr<absl::flat_hash_map<std::string, int32_t>> ReadRemote();
  // Sets every pod's remote count from `remote` (pod key → count; absent → 0).
  void Apply(const store::Snapshot& snapshot,
             const absl::flat_hash_map<std::string, int32_t>& remote);

  // Constant after construction.
  store::Store& store_;
  const ReplicaSyncOptions options_;

  // Used by the sync thread only.
  Connection connection_;
  FeatureMetrics metrics_;
  prometheus::Gauge& gateways_;
  // Pods published non-zero last round (published once more at 0).
  absl::flat_hash_map<std::string, int32_t> published_;
  // Keys of other gateways found by SCAN and absent from the index.
  absl::flat_hash_set<std::string> foreign_;
  uint64_t rounds_ = 0;
  std::chrono::steady_clock::time_point last_success_;
  bool remote_is_stale_ = false;
  PeriodicThread thread_;
};

}  // namespace aibrix::redis
