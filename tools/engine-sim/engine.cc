#include "engine.h"

#include <sys/prctl.h>

#include <algorithm>

#include "aibrix/common/logging.h"
#include "aibrix/common/status_macros.h"
#include "fmt/format.h"
#include "xxhash.h"

namespace aibrix::enginesim {

const std::string_view kOutputText =
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
    "How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow. "
    "A wizard's job is to vex chumps quickly in fog. ";

namespace {

using SteadyTime = std::chrono::steady_clock::time_point;

std::string EscapeLabel(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

int CeilDiv(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

}  // namespace

absl::Status EngineOptions::Validate() const {
  auto bad = [](std::string msg) { return absl::InvalidArgumentError(std::move(msg)); };
  if (block_size <= 0) return bad("--block-size must be > 0");
  if (num_gpu_blocks <= 0) return bad("--num-gpu-blocks must be > 0");
  if (max_num_seqs <= 0) return bad("--max-num-seqs must be > 0");
  if (max_num_batched_tokens <= 0) return bad("--max-num-batched-tokens must be > 0");
  if (long_prefill_token_threshold < 0) return bad("--long-prefill-token-threshold must be >= 0");
  if (max_model_len <= 1) return bad("--max-model-len must be > 1");
  if (static_cast<int64_t>(max_model_len) > static_cast<int64_t>(num_gpu_blocks) * block_size) {
    return bad(fmt::format(
        "--max-model-len {} does not fit in the KV cache ({} blocks of {} tokens = {} tokens)",
        max_model_len, num_gpu_blocks, block_size,
        static_cast<int64_t>(num_gpu_blocks) * block_size));
  }
  if (!(prefill_tokens_per_s > 0)) return bad("--prefill-tokens-per-s must be > 0");
  if (!(decode_step_ms >= 0)) return bad("--decode-step-ms must be >= 0");
  if (!(decode_step_ms_per_seq >= 0)) return bad("--decode-step-ms-per-seq must be >= 0");
  if (!(time_scale > 0)) return bad("--time-scale must be > 0");
  if (data_parallel_rank < 0) return bad("--data-parallel-rank must be >= 0");
  if (schedulers < 1) return bad("--schedulers must be >= 1");
  if (model.empty()) return bad("--model must not be empty");
  for (size_t i = 0; i < lora_modules.size(); ++i) {
    if (lora_modules[i].empty()) return bad("--lora-modules: empty adapter name");
    if (lora_modules[i] == model) return bad("--lora-modules: adapter named like the model");
    for (size_t j = 0; j < i; ++j) {
      if (lora_modules[i] == lora_modules[j]) {
        return bad(fmt::format("--lora-modules: `{}` given twice", lora_modules[i]));
      }
    }
  }
  return absl::OkStatus();
}

// ---- RequestHandle ----

RequestHandle::Progress RequestHandle::Wait(size_t seen, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [this, seen] { return finished_ || output_.size() > seen; });
  Progress p;
  if (output_.size() > seen) p.new_text = output_.substr(seen);
  p.finished = finished_;
  p.reason = reason_;
  p.error = error_;
  return p;
}

RequestHandle::Progress RequestHandle::WaitFinished() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [this] { return finished_; });
  Progress p;
  p.new_text = output_;
  p.finished = true;
  p.reason = reason_;
  p.error = error_;
  return p;
}

int RequestHandle::cached_tokens() const {
  std::lock_guard lock(mu_);
  return cached_tokens_;
}

void RequestHandle::Append(std::string_view text, int cached_tokens) {
  {
    std::lock_guard lock(mu_);
    output_ += text;
    cached_tokens_ = cached_tokens;
  }
  cv_.notify_all();
}

void RequestHandle::Finish(FinishReason reason, absl::Status error) {
  {
    std::lock_guard lock(mu_);
    finished_ = true;
    reason_ = reason;
    error_ = std::move(error);
  }
  cv_.notify_all();
}

void RequestHandle::Complete(std::string_view final_text, int cached_tokens, FinishReason reason) {
  {
    std::lock_guard lock(mu_);
    output_ += final_text;
    if (!final_text.empty()) cached_tokens_ = cached_tokens;
    finished_ = true;
    reason_ = reason;
    error_ = absl::OkStatus();
  }
  cv_.notify_all();
}

// ---- Engine ----

struct Engine::Request {
  std::shared_ptr<RequestHandle> handle;
  std::vector<uint32_t> tokens;  // prompt, then generated tokens
  int num_prompt = 0;
  int max_output = 0;
  bool max_tokens_given = false;
  int num_output = 0;
  int num_computed = 0;
  std::vector<int> blocks;
  std::vector<BlockHash> hashes;  // chain hashes of the full blocks of `tokens`
  int num_cached_blocks = 0;      // leading blocks registered in the prefix cache
  int lifetime_blocks = 0;        // blocks needed by the time the last token is sampled
  uint64_t text_offset = 0;
  std::string lora_name;
  int64_t lora_id = 0;
  int cached_tokens = 0;
  std::string text;  // output not yet handed to a non-streaming handle
  SteadyTime arrival, admitted, first_token, last_token;
  bool done = false;
};

Engine::Engine(EngineOptions options, EventOutput* events)
    : options_(std::move(options)),
      events_(events),
      label_model_(EscapeLabel(options_.model)),
      label_engine_(std::to_string(options_.data_parallel_rank)),
      pool_(std::max(options_.num_gpu_blocks, 1), std::max(options_.block_size, 1)),
      metrics_(options_.max_model_len) {
  for (int i = 0; i < std::max(options_.schedulers, 1); ++i) {
    schedulers_.push_back(std::make_unique<Scheduler>());
  }
}

Engine::~Engine() { Stop(); }

absl::Status Engine::Start() {
  RETURN_IF_ERROR(options_.Validate());
  std::lock_guard lock(mu_);
  if (started_) return absl::FailedPreconditionError("engine already started");
  started_ = true;
  for (auto& s : schedulers_) s->thread = std::thread([this, sp = s.get()] { Loop(*sp); });
  return absl::OkStatus();
}

void Engine::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& s : schedulers_) {
    if (s->thread.joinable()) s->thread.join();
  }
  std::lock_guard lock(mu_);
  FailAll(absl::UnavailableError("engine stopped"));
  for (PendingCommand& c : commands_) c.done.set_value(false);
  commands_.clear();
}

std::shared_ptr<RequestHandle> Engine::Submit(RequestArgs args) {
  auto r = std::make_unique<Request>();
  r->handle = std::make_shared<RequestHandle>(static_cast<int>(args.prompt.size()), args.stream);
  r->num_prompt = static_cast<int>(args.prompt.size());
  r->max_output = std::max(args.max_tokens, 1);
  r->max_tokens_given = args.max_tokens_given;
  r->lifetime_blocks = CeilDiv(r->num_prompt + r->max_output - 1, options_.block_size);
  r->text_offset = XXH3_64bits_withSeed(args.prompt.data(), args.prompt.size() * sizeof(uint32_t),
                                        options_.seed) %
                   kOutputText.size();
  r->lora_name = std::move(args.lora_name);
  r->lora_id = args.lora_id;
  r->tokens = std::move(args.prompt);
  r->tokens.reserve(r->tokens.size() + r->max_output);
  r->arrival = std::chrono::steady_clock::now();
  std::shared_ptr<RequestHandle> handle = r->handle;
  {
    std::lock_guard lock(mu_);
    if (stop_) {
      handle->Finish(FinishReason::kAbort, absl::UnavailableError("engine stopped"));
      return handle;
    }
    waiting_.push_back(std::move(r));
    ++changes_;
  }
  work_cv_.notify_all();
  return handle;
}

bool Engine::ResetPrefixCache() {
  std::future<bool> done;
  {
    std::lock_guard lock(mu_);
    if (stop_ || !started_) return false;
    commands_.push_back(PendingCommand{Command::kReset, {}});
    done = commands_.back().done.get_future();
  }
  work_cv_.notify_one();
  return done.get();
}

void Engine::Restart() {
  std::future<bool> done;
  {
    std::lock_guard lock(mu_);
    if (stop_ || !started_) return;
    commands_.push_back(PendingCommand{Command::kRestart, {}});
    done = commands_.back().done.get_future();
  }
  work_cv_.notify_one();
  done.get();
}

CacheView Engine::CacheSnapshot() const {
  std::lock_guard lock(mu_);
  CacheView v;
  v.block_size = pool_.block_size();
  v.num_gpu_blocks = pool_.num_blocks();
  v.num_free_blocks = pool_.num_free();
  v.usage = pool_.usage();
  v.blocks = pool_.Snapshot();
  return v;
}

void Engine::RenderMetrics(std::string* out) const {
  std::lock_guard lock(mu_);
  EngineGauges g;
  const auto now = std::chrono::steady_clock::now();
  for (const auto& s : schedulers_) {
    g.num_running += static_cast<int>(s->running.size());
    g.utilization += s->busy.Utilization(now) / static_cast<double>(schedulers_.size());
  }
  g.num_waiting = static_cast<int>(waiting_.size());
  g.kv_cache_usage = pool_.usage();
  g.block_size = pool_.block_size();
  g.num_gpu_blocks = pool_.num_blocks();
  metrics_.Render(out, g, label_engine_, label_model_);
}

double Engine::SimSeconds(std::chrono::steady_clock::duration d) const {
  return std::max(0.0, std::chrono::duration<double>(d).count() * options_.time_scale);
}

bool Engine::HasWork(const Scheduler& s) const {
  if (stop_) return true;
  // A pending command holds back new steps until every scheduler is between steps.
  if (!commands_.empty()) return steps_in_flight_ == 0;
  // The waiting head is worth another look only after something changed: with several
  // schedulers it can be blocked on blocks another scheduler's requests hold.
  return !s.running.empty() || (!waiting_.empty() && s.seen_changes != changes_);
}

bool Engine::RunCommand(Command c) {
  switch (c) {
    case Command::kReset:
      return pool_.ResetPrefixCache();
    case Command::kRestart:
      FailAll(absl::UnavailableError("engine restarted"));
      pool_.DropAll();
      metrics_.Reset();
      for (auto& s : schedulers_) s->busy.Reset();
      restart_publisher_ = true;
      return true;
  }
  return false;
}

void Engine::FailAll(const absl::Status& error) {
  for (auto& s : schedulers_) {
    for (auto& r : s->running) {
      pool_.Free(r->blocks);
      r->handle->Finish(FinishReason::kAbort, error);
    }
    s->running.clear();
  }
  for (auto& r : waiting_) r->handle->Finish(FinishReason::kAbort, error);
  waiting_.clear();
}

void Engine::FinishRequest(Request* r, FinishReason reason, SteadyTime now) {
  pool_.Free(r->blocks);
  r->blocks.clear();
  r->done = true;
  r->handle->Complete(r->text, r->cached_tokens, reason);
  r->text.clear();
  metrics_.request_success[static_cast<int>(reason)]++;
  if (reason == FinishReason::kAbort) return;
  metrics_.e2e_request_latency.Observe(SimSeconds(now - r->arrival));
  metrics_.request_queue_time.Observe(SimSeconds(r->admitted - r->arrival));
  metrics_.request_inference_time.Observe(SimSeconds(now - r->admitted));
  metrics_.request_prefill_time.Observe(SimSeconds(r->first_token - r->admitted));
  metrics_.request_decode_time.Observe(SimSeconds(now - r->first_token));
  if (r->num_output > 1) {
    metrics_.request_time_per_output_token.Observe(SimSeconds(now - r->first_token) /
                                                   (r->num_output - 1));
  }
  metrics_.request_prompt_tokens.Observe(r->num_prompt);
  metrics_.request_generation_tokens.Observe(r->num_output);
  metrics_.request_params_max_tokens.Observe(r->max_output);
  metrics_.request_max_num_generation_tokens.Observe(r->max_output);
  metrics_.request_params_n.Observe(1);
}

void Engine::DropAborted(Scheduler& s, SteadyTime now) {
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if ((*it)->handle->aborted()) {
      (*it)->handle->Finish(FinishReason::kAbort, absl::OkStatus());
      metrics_.request_success[static_cast<int>(FinishReason::kAbort)]++;
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  bool any = false;
  for (auto& r : s.running) {
    if (r->handle->aborted()) {
      FinishRequest(r.get(), FinishReason::kAbort, now);
      any = true;
    }
  }
  if (any) std::erase_if(s.running, [](const auto& r) { return r->done; });
}

bool Engine::ScheduleTokens(Request* r, int n) {
  const int target = r->num_computed + n;
  const int need_blocks = CeilDiv(target, options_.block_size);
  while (static_cast<int>(r->blocks.size()) < need_blocks) {
    if (pool_.num_free() == 0) {
      // Admission reserves every block a request will need, so this cannot happen.
      static common::RateLimiter limiter;
      if (limiter.Allow()) {
        common::Logger("engine-sim")->error("out of KV blocks despite reservation");
      }
      return false;
    }
    r->blocks.push_back(pool_.Allocate());
  }
  const int full = target / options_.block_size;
  std::span<const uint32_t> known(r->tokens.data(), static_cast<size_t>(target));
  ExtendBlockHashes(known, options_.block_size, options_.seed, &r->hashes, r->lora_name);
  if (full > r->num_cached_blocks) {
    pool_.CacheFullBlocks(r->blocks, r->hashes, r->tokens, r->num_cached_blocks, full, r->lora_name,
                          r->lora_id);
    r->num_cached_blocks = full;
  }
  return true;
}

double Engine::Schedule(Scheduler& s, std::vector<Scheduled>* out, SteadyTime now) {
  int budget = options_.max_num_batched_tokens;
  // Tokens a request may take of this step: vLLM caps a long prefill's chunk first.
  const int threshold = options_.long_prefill_token_threshold;
  auto chunk = [&](int remaining) {
    if (threshold > 0 && remaining > threshold) remaining = threshold;
    return std::min(remaining, budget);
  };
  int64_t prefill_tokens = 0;
  int decodes = 0;
  for (auto& rp : s.running) {
    Request* r = rp.get();
    const int n = chunk(static_cast<int>(r->tokens.size()) - r->num_computed);
    if (n <= 0) continue;
    const bool prefill = r->num_computed < r->num_prompt;
    if (!ScheduleTokens(r, n)) continue;
    budget -= n;
    out->push_back(Scheduled{r, n, prefill});
    if (prefill) {
      prefill_tokens += n;
    } else {
      ++decodes;
    }
  }
  // Blocks every running request (of any scheduler: the pool is shared) still needs.
  int64_t outstanding = 0;
  for (const auto& other : schedulers_) {
    for (const auto& r : other->running) {
      outstanding += r->lifetime_blocks - static_cast<int>(r->blocks.size());
    }
  }
  const int bs = options_.block_size;
  while (!waiting_.empty() && static_cast<int>(s.running.size()) < options_.max_num_seqs &&
         budget > 0) {
    Request* r = waiting_.front().get();
    std::span<const uint32_t> prompt(r->tokens.data(), static_cast<size_t>(r->num_prompt));
    ExtendBlockHashes(prompt, bs, options_.seed, &r->hashes, r->lora_name);
    const int hit = std::min(pool_.CountCachedPrefix(r->hashes), (r->num_prompt - 1) / bs);
    const int free_hit = pool_.CountFreeAmongCached(r->hashes, hit);
    const int need = r->lifetime_blocks - hit;
    if (pool_.num_free() - free_hit - outstanding < need) break;  // FCFS: wait for capacity
    r->blocks = pool_.TouchCached(r->hashes, hit);
    r->num_cached_blocks = hit;
    r->num_computed = hit * bs;
    r->cached_tokens = hit * bs;
    r->admitted = now;
    metrics_.prefix_cache_queries += r->num_prompt;
    metrics_.prefix_cache_hits += static_cast<uint64_t>(hit) * bs;
    const int n = chunk(r->num_prompt - r->num_computed);
    s.running.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
    if (!ScheduleTokens(r, n)) continue;
    budget -= n;
    prefill_tokens += n;
    out->push_back(Scheduled{r, n, true});
    outstanding += r->lifetime_blocks - static_cast<int>(r->blocks.size());
  }
  if (!out->empty()) {
    metrics_.iteration_tokens.Observe(static_cast<double>(prefill_tokens + decodes));
  }
  double seconds = static_cast<double>(prefill_tokens) / options_.prefill_tokens_per_s;
  if (decodes > 0) {
    seconds += (options_.decode_step_ms + options_.decode_step_ms_per_seq * decodes) / 1000.0;
  }
  return seconds;
}

void Engine::Apply(Scheduler& s, const std::vector<Scheduled>& step, SteadyTime now) {
  bool any_done = false;
  for (const Scheduled& planned : step) {
    Request* r = planned.request;
    if (r->done) continue;
    r->num_computed += planned.num_tokens;
    if (r->num_computed < static_cast<int>(r->tokens.size())) continue;  // chunked prefill
    const char c = kOutputText[(r->text_offset + r->num_output) % kOutputText.size()];
    r->tokens.push_back(static_cast<unsigned char>(c));
    ++r->num_output;
    metrics_.generation_tokens++;
    if (r->num_output == 1) {
      r->first_token = now;
      metrics_.prompt_tokens += r->num_prompt;
      metrics_.time_to_first_token.Observe(SimSeconds(now - r->arrival));
    } else {
      metrics_.inter_token_latency.Observe(SimSeconds(now - r->last_token));
    }
    r->last_token = now;
    const bool last = r->num_output >= r->max_output;
    if (r->handle->stream() && !last) {
      r->handle->Append(std::string_view(&c, 1), r->cached_tokens);
    } else {
      r->text += c;  // the whole output, or a stream's last token: handed over with the finish
    }
    if (last) {
      FinishRequest(r, r->max_tokens_given ? FinishReason::kLength : FinishReason::kStop, now);
      any_done = true;
    }
  }
  if (any_done) std::erase_if(s.running, [](const auto& r) { return r->done; });
}

void Engine::Loop(Scheduler& s) {
  prctl(PR_SET_TIMERSLACK, 1UL);  // short simulated steps need precise sleeps
  std::vector<Scheduled> step;
  SteadyTime deadline = std::chrono::steady_clock::now();
  bool busy = false;  // the previous step ran back to back with this one
  while (true) {
    std::vector<std::promise<bool>> finished_commands;
    std::vector<bool> results;
    bool restart_publisher = false;
    std::vector<kv::Event> events;
    step.clear();
    double seconds = 0;
    SteadyTime start;
    std::unique_lock<std::mutex> publishing;
    {
      std::unique_lock lock(mu_);
      work_cv_.wait(lock, [this, &s] { return HasWork(s); });
      if (stop_) return;
      while (!commands_.empty()) {
        PendingCommand c = std::move(commands_.front());
        commands_.pop_front();
        results.push_back(RunCommand(c.command));
        finished_commands.push_back(std::move(c.done));
      }
      restart_publisher = restart_publisher_;
      restart_publisher_ = false;
      const SteadyTime now = std::chrono::steady_clock::now();
      // Back-to-back steps start where the previous one ended, so host overhead between
      // steps does not stretch simulated time; after idling the clock restarts from now.
      start = busy ? std::min(deadline, now) : now;
      DropAborted(s, start);
      seconds = Schedule(s, &step, start);
      s.seen_changes = changes_;
      events = pool_.TakeEvents();
      if (!step.empty()) {
        deadline = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                               std::chrono::duration<double>(seconds / options_.time_scale));
        s.busy.Add(start, deadline);
        ++steps_in_flight_;
      }
      publishing = std::unique_lock(publish_mu_);
    }
    if (events_ != nullptr) {
      if (restart_publisher) events_->Restart();
      if (!events.empty()) {
        kv::EventBatch batch;
        batch.ts =
            std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
                .count();
        batch.events = std::move(events);
        batch.data_parallel_rank = options_.data_parallel_rank;
        events_->Publish(std::move(batch));
      }
    }
    publishing.unlock();
    for (size_t i = 0; i < finished_commands.size(); ++i) {
      finished_commands[i].set_value(results[i]);
    }
    if (step.empty()) {
      busy = false;
      continue;
    }
    // Sleep in slices so Stop() is not held up by a long simulated step.
    while (true) {
      const SteadyTime now = std::chrono::steady_clock::now();
      if (now >= deadline) break;
      {
        std::lock_guard lock(mu_);
        if (stop_) break;
      }
      std::this_thread::sleep_until(std::min(deadline, now + std::chrono::milliseconds(50)));
    }
    {
      std::lock_guard lock(mu_);
      Apply(s, step, deadline);
      --steps_in_flight_;
      ++changes_;
      busy = !s.running.empty();
    }
    // Freed blocks may admit the waiting head; a pending command may now run.
    if (schedulers_.size() > 1) work_cv_.notify_all();
  }
}

}  // namespace aibrix::enginesim
