#include "aibrix/redis/trace_flusher.h"

#include <map>
#include <vector>

#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace aibrix::redis {

TraceFlusher::TraceFlusher(tracking::RequestTracker& tracker, const common::Clock& clock,
                           TraceFlusherOptions options, prometheus::Registry& registry)
    : tracker_(tracker),
      clock_(clock),
      options_(std::move(options)),
      connection_(options_.connection),
      metrics_(registry, "trace"),
      keys_written_(prometheus::BuildCounter()
                        .Name("aibrix_redis_trace_keys_written_total")
                        .Help("Request-trace keys (one per model and interval) written to Redis")
                        .Register(registry)
                        .Add({})),
      thread_(
          [this] {
            // Sleep until the next boundary; flush that boundary even if woken a little early.
            const auto now = clock_.WallNow();
            next_boundary_ = Floor(now) + options_.period;
            return std::chrono::duration_cast<std::chrono::nanoseconds>(next_boundary_ - now);
          },
          [this] { (void)Flush(next_boundary_); }) {}

void TraceFlusher::Start() { thread_.Start(); }
void TraceFlusher::Stop() { thread_.Stop(); }

std::chrono::system_clock::time_point TraceFlusher::Floor(
    std::chrono::system_clock::time_point t) const {
  const auto since_epoch = t.time_since_epoch();
  return t - since_epoch %
                 std::chrono::duration_cast<std::chrono::system_clock::duration>(options_.period);
}

std::string TraceFlusher::Key(std::string_view model,
                              std::chrono::system_clock::time_point round_t) {
  return fmt::format(
      "aibrix:{}_request_trace_{}", model,
      std::chrono::duration_cast<std::chrono::seconds>(round_t.time_since_epoch()).count());
}

absl::StatusOr<size_t> TraceFlusher::FlushNow() { return Flush(Floor(clock_.WallNow())); }

absl::StatusOr<size_t> TraceFlusher::Flush(std::chrono::system_clock::time_point round_t) {
  const std::vector<tracking::RequestTracker::ModelTrace> traces = tracker_.SwapTraces();
  if (traces.empty()) {
    metrics_.Round(true, connection_);
    return 0;
  }
  const std::string ttl = std::to_string(options_.ttl.count());
  const int64_t interval = options_.period.count();
  std::vector<Args> commands;
  commands.reserve(traces.size());
  for (const auto& trace : traces) {
    std::map<std::string, int64_t> fields = tracking::RequestTrace::ToMap(trace.snapshot);
    fields["meta_interval_sec"] = interval;
    commands.push_back(
        Args{"SET", Key(trace.model, round_t), nlohmann::json(fields).dump(), "EX", ttl});
  }
  auto replies = connection_.Pipeline(commands);
  if (!replies.ok()) {
    metrics_.Error(replies.status());
    metrics_.Round(false, connection_);
    return replies.status();
  }
  size_t written = 0;
  absl::Status failed;
  for (size_t i = 0; i < replies->size(); ++i) {
    const Reply& reply = (*replies)[i];
    if (reply.is_error()) {
      failed = absl::FailedPreconditionError(fmt::format("SET {}: {}", commands[i][1], reply.str));
      metrics_.Error(failed);
      continue;
    }
    ++written;
  }
  keys_written_.Increment(static_cast<double>(written));
  metrics_.Round(failed.ok(), connection_);
  if (!failed.ok()) return failed;
  return written;
}

}  // namespace aibrix::redis
