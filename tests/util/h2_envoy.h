// A load-generating Envoy for the ext_proc benchmark: many Process streams on one HTTP/2
// connection, driven from one thread with nghttp2 — the way Envoy's own codec drives its
// ext_proc streams (a worker's event loop, one connection per worker) — where the gRPC C++
// client of fake_envoy.h spends a thread wake-up on every message and costs more CPU than
// the processor it measures.
//
// Each exchange follows Envoy's order with AIBrix's processing modes, waiting for each reply
// before the next step: request headers → request body (the reply must carry target-pod) →
// response headers → the response body chunks, sent together → their replies → half-close →
// the processor's status (must be OK). Every reply is parsed and checked for its kind; any
// deviation fails the exchange. Messages are framed once, up front (Exchange).
//
// Thread safety: one H2Envoy per thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "envoy/service/ext_proc/v3/external_processor.pb.h"

namespace aibrix::testing {

// The messages of one exchange, gRPC-framed.
struct H2Exchange {
  std::string request_headers;
  std::string request_body;
  std::string response_headers;
  std::string response_body;  // every chunk's frame, back to back
  int response_body_chunks = 0;

  static H2Exchange Frame(
      const envoy::service::ext_proc::v3::ProcessingRequest& request_headers,
      const envoy::service::ext_proc::v3::ProcessingRequest& request_body,
      const envoy::service::ext_proc::v3::ProcessingRequest& response_headers,
      const std::vector<envoy::service::ext_proc::v3::ProcessingRequest>& response_body);
};

struct H2RunResult {
  int64_t completed = 0;
  int64_t failed = 0;
  // Each completed exchange's time, first message to status, in microseconds.
  std::vector<double> micros;
  std::string first_error;  // what the first failed exchange saw
};

class H2Envoy {
 public:
  ~H2Envoy();
  H2Envoy(const H2Envoy&) = delete;
  H2Envoy& operator=(const H2Envoy&) = delete;

  // Connects to the processor at 127.0.0.1:`port` (plaintext HTTP/2).
  static absl::StatusOr<std::unique_ptr<H2Envoy>> Connect(int port);

  // Runs exchanges with `depth` in flight, cycling through `exchanges`, until `count` have
  // ended (count > 0) or `until` has passed (then the ones in flight are finished).
  H2RunResult Run(const std::vector<H2Exchange>& exchanges, int depth, int64_t count,
                  std::chrono::steady_clock::time_point until);

  class Impl;

 private:
  explicit H2Envoy(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace aibrix::testing
