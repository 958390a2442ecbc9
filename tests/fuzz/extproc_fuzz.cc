// libFuzzer target: Envoy ext_proc message handling without the network. An input is a
// sequence of serialized ProcessingRequests, each prefixed by its length (2 bytes, little
// endian); the first byte picks the dialect and whether a default strategy is configured.
// Every message that parses is fed, in order, to one stream's Processor (processor.h) on the
// real gateway of an in-process Service (3 pods, local tokenizer); then the stream ends.
// Invariants checked: answers stop once the stream is closed, Close is called at most once,
// and once the stream ended nothing is left counted (no request in flight in the Store, no
// pod running anything).
// Seed corpus: tests/fuzz/corpus/extproc (made by gen_extproc_seeds.sh from text protos).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "aibrix/common/logging.h"
#include "aibrix/extproc/processor.h"
#include "aibrix/server/service.h"
#include "boost/asio/io_context.hpp"
#include "tests/util/temp_dir.h"

namespace {

struct World {
  World() : dir("extproc-fuzz") {
    aibrix::common::SetLogLevel("off");
    aibrix::server::ServiceConfig config;
    config.static_config =
        dir.Write("config.yaml",
                  "models:\n  - name: llama\n    endpoints:\n"
                  "      - \"127.0.0.1:9\"\n      - \"127.0.0.1:10\"\n      - \"[::1]:11\"\n");
    config.http_addr = "127.0.0.1:0";
    config.extproc_addr = "";
    config.io_threads = 1;
    service = std::make_unique<aibrix::server::Service>(config);
    if (!service->Start().ok()) std::abort();
  }
  aibrix::testing::TempDir dir;
  std::unique_ptr<aibrix::server::Service> service;
  prometheus::Registry registry;
  aibrix::extproc::Metrics metrics{registry};
  boost::asio::io_context io;
};

// Records the answers; checks the output contract.
class Recorder : public aibrix::extproc::StreamOutput {
 public:
  void Send(aibrix::extproc::ext_proc_v3::ProcessingResponse) override {
    if (closed_) std::abort();  // an answer after Close
    ++sent_;
  }
  void Close(absl::Status) override {
    if (closed_) std::abort();  // Close twice
    closed_ = true;
  }

 private:
  bool closed_ = false;
  int sent_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = new World();
  if (size < 1) return 0;
  aibrix::extproc::ProcessorOptions options;
  options.dialect =
      (data[0] & 1) ? aibrix::extproc::Dialect::kGie : aibrix::extproc::Dialect::kAibrix;
  if (data[0] & 2) options.default_strategy = "least-request";
  if (data[0] & 4) options.bearer_token = "token";
  options.max_body_bytes = 64 << 10;
  Recorder recorder;
  auto processor = std::make_shared<aibrix::extproc::Processor>(
      options,
      aibrix::extproc::ProcessorDeps{&world->service->gateway(), &world->service->store(),
                                     &world->io, &world->metrics},
      &recorder);
  size_t at = 1;
  while (at + 2 <= size) {
    const size_t length = data[at] | (static_cast<size_t>(data[at + 1]) << 8);
    at += 2;
    if (length > size - at) break;
    aibrix::extproc::ext_proc_v3::ProcessingRequest message;
    if (message.ParseFromArray(data + at, static_cast<int>(length))) processor->OnMessage(message);
    at += length;
  }
  processor->OnEnd(aibrix::extproc::StreamEnd::kEof);
  if (world->service->store().InFlightRequests() != 0) std::abort();
  for (const auto& pod : world->service->store().ListPods()) {
    if (pod->state->running() != 0) std::abort();
  }
  return 0;
}
