// The external processor's metrics, declared once (references kept for the hot path):
//   aibrix_cache_extproc_streams_total{end}         streams ended, by how (see StreamEnd)
//   aibrix_cache_extproc_streams_open               Process streams open now
//   aibrix_cache_extproc_decisions_total{kind}      routed (target pod), model (no strategy:
//                                                   Envoy routes by model), error
//   aibrix_cache_extproc_immediate_responses_total{code}  local replies sent to Envoy
//   aibrix_cache_extproc_protocol_errors_total{kind}      messages Envoy must not send
//
// Thread safety: prometheus counters are safe from any thread.
#pragma once

#include <array>
#include <string_view>

#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace aibrix::extproc {

// How a Process stream ended (the label of streams_total).
enum class StreamEnd {
  kCompleted,  // the response was seen to its end (or its usage), then OK
  kImmediate,  // we answered with an ImmediateResponse
  kError,      // we closed with a gRPC error (protocol violation)
  kEof,        // Envoy half-closed before the exchange was complete
  kCancelled,  // Envoy reset the stream (client gone, Envoy's message timeout)
  kTimeout,    // no message for the idle timeout
  kShutdown,   // the server stopped
};
inline constexpr size_t kStreamEnds = 7;
std::string_view StreamEndName(StreamEnd end);

class Metrics {
 public:
  explicit Metrics(prometheus::Registry& registry);
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  void StreamEnded(StreamEnd end);
  void ImmediateResponse(int code);
  void ProtocolError(std::string_view kind);
  void Routed() { routed_.Increment(); }
  void RoutedByModel() { by_model_.Increment(); }
  void DecisionFailed() { decision_errors_.Increment(); }
  prometheus::Gauge& streams_open() { return streams_open_; }

 private:
  prometheus::Family<prometheus::Counter>& streams_;
  std::array<prometheus::Counter*, kStreamEnds> stream_ends_{};
  prometheus::Gauge& streams_open_;
  prometheus::Family<prometheus::Counter>& decisions_;
  prometheus::Counter& routed_;
  prometheus::Counter& by_model_;
  prometheus::Counter& decision_errors_;
  prometheus::Family<prometheus::Counter>& immediate_;
  prometheus::Family<prometheus::Counter>& protocol_errors_;
};

}  // namespace aibrix::extproc
