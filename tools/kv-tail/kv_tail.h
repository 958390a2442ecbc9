// `kv-tail` (build/bin/kv-tail): an operator's view of one engine's KV event stream.
//
//   kv-tail --endpoint tcp://HOST:5557 [--replay-endpoint tcp://HOST:5558] [--from-seq N]
//           [--topic PREFIX] [--count N]
//     prints one JSON line per message: {"seq":…, "topic":…, "ts":…, "events":[…],
//     "data_parallel_rank":…} (replayed batches carry "replayed":true; with --from-seq the
//     replay is requested first), {"error":…} lines for malformed messages.
//   kv-tail --decode-hex
//     reads one hex payload per line on stdin and prints one JSON line per payload;
//     a bad payload prints {"error":"…"} and the tool goes on.
// Hashes are printed as unsigned 64-bit integers.
//
// Thread safety: RunKvTail runs on the calling thread; nothing is shared.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>

#include "aibrix/kv/events.h"
#include "nlohmann/json.hpp"

namespace aibrix::kvtail {

struct KvTailOptions {
  std::string endpoint;
  std::string replay_endpoint;
  std::optional<uint64_t> from_seq;
  std::string topic;
  uint64_t count = 0;  // stop after this many messages (0: run until killed)
  bool decode_hex = false;
  int replay_timeout_ms = 5000;
};

// The JSON form of a decoded batch (the shape kv-tail prints).
nlohmann::json BatchToJson(const kv::EventBatch& batch);

// Runs the tool; returns the process exit code (0 ok, 1 usage or socket error, 2 when
// --decode-hex saw at least one bad payload).
int RunKvTail(const KvTailOptions& options, std::istream& in, std::ostream& out);

}  // namespace aibrix::kvtail
