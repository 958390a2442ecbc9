// engine-sim: a vLLM-compatible engine simulator. Thin main: parse flags, build the engine,
// the KV event publisher and the HTTP server, print where they listen, serve until SIGINT
// or SIGTERM. See docs/engine-sim.md.
#include <malloc.h>
#include <signal.h>

#include <charconv>
#include <cstdio>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "aibrix/common/logging.h"
#include "aibrix/common/strings.h"
#include "aibrix/kvpublish/encoder.h"
#include "aibrix/kvpublish/publisher.h"
#include "engine.h"
#include "event_output.h"
#include "fmt/format.h"
#include "http_server.h"
#include "nlohmann/json.hpp"

namespace {

using namespace aibrix;  // NOLINT: main only

// vLLM's data-parallel endpoint rule (protocols §1.1): tcp ports get + rank, ipc/inproc
// endpoints get a "_dp<rank>" suffix.
std::string OffsetEndpoint(const std::string& endpoint, int rank) {
  if (rank == 0 || endpoint.empty()) return endpoint;
  if (endpoint.starts_with("tcp://")) {
    const size_t colon = endpoint.rfind(':');
    int port = 0;
    if (colon != std::string::npos &&
        std::from_chars(endpoint.data() + colon + 1, endpoint.data() + endpoint.size(), port).ec ==
            std::errc() &&
        port > 0) {
      return fmt::format("{}:{}", endpoint.substr(0, colon), port + rank);
    }
    return endpoint;
  }
  return fmt::format("{}_dp{}", endpoint, rank);
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "engine-sim: %s\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // Many engine-sims share one small machine: keep per-thread malloc arenas few.
  mallopt(M_ARENA_MAX, 2);
  // A client that hangs up mid-response must not kill the process.
  signal(SIGPIPE, SIG_IGN);

  enginesim::EngineOptions eo;
  enginesim::HttpOptions ho;
  kvpublish::PublisherOptions po;
  po.endpoint.clear();
  std::string kv_events_config;
  std::string event_format = "map";
  std::string reply_format = "new";
  std::string block_hash = "int";
  std::string log_level = "info";
  int buffer_steps = 10000;

  CLI::App app{"engine-sim: a vLLM-compatible engine simulator (docs/engine-sim.md)"};
  app.add_option("--host", ho.host, "HTTP listen address")->capture_default_str();
  app.add_option("--port", ho.port, "HTTP port (0 = any free port, printed)")
      ->capture_default_str();
  app.add_option("--model,--served-model-name", eo.model, "served model name")
      ->capture_default_str();
  app.add_option("--lora-modules", eo.lora_modules,
                 "served LoRA adapters, `name` or `name=path` (vLLM's syntax), repeatable");
  app.add_option("--block-size", eo.block_size, "tokens per KV block")->capture_default_str();
  app.add_option("--num-gpu-blocks", eo.num_gpu_blocks, "KV cache capacity in blocks")
      ->capture_default_str();
  app.add_option("--max-num-seqs", eo.max_num_seqs, "max running requests")->capture_default_str();
  app.add_option("--max-num-batched-tokens", eo.max_num_batched_tokens,
                 "token budget per scheduler step (chunked prefill)")
      ->capture_default_str();
  app.add_option("--long-prefill-token-threshold", eo.long_prefill_token_threshold,
                 "most tokens of one prefill chunk per step (0 = up to the step budget)")
      ->capture_default_str();
  app.add_option("--max-model-len", eo.max_model_len, "max prompt + output tokens")
      ->capture_default_str();
  app.add_option("--prefill-tokens-per-s", eo.prefill_tokens_per_s,
                 "prefill speed for uncached prompt tokens (simulated time)")
      ->capture_default_str();
  app.add_option("--decode-step-ms", eo.decode_step_ms, "decode step time at batch size 1")
      ->capture_default_str();
  app.add_option("--decode-step-ms-per-seq", eo.decode_step_ms_per_seq,
                 "extra decode step time per decoding request")
      ->capture_default_str();
  app.add_option("--time-scale", eo.time_scale,
                 "simulated seconds per real second (1000 = 1000x faster)")
      ->capture_default_str();
  app.add_option("--seed", eo.seed, "seed of block hashes and generated text")
      ->capture_default_str();
  app.add_option("--default-max-tokens", ho.default_max_tokens,
                 "output tokens when a request has no max_tokens (finish_reason stop)")
      ->capture_default_str();
  app.add_option("--data-parallel-rank", eo.data_parallel_rank,
                 "DP rank: the `engine` label, the batch's data_parallel_rank, endpoint offset")
      ->capture_default_str();
  app.add_option("--schedulers", eo.schedulers,
                 "schedulers sharing one KV cache and one waiting queue (the routing oracle)")
      ->capture_default_str();
  app.add_option("--kv-events-endpoint", po.endpoint,
                 "ZMQ PUB endpoint, e.g. tcp://*:5557 (empty = no KV events)");
  app.add_option("--kv-events-replay-endpoint", po.replay_endpoint,
                 "ZMQ ROUTER replay endpoint, e.g. tcp://*:5558");
  app.add_option("--kv-events-config", kv_events_config,
                 "vLLM's KVEventsConfig JSON (endpoint, replay_endpoint, buffer_steps, hwm, "
                 "topic, enable_kv_cache_events); explicit flags win");
  app.add_option("--buffer-steps", buffer_steps, "batches kept for replay")->capture_default_str();
  app.add_option("--event-format", event_format,
                 "wire era: 0.9.0, 0.9.1, medium, lora-name, extra-keys, group-idx, spec-kind, "
                 "map")
      ->capture_default_str();
  app.add_option("--replay-reply-format", reply_format,
                 "replay reply layout: old (pre vLLM PR #45177) or new")
      ->capture_default_str();
  app.add_option("--block-hash", block_hash, "hashes on the wire: int or bytes (32-byte bin)")
      ->capture_default_str();
  app.add_option("--topic", po.topic, "ZMQ topic (frame 0)");
  app.add_option("--http-threads", ho.threads, "HTTP worker threads")->capture_default_str();
  app.add_option("--max-body-bytes", ho.max_body_bytes, "largest accepted request body")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  if (!common::SetLogLevel(log_level)) return Fail("unknown --log-level " + log_level);
  if (!kv_events_config.empty()) {
    nlohmann::json cfg = nlohmann::json::parse(kv_events_config, nullptr, false);
    if (!cfg.is_object()) return Fail("--kv-events-config is not a JSON object");
    try {
      if (cfg.value("enable_kv_cache_events", false) && cfg.value("publisher", "zmq") != "null") {
        if (app.count("--kv-events-endpoint") == 0) {
          po.endpoint = cfg.value("endpoint", std::string("tcp://*:5557"));
        }
        if (app.count("--kv-events-replay-endpoint") == 0 && cfg.contains("replay_endpoint") &&
            cfg["replay_endpoint"].is_string()) {
          po.replay_endpoint = cfg["replay_endpoint"].get<std::string>();
        }
        if (app.count("--buffer-steps") == 0) buffer_steps = cfg.value("buffer_steps", 10000);
        if (app.count("--topic") == 0) po.topic = cfg.value("topic", std::string());
        po.hwm = cfg.value("hwm", 100000);
        po.max_queue_size = cfg.value("max_queue_size", 100000);
      }
    } catch (const std::exception& e) {
      return Fail(fmt::format("--kv-events-config: {}", e.what()));
    }
  }
  for (std::string& lora : eo.lora_modules) lora = lora.substr(0, lora.find('='));
  if (absl::Status st = eo.Validate(); !st.ok()) return Fail(std::string(st.message()));
  if (ho.default_max_tokens < 1) return Fail("--default-max-tokens must be >= 1");
  if (buffer_steps < 1) return Fail("--buffer-steps must be >= 1");
  po.buffer_steps = static_cast<size_t>(buffer_steps);
  auto format = kvpublish::ParseWireFormat(event_format);
  if (!format.ok()) return Fail(std::string(format.status().message()));
  po.format = *format;
  if (reply_format == "old" || reply_format == "pre45177") {
    po.reply_layout = kvpublish::ReplyLayout::kPre45177;
  } else if (reply_format == "new" || reply_format == "post45177") {
    po.reply_layout = kvpublish::ReplyLayout::kPost45177;
  } else {
    return Fail("--replay-reply-format must be old or new");
  }
  if (block_hash == "int") {
    po.hash_encoding = kvpublish::HashEncoding::kInt;
  } else if (block_hash == "bytes") {
    po.hash_encoding = kvpublish::HashEncoding::kBytes32;
  } else {
    return Fail("--block-hash must be int or bytes");
  }
  po.endpoint = OffsetEndpoint(po.endpoint, eo.data_parallel_rank);
  po.replay_endpoint = OffsetEndpoint(po.replay_endpoint, eo.data_parallel_rank);

  // Signals are taken by one thread with sigwait; block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::unique_ptr<enginesim::KvEventOutput> events;
  if (!po.endpoint.empty()) {
    events = std::make_unique<enginesim::KvEventOutput>(po);
    if (absl::Status st = events->Start(); !st.ok()) {
      return Fail(fmt::format("KV event publisher: {}", common::AsStd(st.message())));
    }
  } else if (!po.replay_endpoint.empty()) {
    return Fail("--kv-events-replay-endpoint needs --kv-events-endpoint");
  }
  enginesim::Engine engine(eo, events.get());
  if (absl::Status st = engine.Start(); !st.ok()) return Fail(std::string(st.message()));
  enginesim::SimHttpServer server(ho, &engine, events.get());
  absl::StatusOr<int> port = server.Bind();
  if (!port.ok()) return Fail(std::string(port.status().message()));

  std::string line =
      fmt::format("engine-sim listening on http://{}:{} port={} model={}",
                  ho.host.find(':') != std::string::npos ? "[" + ho.host + "]" : ho.host, *port,
                  *port, eo.model);
  if (events) {
    line += fmt::format(" kv_events_endpoint={} kv_events_port={}", events->publisher().endpoint(),
                        events->publisher().port());
    if (!po.replay_endpoint.empty()) {
      line += fmt::format(" replay_endpoint={} replay_port={}",
                          events->publisher().replay_endpoint(), events->publisher().replay_port());
    }
  }
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);

  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    server.Stop();
  });
  server.Serve();
  // Serve() can also end without a signal (listen failure); wake the waiter then.
  pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
  engine.Stop();
  if (events) events->Stop();
  return 0;
}
