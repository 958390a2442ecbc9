#include "event_output.h"

#include "aibrix/common/logging.h"
#include "aibrix/common/strings.h"

namespace aibrix::enginesim {

KvEventOutput::KvEventOutput(kvpublish::PublisherOptions options)
    : publisher_(std::move(options)) {}

absl::Status KvEventOutput::Start() { return publisher_.Start(); }

void KvEventOutput::Publish(kv::EventBatch batch) {
  absl::Status st;
  int corrupt = corrupt_next_.load();
  while (corrupt > 0 && !corrupt_next_.compare_exchange_weak(corrupt, corrupt - 1)) {
  }
  if (corrupt > 0) {
    st = publisher_.PublishPayload(std::string(kCorruptPayload));
  } else {
    st = publisher_.Publish(batch);
  }
  if (!st.ok()) {
    publish_errors_.fetch_add(1);
    static common::RateLimiter limiter;
    uint64_t suppressed = 0;
    if (limiter.Allow(&suppressed)) {
      common::Logger("engine-sim")
          ->warn("KV event batch not published: {} ({} similar suppressed)",
                 common::AsStd(st.message()), suppressed);
    }
  }
}

void KvEventOutput::Restart() {
  if (absl::Status st = publisher_.Restart(); !st.ok()) {
    common::Logger("engine-sim")
        ->warn("KV event publisher restart failed: {}", common::AsStd(st.message()));
  }
}

}  // namespace aibrix::enginesim
