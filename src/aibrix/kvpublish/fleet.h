// Fleet: one object (one thread) that plays N vLLM engines for tests and benchmarks, so a
// 1,000-pod KV event test runs on a small machine.
//
// Each engine has its own loopback address (127.0.1.1, 127.0.1.2, ...: Linux routes all of
// 127/8 to lo; host bytes .0 and .255 are skipped) with a PUB socket and a ROUTER replay
// socket on the same ports as every other engine (default 5557 / 5558, vLLM's), or on
// ephemeral ports (port 0) reported by engines(). Framing and replay are exactly
// kvpublish::Publisher's (wire.h). The service finds the engines through the static discovery
// file that WriteDiscoveryFile writes (one model, kv_events: true, the ports).
//
// Workload: EngineWorkload (workload.h) per engine, at an aggregate rate of stored blocks per
// second spread round-robin over the engines (0: as fast as the thread can encode and send).
// Faults on chosen engines (FaultKind); gap/restart/malformed/garbage recur every
// `every_batches` batches of that engine; huge messages run until a byte budget is spent;
// hostile streams until cleared.
//
// Resources: 2N ZMQ sockets in one context whose ZMQ_MAX_SOCKETS is raised to fit, and about
// 6N file descriptors (Start raises the soft RLIMIT_NOFILE up to the hard limit; it fails
// with FailedPrecondition naming the numbers when that is not enough).
//
// Thread safety: every public method may be called from any thread. One fleet thread owns
// every socket and every engine's state; runtime changes (rate, faults) reach it through
// atomics and a command list guarded by mu_.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "aibrix/kvpublish/encoder.h"
#include "aibrix/kvpublish/wire.h"
#include "aibrix/kvpublish/workload.h"

namespace aibrix::kvpublish {

enum class FaultKind {
  kGap,        // a batch gets its sequence number and enters the replay buffer but is not sent
  kRestart,    // sequence back to 0, replay buffer emptied, cache emptied, new hashes
  kMalformed,  // an extra message with a broken frame layout (2 or 4 frames, 4-byte seq)
  kGarbage,    // an extra payload of random non-msgpack bytes, with a sequence number
  kHuge,       // BlockRemoved messages of huge_message_bytes, 1 byte per hash (fixints)
  kHostile,    // a chain of hostile_chain_blocks, then batches of (remove head, re-store it)
};

struct Fault {
  FaultKind kind = FaultKind::kGap;
  int engine = 0;
};

// "gap", "restart", "malformed", "garbage", "huge", "hostile".
std::string_view FaultKindName(FaultKind kind);
// "KIND:ENGINE_INDEX", e.g. "gap:3". InvalidArgument otherwise.
absl::StatusOr<Fault> ParseFault(std::string_view spec);

struct FaultOptions {
  int every_batches = 20;  // gap, restart, malformed, garbage: once per this many batches
  size_t huge_message_bytes = 60'000'000;
  uint64_t huge_total_bytes = uint64_t{1} << 30;  // the huge fault ends after this much
  int64_t hostile_chain_blocks = 1'000'000;
  int hostile_blocks_per_event = 256;  // while building the chain (4 events per batch)
  int hostile_pairs_per_batch = 16;
  double hostile_batches_per_s = 0;  // pairs batches per second; 0: as fast as possible
};

struct FleetOptions {
  int engines = 10;
  std::string first_address = "127.0.1.1";
  int pub_port = 5557;     // 0: an ephemeral port per engine
  int replay_port = 5558;  // 0: an ephemeral port per engine
  std::string model = "fleet-model";
  int serving_port = 8000;  // written to the discovery file; nothing listens there
  std::string topic;
  double blocks_per_s = 10000;  // aggregate stored blocks per second; <= 0: unlimited
  // Batches an engine publishes back to back on its turn (an engine catching up after a
  // busy step). libzmq looks for commands on a socket once per burst rather than once per
  // message, so bursts make a large fleet cheaper to drive on both ends.
  int batches_per_turn = 1;
  WorkloadOptions workload;  // workload.seed is the fleet's seed
  WireFormat format = WireFormat::kMap;
  ReplyLayout reply_layout = ReplyLayout::kPost45177;
  size_t buffer_steps = 1000;      // replay buffer per engine, in batches (vLLM: 10000)
  size_t buffer_bytes = 8u << 20;  // and in bytes (the newest batch is always kept)
  int hwm = 100000;                // PUB send high-water mark (vLLM's default)
  int io_threads = 1;              // libzmq I/O threads
  std::vector<Fault> faults;       // active from the start
  FaultOptions fault;
};

struct EngineInfo {
  std::string address;  // 127.x.y.z
  int pub_port = 0;
  int replay_port = 0;
  std::string endpoint() const;         // tcp://address:pub_port
  std::string replay_endpoint() const;  // tcp://address:replay_port
};

struct FleetStats {
  uint64_t batches = 0;  // sequence numbers assigned (all engines, all kinds)
  uint64_t blocks_stored = 0;
  uint64_t blocks_removed = 0;
  uint64_t clears = 0;
  uint64_t payload_bytes = 0;
  uint64_t gaps = 0;  // batches not sent (FaultKind::kGap)
  uint64_t restarts = 0;
  uint64_t malformed = 0;
  uint64_t garbage = 0;
  uint64_t huge_messages = 0;
  uint64_t huge_bytes = 0;
  uint64_t hostile_chain_blocks = 0;  // chain blocks published so far
  uint64_t hostile_pairs = 0;
  uint64_t replay_requests = 0;
  uint64_t replayed_batches = 0;
  uint64_t errors = 0;  // ZMQ errors in the fleet thread (logged, rate limited)
};

// Raises the soft RLIMIT_NOFILE to at least `needed` (up to the hard limit). OK when it is
// already enough; FailedPrecondition naming both numbers when the hard limit is lower.
absl::Status EnsureFdLimit(uint64_t needed);

class Fleet {
 public:
  explicit Fleet(FleetOptions options);
  ~Fleet();  // Stop()s
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  // Raises the limits, binds every engine's sockets and starts the thread. Errors:
  // InvalidArgument (options, fault engine out of range), FailedPrecondition (fd or socket
  // limit, already started), Unavailable (an endpoint cannot be bound; named).
  absl::Status Start();
  // Stops the thread, closes every socket (linger 0). Idempotent.
  void Stop();

  const FleetOptions& options() const { return options_; }
  // One entry per engine with the bound ports. Valid after Start returned OK.
  const std::vector<EngineInfo>& engines() const { return engines_; }
  // The static discovery YAML (src/aibrix/discovery/static_config.h) of the engines.
  std::string DiscoveryYaml() const;
  absl::Status WriteDiscoveryFile(const std::string& path) const;

  // Changes the aggregate rate (stored blocks per second; <= 0: unlimited).
  void SetRate(double blocks_per_s) { rate_.store(blocks_per_s); }
  // Starts a fault on an engine (a huge fault starts a new byte budget). InvalidArgument for
  // an engine out of range.
  absl::Status AddFault(Fault fault);
  // Ends every fault of `engine`.
  void ClearFaults(int engine);

  FleetStats stats() const;
  // The engine's next sequence number (what its next batch gets).
  uint64_t next_seq(int engine) const;

 private:
  struct Engine;
  struct Command {
    enum class Kind { kAdd, kClear } kind;
    Fault fault;
  };

  void Run();
  void ApplyCommands();
  // One normal batch on `e`, with its periodic faults. Returns the blocks it stored.
  uint64_t PublishNormal(Engine& e);
  void Emit(Engine& e, Payload payload, bool send = true);
  void HugeStep(Engine& e);
  void HostileStep(Engine& e, std::chrono::steady_clock::time_point now);
  void ServeReplays(std::chrono::milliseconds timeout);

  // Constant after construction.
  const FleetOptions options_;

  std::atomic<double> rate_;
  std::atomic<bool> stop_{false};

  // Guarded by mu_.
  mutable std::mutex mu_;
  std::vector<Command> commands_;
  bool started_ = false;
  bool stopped_ = false;

  // Written by Start before the thread starts, constant afterwards.
  std::vector<EngineInfo> engines_;

  // Owned by the fleet thread after Start (created by Start before it runs).
  struct Sockets;
  std::unique_ptr<Sockets> sockets_;
  std::vector<std::unique_ptr<Engine>> state_;
  Payload huge_payload_;

  // Written by the fleet thread, read by anyone.
  struct Counters;
  std::unique_ptr<Counters> counters_;
  std::unique_ptr<std::atomic<uint64_t>[]> next_seq_;

  std::thread thread_;
};

}  // namespace aibrix::kvpublish
