// kv-tail: prints an engine's KV cache events (vLLM's ZMQ publisher) as JSON lines, or
// decodes hex payloads from stdin (see kv_tail.h).
#include <cstdint>
#include <iostream>

#include "CLI/CLI.hpp"
#include "tools/kv-tail/kv_tail.h"

int main(int argc, char** argv) {
  aibrix::kvtail::KvTailOptions options;
  uint64_t from = 0;
  CLI::App app("kv-tail: print an engine's KV cache events (vLLM ZMQ publisher) as JSON lines");
  app.add_option("--endpoint", options.endpoint, "PUB endpoint, e.g. tcp://10.0.0.5:5557");
  app.add_option("--replay-endpoint", options.replay_endpoint,
                 "ROUTER replay endpoint, e.g. tcp://10.0.0.5:5558");
  CLI::Option* from_option =
      app.add_option("--from-seq", from, "Replay buffered batches from this sequence first");
  app.add_option("--topic", options.topic, "Topic prefix filter (default: all)");
  app.add_option("--count", options.count, "Exit after this many messages (0: never)");
  app.add_flag("--decode-hex", options.decode_hex,
               "Decode hex payloads from stdin, one per line, instead of connecting");
  CLI11_PARSE(app, argc, argv);
  if (from_option->count() > 0) options.from_seq = from;
  return aibrix::kvtail::RunKvTail(options, std::cin, std::cout);
}
