#include "aibrix/extproc/metrics.h"

#include <string>

namespace aibrix::extproc {

std::string_view StreamEndName(StreamEnd end) {
  switch (end) {
    case StreamEnd::kCompleted:
      return "completed";
    case StreamEnd::kImmediate:
      return "immediate";
    case StreamEnd::kError:
      return "error";
    case StreamEnd::kEof:
      return "eof";
    case StreamEnd::kCancelled:
      return "cancelled";
    case StreamEnd::kTimeout:
      return "timeout";
    case StreamEnd::kShutdown:
      return "shutdown";
  }
  return "unknown";
}

Metrics::Metrics(prometheus::Registry& registry)
    : streams_(prometheus::BuildCounter()
                   .Name("aibrix_cache_extproc_streams_total")
                   .Help("Envoy ext_proc streams ended, by how they ended")
                   .Register(registry)),
      streams_open_(prometheus::BuildGauge()
                        .Name("aibrix_cache_extproc_streams_open")
                        .Help("Envoy ext_proc streams open now")
                        .Register(registry)
                        .Add({})),
      decisions_(prometheus::BuildCounter()
                     .Name("aibrix_cache_extproc_decisions_total")
                     .Help("ext_proc routing decisions: routed (target pod), model (no "
                           "strategy), error")
                     .Register(registry)),
      routed_(decisions_.Add({{"kind", "routed"}})),
      by_model_(decisions_.Add({{"kind", "model"}})),
      decision_errors_(decisions_.Add({{"kind", "error"}})),
      immediate_(prometheus::BuildCounter()
                     .Name("aibrix_cache_extproc_immediate_responses_total")
                     .Help("ext_proc local replies (ImmediateResponse) by HTTP status")
                     .Register(registry)),
      protocol_errors_(prometheus::BuildCounter()
                           .Name("aibrix_cache_extproc_protocol_errors_total")
                           .Help("ext_proc messages out of order or malformed, by kind")
                           .Register(registry)) {
  for (size_t i = 0; i < kStreamEnds; ++i) {
    stream_ends_[i] =
        &streams_.Add({{"end", std::string(StreamEndName(static_cast<StreamEnd>(i)))}});
  }
}

void Metrics::StreamEnded(StreamEnd end) { stream_ends_[static_cast<size_t>(end)]->Increment(); }

void Metrics::ImmediateResponse(int code) {
  immediate_.Add({{"code", std::to_string(code)}}).Increment();
}

void Metrics::ProtocolError(std::string_view kind) {
  protocol_errors_.Add({{"kind", std::string(kind)}}).Increment();
}

}  // namespace aibrix::extproc
