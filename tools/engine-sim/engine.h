// Engine: engine-sim's scheduler loop — continuous batching over the BlockPool, with a
// timing model, deterministic output, vLLM metrics and one KV event batch per step.
//
// Model (docs/engine-sim.md has the long form):
//  * Each step schedules running requests first (one token each when decoding, the rest
//    of the prompt — up to the token budget, and up to long_prefill_token_threshold when
//    set — when prefilling), then admits waiting
//    requests FCFS while fewer than max_num_seqs run. Admission looks up the longest
//    cached prefix (at most prompt_len-1 tokens, as vLLM) and needs enough free blocks for
//    the request's whole life besides what running requests still need, so nothing is
//    ever preempted. Blocks are allocated lazily as tokens are computed; full blocks
//    (prompt and generated tokens) are cached at scheduling time, as vLLM does.
//  * Step time (simulated) = uncached prefill tokens / prefill_tokens_per_s
//    + (decode_step_ms + decode_step_ms_per_seq * decoding requests) when any decodes.
//    Real time = simulated / time_scale. Output token i of a request is byte
//    kOutputText[(offset + i) % size], offset derived from the prompt and the seed.
//  * The events the step produced (BlockStored / BlockRemoved / AllBlocksCleared) go to
//    the EventOutput as one batch, before the step's compute time elapses.
//  * `schedulers` > 1 runs that many schedulers, each with the budget, batch limit and
//    timing above, over ONE block pool and ONE waiting queue (whichever scheduler plans its
//    next step first admits the head). That is the routing oracle: N pods' compute with a
//    cache every request shares, so no placement can do better on hits or on balance.
//
// Thread safety: Submit, Abort, ResetPrefixCache, Restart, CacheSnapshot, RenderMetrics and
// the RequestHandle methods are safe from any thread. One thread per scheduler runs the
// steps; commands (reset, restart) run between steps, when no scheduler is mid-step.
// Lock order: Engine::mu_ before publish_mu_, and before RequestHandle::mu_.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "aibrix/kv/events.h"
#include "block_pool.h"
#include "metrics.h"

namespace aibrix::enginesim {

// The text generated tokens are drawn from (cycled).
extern const std::string_view kOutputText;

struct EngineOptions {
  int block_size = 16;
  int num_gpu_blocks = 4096;
  int max_num_seqs = 256;
  int max_num_batched_tokens = 8192;
  // vLLM's long_prefill_token_threshold: a prefill chunk takes at most this many tokens of a
  // step (0 = no cap), so a long prompt leaves budget for the others' chunks and decodes.
  int long_prefill_token_threshold = 0;
  int max_model_len = 8192;
  double prefill_tokens_per_s = 10000;
  double decode_step_ms = 10;
  double decode_step_ms_per_seq = 0.1;
  double time_scale = 1;
  uint64_t seed = 0;
  int data_parallel_rank = 0;
  int schedulers = 1;  // schedulers sharing the block pool and the waiting queue (above)
  std::string model = "engine-sim";
  // Served LoRA adapters (names); a request naming one gets its own prefix-cache space.
  std::vector<std::string> lora_modules;

  // OK, or InvalidArgument naming the first bad field.
  absl::Status Validate() const;
};

// Where the engine sends its KV event batches. Called from the engine thread only.
class EventOutput {
 public:
  virtual ~EventOutput() = default;
  virtual void Publish(kv::EventBatch batch) = 0;
  // Engine restart: sequence numbers start again at 0 and the replay buffer is emptied.
  virtual void Restart() = 0;
};

struct RequestArgs {
  std::vector<uint32_t> prompt;
  int max_tokens = 16;
  bool max_tokens_given = false;  // finish reason "length" when given, "stop" otherwise
  bool stream = false;
  std::string lora_name;  // LoRA adapter the request names; empty = base model
  int64_t lora_id = 0;    // the adapter's int id (1-based registration order)
};

// Progress of one request, shared between the HTTP thread that waits and the engine.
class RequestHandle {
 public:
  struct Progress {
    std::string new_text;  // output since the `seen` passed to Wait
    bool finished = false;
    FinishReason reason = FinishReason::kStop;
    absl::Status error;  // set when the engine dropped the request (restart)
  };

  RequestHandle(int prompt_tokens, bool stream) : prompt_tokens_(prompt_tokens), stream_(stream) {}

  // Waits until output beyond `seen` bytes exists, the request finished, or `timeout`.
  Progress Wait(size_t seen, std::chrono::milliseconds timeout);
  // Waits for the end and returns the whole output.
  Progress WaitFinished();
  // Asks the engine to drop the request (client gone). Idempotent.
  void Abort() { aborted_.store(true, std::memory_order_relaxed); }

  int prompt_tokens() const { return prompt_tokens_; }
  bool stream() const { return stream_; }
  bool aborted() const { return aborted_.load(std::memory_order_relaxed); }
  // Prompt tokens served from the prefix cache; valid once any output exists.
  int cached_tokens() const;

 private:
  friend class Engine;
  void Append(std::string_view text, int cached_tokens);
  void Finish(FinishReason reason, absl::Status error);
  // Appends the last output and finishes under one lock: a reader never sees the final text
  // without the finish, so a stream's last token chunk carries the finish_reason.
  void Complete(std::string_view final_text, int cached_tokens, FinishReason reason);

  const int prompt_tokens_;
  const bool stream_;
  std::atomic<bool> aborted_{false};
  // std::mutex rather than absl::Mutex: Debian's Abseil is not TSan-instrumented, so TSan
  // cannot see absl::Mutex's conditional waits.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_.
  std::string output_;
  int cached_tokens_ = 0;
  bool finished_ = false;
  FinishReason reason_ = FinishReason::kStop;
  absl::Status error_;
};

struct CacheView {
  int block_size = 0;
  int num_gpu_blocks = 0;
  int num_free_blocks = 0;
  double usage = 0;
  std::vector<CachedBlock> blocks;  // BlockPool::Snapshot order
};

class Engine {
 public:
  // `events` may be null (no KV events); it must outlive the engine.
  Engine(EngineOptions options, EventOutput* events);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Starts the engine thread. REQUIRES: options valid.
  absl::Status Start();
  // Stops the thread; pending requests finish with an Unavailable error. Idempotent.
  void Stop();

  // Queues a request. REQUIRES: 0 < prompt.size(), prompt.size() + max_tokens <=
  // max_model_len (the HTTP layer checks and answers 400).
  std::shared_ptr<RequestHandle> Submit(RequestArgs args);

  // vLLM's reset_prefix_cache, run by the engine thread between steps. Returns false when
  // blocks are still in use (nothing changes); on success AllBlocksCleared is published.
  bool ResetPrefixCache();
  // Simulates a process restart between steps: in-flight requests fail (Unavailable), the
  // cache is emptied without any event, metrics restart from zero, the EventOutput restarts.
  void Restart();

  CacheView CacheSnapshot() const;
  // Appends the /metrics exposition.
  void RenderMetrics(std::string* out) const;

  const EngineOptions& options() const { return options_; }

 private:
  struct Request;
  enum class Command { kReset, kRestart };
  struct PendingCommand {
    Command command;
    std::promise<bool> done;
  };
  struct Scheduled {
    Request* request;
    int num_tokens;
    bool prefill;
  };
  // One scheduler's own state; the pool, the waiting queue and the metrics are shared.
  struct Scheduler {
    std::vector<std::unique_ptr<Request>> running;
    BusyWindow busy{std::chrono::seconds(1)};
    uint64_t seen_changes = ~uint64_t{0};  // changes_ when it last planned a step
    std::thread thread;
  };

  void Loop(Scheduler& s);
  bool RunCommand(Command c);
  bool HasWork(const Scheduler& s) const;
  // Plans one step of `s`; returns its simulated duration in seconds.
  double Schedule(Scheduler& s, std::vector<Scheduled>* out,
                  std::chrono::steady_clock::time_point now);
  bool ScheduleTokens(Request* r, int n);
  void Apply(Scheduler& s, const std::vector<Scheduled>& step,
             std::chrono::steady_clock::time_point now);
  void FinishRequest(Request* r, FinishReason reason, std::chrono::steady_clock::time_point now);
  void DropAborted(Scheduler& s, std::chrono::steady_clock::time_point now);
  void FailAll(const absl::Status& error);
  double SimSeconds(std::chrono::steady_clock::duration d) const;

  // Constant after construction.
  const EngineOptions options_;
  EventOutput* const events_;
  const std::string label_model_;  // escaped for Prometheus label values
  const std::string label_engine_;

  // Everything below is guarded by mu_ (a std::mutex for the TSan reason given above);
  // the private methods above that touch it require mu_ held.
  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // signalled when HasWork() may have become true
  BlockPool pool_;
  EngineMetrics metrics_;
  std::deque<std::unique_ptr<Request>> waiting_;
  // Fixed size after construction; each element's fields are guarded by mu_ like the rest.
  std::vector<std::unique_ptr<Scheduler>> schedulers_;
  std::deque<PendingCommand> commands_;
  int steps_in_flight_ = 0;  // schedulers between planning a step and applying it
  uint64_t changes_ = 0;     // bumped by a submit and by each applied step
  bool stop_ = false;
  bool started_ = false;
  // Set by a restart command; the next publisher restarts events_ before publishing.
  bool restart_publisher_ = false;

  // Held while publishing; taken before mu_ is released, so batches go out in the order
  // their events were taken from the pool.
  std::mutex publish_mu_;
};

}  // namespace aibrix::enginesim
