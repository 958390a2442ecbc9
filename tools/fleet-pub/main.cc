// fleet-pub: plays N vLLM engines (PUB + ROUTER replay each, on 127.0.1.1, 127.0.1.2, ...)
// from one thread, writes the static discovery file a service loads, runs for --seconds (or
// until SIGINT/SIGTERM) and prints a summary. See docs/kvevents.md "Fleet".
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "aibrix/common/logging.h"
#include "aibrix/kvpublish/fleet.h"

namespace {

volatile std::sig_atomic_t g_signal = 0;
void OnSignal(int signal) { g_signal = signal; }

}  // namespace

int main(int argc, char** argv) {
  using aibrix::kvpublish::Fleet;
  using aibrix::kvpublish::FleetOptions;
  FleetOptions options;
  double seconds = 0;
  std::string config_out = "fleet.yaml";
  std::vector<std::string> faults;
  std::string format = "map";
  std::string log_level = "warn";
  CLI::App app("fleet-pub: N simulated vLLM engines' KV event streams from one process");
  app.add_option("--engines", options.engines, "Number of engines")->check(CLI::Range(1, 30000));
  app.add_option("--rate", options.blocks_per_s,
                 "Aggregate stored blocks per second over all engines (0: as fast as possible)");
  app.add_option("--batches-per-turn", options.batches_per_turn,
                 "Batches an engine publishes back to back on its turn")
      ->check(CLI::Range(1, 1024));
  app.add_option("--seconds", seconds, "Run time (0: until SIGINT/SIGTERM)");
  app.add_option("--config-out", config_out, "Static discovery YAML to write");
  app.add_option("--fault", faults,
                 "KIND:ENGINE_INDEX, KIND one of gap, restart, malformed, garbage, huge, hostile "
                 "(repeatable)");
  app.add_option("--seed", options.workload.seed, "Workload seed");
  app.add_option("--first-address", options.first_address, "Address of engine 0 (in 127/8)");
  app.add_option("--port", options.pub_port, "PUB port of every engine (0: ephemeral)");
  app.add_option("--replay-port", options.replay_port,
                 "ROUTER replay port of every engine (0: ephemeral)");
  app.add_option("--model", options.model, "Model name in the discovery file");
  app.add_option("--format", format, "Wire era (0.9.0, 0.9.1, medium, ..., map)");
  app.add_option("--buffer-steps", options.buffer_steps, "Replay buffer per engine, in batches");
  app.add_option("--fault-every", options.fault.every_batches,
                 "gap/restart/malformed/garbage: once per this many batches of the engine");
  app.add_option("--huge-bytes", options.fault.huge_message_bytes, "Size of one huge message");
  app.add_option("--huge-total-bytes", options.fault.huge_total_bytes,
                 "Bytes of huge messages per huge fault");
  app.add_option("--hostile-chain", options.fault.hostile_chain_blocks,
                 "Blocks of the hostile engine's chain");
  app.add_option("--hostile-pairs", options.fault.hostile_pairs_per_batch,
                 "(remove head, re-store head) pairs per hostile batch");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off");
  CLI11_PARSE(app, argc, argv);

  aibrix::common::SetLogLevel(log_level);
  auto wire = aibrix::kvpublish::ParseWireFormat(format);
  if (!wire.ok()) {
    std::fprintf(stderr, "fleet-pub: %s\n", std::string(wire.status().message()).c_str());
    return 2;
  }
  options.format = *wire;
  for (const auto& spec : faults) {
    auto fault = aibrix::kvpublish::ParseFault(spec);
    if (!fault.ok()) {
      std::fprintf(stderr, "fleet-pub: %s\n", std::string(fault.status().message()).c_str());
      return 2;
    }
    options.faults.push_back(*fault);
  }
  Fleet fleet(options);
  if (auto st = fleet.Start(); !st.ok()) {
    std::fprintf(stderr, "fleet-pub: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  if (auto st = fleet.WriteDiscoveryFile(config_out); !st.ok()) {
    std::fprintf(stderr, "fleet-pub: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::printf("fleet-pub ready engines=%d config=%s\n", options.engines, config_out.c_str());
  std::fflush(stdout);
  const auto start = std::chrono::steady_clock::now();
  while (g_signal == 0 && (seconds <= 0 || std::chrono::steady_clock::now() - start <
                                               std::chrono::duration<double>(seconds))) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fleet.Stop();
  const auto s = fleet.stats();
  std::printf(
      "fleet-pub summary engines=%d seconds=%.1f batches=%llu blocks_stored=%llu "
      "blocks_removed=%llu clears=%llu blocks_per_s=%.0f payload_mb=%.1f gaps=%llu "
      "restarts=%llu malformed=%llu garbage=%llu huge_messages=%llu hostile_chain_blocks=%llu "
      "hostile_pairs=%llu replay_requests=%llu replayed_batches=%llu errors=%llu\n",
      options.engines, elapsed, static_cast<unsigned long long>(s.batches),
      static_cast<unsigned long long>(s.blocks_stored),
      static_cast<unsigned long long>(s.blocks_removed), static_cast<unsigned long long>(s.clears),
      elapsed > 0 ? static_cast<double>(s.blocks_stored) / elapsed : 0.0,
      static_cast<double>(s.payload_bytes) / 1e6, static_cast<unsigned long long>(s.gaps),
      static_cast<unsigned long long>(s.restarts), static_cast<unsigned long long>(s.malformed),
      static_cast<unsigned long long>(s.garbage), static_cast<unsigned long long>(s.huge_messages),
      static_cast<unsigned long long>(s.hostile_chain_blocks),
      static_cast<unsigned long long>(s.hostile_pairs),
      static_cast<unsigned long long>(s.replay_requests),
      static_cast<unsigned long long>(s.replayed_batches),
      static_cast<unsigned long long>(s.errors));
  return 0;
}
