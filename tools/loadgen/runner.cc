#include "runner.h"

#include <algorithm>
#include <cstdio>
#include <map>

#include "aibrix/common/status_macros.h"
#include "fmt/format.h"

namespace aibrix::loadgen {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

class SyntheticSource : public RequestSource {
 public:
  SyntheticSource(const SyntheticOptions& options, double rate, uint64_t arrival_seed)
      : options_(options), workload_(options), arrivals_(rate, arrival_seed), rate_(rate) {}

  std::optional<RequestSpec> Next() override {
    RequestSpec spec = workload_.Next();
    spec.arrival_s = arrivals_.Next();
    return spec;
  }

  json Describe() const override {
    return {{"kind", "synthetic"},
            {"api", ApiName(options_.api)},
            {"rate", rate_},
            {"system_prompts", options_.num_system_prompts},
            {"system_prompt_len", options_.system_prompt_len},
            {"users", options_.num_users},
            {"turns", options_.turns},
            {"user_message_len", options_.user_message_len},
            {"reply_len", options_.reply_len},
            {"max_tokens", options_.max_tokens},
            {"seed", options_.seed}};
  }

 private:
  SyntheticOptions options_;
  SyntheticWorkload workload_;
  PoissonArrivals arrivals_;
  double rate_;
};

class TraceSource : public RequestSource {
 public:
  TraceSource(Trace trace, std::string path, std::string format, double rate, double speedup,
              uint64_t arrival_seed)
      : trace_(std::move(trace)),
        path_(std::move(path)),
        format_(std::move(format)),
        rate_(rate),
        speedup_(speedup),
        arrivals_(rate > 0 ? rate : 1.0, arrival_seed) {}

  std::optional<RequestSpec> Next() override {
    if (next_ >= trace_.requests.size()) return std::nullopt;
    RequestSpec spec = trace_.requests[next_++];
    spec.arrival_s = rate_ > 0 ? arrivals_.Next() : spec.arrival_s / speedup_;
    return spec;
  }

  json Describe() const override {
    return {{"kind", "trace"},
            {"path", path_},
            {"format", format_},
            {"requests_in_trace", trace_.requests.size()},
            {"bad_lines", trace_.bad_lines},
            {"timing", rate_ > 0 ? "poisson" : "timestamps"},
            {"rate", rate_},
            {"speedup", speedup_}};
  }

 private:
  Trace trace_;
  std::string path_;
  std::string format_;
  double rate_;
  double speedup_;
  PoissonArrivals arrivals_;
  size_t next_ = 0;
};

}  // namespace

std::unique_ptr<RequestSource> MakeSyntheticSource(const SyntheticOptions& options, double rate,
                                                   uint64_t arrival_seed) {
  return std::make_unique<SyntheticSource>(options, rate, arrival_seed);
}

std::unique_ptr<RequestSource> MakeTraceSource(Trace trace, std::string path, std::string format,
                                               double rate, double speedup, uint64_t arrival_seed) {
  return std::make_unique<TraceSource>(std::move(trace), std::move(path), std::move(format), rate,
                                       speedup, arrival_seed);
}

Runner::Runner(RunOptions options) : options_(std::move(options)) {}

Runner::~Runner() {
  {
    std::lock_guard lock(mu_);
    closing_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
}

double Runner::Elapsed() const {
  return std::chrono::duration<double>(Clock::now() - start_).count();
}

absl::StatusOr<std::vector<EngineCounters>> Runner::ScrapeEngines() const {
  std::vector<EngineCounters> out;
  for (const HttpUrl& url : options_.engine_metrics) {
    ASSIGN_OR_RETURN(const std::string body, HttpGet(url, 5));
    absl::StatusOr<EngineCounters> counters = ParseEngineCounters(body);
    if (!counters.ok()) {
      return absl::Status(counters.status().code(),
                          fmt::format("engine metrics {}{}: {}", url.Origin(), url.path,
                                      std::string(counters.status().message())));
    }
    out.push_back(*counters);
  }
  return out;
}

void Runner::WorkerLoop() {
  ClientOptions client_options = options_.client;
  if (!options_.routing_strategy.empty()) {
    client_options.headers.emplace_back("routing-strategy", options_.routing_strategy);
  }
  StreamingClient client(options_.target, client_options);
  std::unique_lock lock(mu_);
  while (true) {
    ++idle_workers_;
    work_cv_.wait(lock, [&] { return closing_ || !queue_.empty(); });
    --idle_workers_;
    if (queue_.empty()) return;  // closing
    Job job = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    job.sent_s = Elapsed();
    Record record;
    record.scheduled_s = job.spec.arrival_s;
    record.sent_s = job.sent_s;
    record.result = client.Send(job.spec, options_.model, &cancel_);
    (record.result.ok ? done_ : failed_).fetch_add(1, std::memory_order_relaxed);
    lock.lock();
    records_.push_back(std::move(record));
    --in_flight_;
    done_cv_.notify_all();
  }
}

void Runner::ProgressLoop(std::stop_token stop) {
  std::mutex m;
  std::condition_variable_any cv;
  const auto interval = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(options_.progress_interval_s));
  auto next = Clock::now() + interval;
  uint64_t last_done = 0;
  while (true) {
    std::unique_lock lock(m);
    if (cv.wait_until(lock, stop, next, [] { return false; }) || stop.stop_requested()) return;
    next += interval;
    const uint64_t done = done_.load() + failed_.load();
    int in_flight;
    {
      std::lock_guard g(mu_);
      in_flight = in_flight_;
    }
    std::fprintf(stderr,
                 "loadgen: %6.1fs sent %llu done %llu failed %llu in-flight %d  %.1f req/s\n",
                 Elapsed(), static_cast<unsigned long long>(sent_.load()),
                 static_cast<unsigned long long>(done_.load()),
                 static_cast<unsigned long long>(failed_.load()), in_flight,
                 static_cast<double>(done - last_done) / options_.progress_interval_s);
    last_done = done;
  }
}

absl::StatusOr<json> Runner::Run(RequestSource& source) {
  ASSIGN_OR_RETURN(const std::vector<EngineCounters> before, ScrapeEngines());

  start_ = Clock::now();
  std::jthread progress;
  if (options_.progress_interval_s > 0) {
    progress = std::jthread([this](std::stop_token st) { ProgressLoop(st); });
  }

  uint64_t dispatched = 0;
  double dispatch_end_s = 0;
  while (!stop_.load()) {
    if (options_.num_requests > 0 && dispatched >= options_.num_requests) break;
    std::optional<RequestSpec> spec = source.Next();
    if (!spec) break;
    if (options_.duration_s > 0 && spec->arrival_s >= options_.duration_s) break;
    // Sleep until the arrival time in short slices, so a stop request is seen promptly.
    const auto due = start_ + std::chrono::duration_cast<Clock::duration>(
                                  std::chrono::duration<double>(spec->arrival_s));
    while (!stop_.load() && Clock::now() < due) {
      std::this_thread::sleep_until(std::min(due, Clock::now() + std::chrono::milliseconds(50)));
    }
    if (stop_.load()) break;
    std::unique_lock lock(mu_);
    if (in_flight_ >= options_.concurrency_limit) {
      ++dispatch_delayed_;
      done_cv_.wait(lock, [&] { return in_flight_ < options_.concurrency_limit || stop_.load(); });
      if (stop_.load()) break;
    }
    max_dispatch_lag_s_ = std::max(max_dispatch_lag_s_, Elapsed() - spec->arrival_s);
    queue_.push_back(Job{std::move(*spec), 0});
    ++in_flight_;
    if (idle_workers_ < static_cast<int>(queue_.size()) &&
        static_cast<int>(workers_.size()) < options_.concurrency_limit) {
      workers_.emplace_back([this] { WorkerLoop(); });
    }
    lock.unlock();
    work_cv_.notify_one();
    ++dispatched;
    sent_.fetch_add(1, std::memory_order_relaxed);
  }
  dispatch_end_s = Elapsed();
  {
    std::unique_lock lock(mu_);
    // Requests end by themselves (each has a timeout); a wakeup every 100 ms notices a
    // cancel, which makes them end sooner.
    while (in_flight_ > 0) done_cv_.wait_for(lock, std::chrono::milliseconds(100));
    closing_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  const double wall_s = Elapsed();
  if (progress.joinable()) {
    progress.request_stop();
    progress.join();
  }

  std::vector<absl::StatusOr<EngineCounters>> after;
  for (const HttpUrl& url : options_.engine_metrics) {
    absl::StatusOr<std::string> body = HttpGet(url, 5);
    after.push_back(body.ok() ? ParseEngineCounters(*body)
                              : absl::StatusOr<EngineCounters>(body.status()));
  }
  return BuildReport(source, dispatch_end_s, wall_s, before, after);
}

json Runner::BuildReport(const RequestSource& source, double dispatch_s, double wall_s,
                         const std::vector<EngineCounters>& before,
                         const std::vector<absl::StatusOr<EngineCounters>>& after) {
  std::lock_guard lock(mu_);
  std::vector<double> ttft;
  std::vector<double> e2e;
  std::vector<double> lag;
  std::map<std::string, uint64_t> errors;
  std::map<std::string, uint64_t> pods;
  json error_samples = json::array();
  uint64_t ok = 0;
  uint64_t output_tokens = 0;
  uint64_t usage_prompt = 0;
  uint64_t usage_cached = 0;
  uint64_t with_usage = 0;
  for (const Record& rec : records_) {
    const RequestResult& r = rec.result;
    lag.push_back(rec.sent_s - rec.scheduled_s);
    if (!r.target_pod.empty()) ++pods[r.target_pod];
    if (!r.ok) {
      ++errors[r.error_kind];
      if (error_samples.size() < 5) {
        error_samples.push_back(fmt::format("{}: {}", r.error_kind, r.error_message));
      }
      continue;
    }
    ++ok;
    if (r.ttft_s >= 0) ttft.push_back(r.ttft_s);
    e2e.push_back(r.e2e_s);
    output_tokens += static_cast<uint64_t>(r.output_tokens);
    if (r.prompt_tokens >= 0 && r.cached_tokens >= 0) {
      ++with_usage;
      usage_prompt += static_cast<uint64_t>(r.prompt_tokens);
      usage_cached += static_cast<uint64_t>(r.cached_tokens);
    }
  }

  json engines = json::array();
  EngineCounters sum_before;
  EngineCounters sum_after;
  bool engines_ok = !options_.engine_metrics.empty();
  // Time totals summed over the engines; nullopt once one engine lacks them.
  const auto add = [](std::optional<TimeTotals>& sum, const std::optional<TimeTotals>& one) {
    if (!sum.has_value() || !one.has_value()) {
      sum.reset();
      return;
    }
    sum->seconds += one->seconds;
    sum->count += one->count;
  };
  for (EngineCounters* sum : {&sum_before, &sum_after}) {
    sum->queue = TimeTotals{};
    sum->prefill = TimeTotals{};
  }
  for (size_t i = 0; i < options_.engine_metrics.size(); ++i) {
    const HttpUrl& url = options_.engine_metrics[i];
    json e = {{"url", url.Origin() + url.path}};
    if (!after[i].ok()) {
      e["error"] = std::string(after[i].status().message());
      engines_ok = false;
    } else {
      const double q = after[i]->queries - before[i].queries;
      const double h = after[i]->hits - before[i].hits;
      e["queries"] = q;
      e["hits"] = h;
      std::optional<double> rate = HitRateDelta(before[i], *after[i]);
      e["hit_rate"] = rate ? json(*rate) : json(nullptr);
      if (q < 0 || h < 0) engines_ok = false;  // restarted during the run
      sum_before.queries += before[i].queries;
      sum_before.hits += before[i].hits;
      sum_after.queries += after[i]->queries;
      sum_after.hits += after[i]->hits;
      add(sum_before.queue, before[i].queue);
      add(sum_before.prefill, before[i].prefill);
      add(sum_after.queue, after[i]->queue);
      add(sum_after.prefill, after[i]->prefill);
    }
    engines.push_back(std::move(e));
  }
  std::optional<double> hit_rate =
      engines_ok ? HitRateDelta(sum_before, sum_after) : std::optional<double>();
  const auto mean_ms = [&](const std::optional<TimeTotals> EngineCounters::*field) {
    const std::optional<double> mean =
        engines_ok ? MeanDelta(sum_before.*field, sum_after.*field) : std::optional<double>();
    return mean ? json(*mean * 1e3) : json(nullptr);
  };

  const double elapsed = std::max(wall_s, 1e-9);
  json report = {
      {"target", options_.target.Origin()},
      {"model", options_.model},
      {"routing_strategy", options_.routing_strategy},
      {"workload", source.Describe()},
      {"duration_s", wall_s},
      {"dispatch_s", dispatch_s},
      {"requests",
       {{"sent", records_.size()},
        {"ok", ok},
        {"failed", records_.size() - ok},
        {"dispatch_delayed", dispatch_delayed_},
        {"max_dispatch_lag_ms", max_dispatch_lag_s_ * 1e3},
        {"interrupted", stop_.load()}}},
      {"throughput",
       {{"req_per_s", static_cast<double>(ok) / elapsed},
        {"output_tokens_per_s", static_cast<double>(output_tokens) / elapsed},
        {"offered_req_per_s",
         dispatch_s > 0 ? static_cast<double>(records_.size()) / dispatch_s : 0.0}}},
      {"ttft_ms", SummaryToJson(Summarize(std::move(ttft)), 1e3)},
      {"e2e_ms", SummaryToJson(Summarize(std::move(e2e)), 1e3)},
      {"dispatch_lag_ms", SummaryToJson(Summarize(std::move(lag)), 1e3)},
      {"tokens",
       {{"output", output_tokens},
        {"prompt", usage_prompt},
        {"cached", usage_cached},
        {"requests_with_usage", with_usage}}},
      {"usage_hit_rate", usage_prompt > 0 ? json(static_cast<double>(usage_cached) /
                                                 static_cast<double>(usage_prompt))
                                          : json(nullptr)},
      {"errors", errors},
      {"error_samples", error_samples},
      {"pods", pods},
      {"engine_prefix_cache",
       {{"hit_rate", hit_rate ? json(*hit_rate) : json(nullptr)},
        {"queries", sum_after.queries - sum_before.queries},
        {"hits", sum_after.hits - sum_before.hits},
        {"engines", engines}}},
      // Where a request's time to first token went inside the engines (means over the run).
      {"engine_timing",
       {{"queue_ms_mean", mean_ms(&EngineCounters::queue)},
        {"prefill_ms_mean", mean_ms(&EngineCounters::prefill)}}},
  };
  return report;
}

std::string Runner::RecordsJsonLines() const {
  std::vector<const Record*> ordered;
  {
    std::lock_guard lock(mu_);
    for (const Record& rec : records_) ordered.push_back(&rec);
  }
  std::stable_sort(ordered.begin(), ordered.end(), [](const Record* a, const Record* b) {
    return a->scheduled_s < b->scheduled_s;
  });
  std::string out;
  for (const Record* rec : ordered) {
    const RequestResult& r = rec->result;
    json line = {{"arrival_s", rec->scheduled_s},
                 {"sent_s", rec->sent_s},
                 {"ok", r.ok},
                 {"pod", r.target_pod},
                 {"ttft_ms", r.ttft_s >= 0 ? json(r.ttft_s * 1e3) : json(nullptr)},
                 {"e2e_ms", r.e2e_s * 1e3},
                 {"prompt_tokens", r.prompt_tokens >= 0 ? json(r.prompt_tokens) : json(nullptr)},
                 {"cached_tokens", r.cached_tokens >= 0 ? json(r.cached_tokens) : json(nullptr)},
                 {"output_tokens", r.output_tokens}};
    if (!r.ok) line["error"] = r.error_kind;
    out += line.dump();
    out += '\n';
  }
  return out;
}

std::string ReportToText(const json& r) {
  std::string out;
  auto line = [&](const std::string& s) {
    out += s;
    out += '\n';
  };
  auto rate_text = [](const json& v) {
    return v.is_number() ? fmt::format("{:.1f}%", v.get<double>() * 100) : std::string("n/a");
  };
  auto summary = [](const json& s) {
    return fmt::format("p50 {:.1f}  p90 {:.1f}  p99 {:.1f}  mean {:.1f}  max {:.1f}  (n={})",
                       s["p50"].get<double>(), s["p90"].get<double>(), s["p99"].get<double>(),
                       s["mean"].get<double>(), s["max"].get<double>(), s["count"].get<uint64_t>());
  };
  const json& req = r["requests"];
  line(fmt::format("target       {}  model {}  routing-strategy {}", r["target"].get<std::string>(),
                   r["model"].get<std::string>(),
                   r["routing_strategy"].get<std::string>().empty()
                       ? "-"
                       : r["routing_strategy"].get<std::string>()));
  line(fmt::format("workload     {}", r["workload"].dump()));
  line(fmt::format("requests     sent {}  ok {}  failed {}  dispatch-delayed {}{}",
                   req["sent"].get<uint64_t>(), req["ok"].get<uint64_t>(),
                   req["failed"].get<uint64_t>(), req["dispatch_delayed"].get<uint64_t>(),
                   req["interrupted"].get<bool>() ? "  (interrupted)" : ""));
  line(fmt::format("duration     {:.2f} s", r["duration_s"].get<double>()));
  line(fmt::format("throughput   {:.2f} req/s  {:.1f} output tok/s  (offered {:.2f} req/s)",
                   r["throughput"]["req_per_s"].get<double>(),
                   r["throughput"]["output_tokens_per_s"].get<double>(),
                   r["throughput"]["offered_req_per_s"].get<double>()));
  line("TTFT ms      " + summary(r["ttft_ms"]));
  line("E2E ms       " + summary(r["e2e_ms"]));
  const json& pc = r["engine_prefix_cache"];
  line(fmt::format("prefix cache engines {} ({:.0f}/{:.0f} tokens)  usage {}",
                   rate_text(pc["hit_rate"]), pc["hits"].get<double>(), pc["queries"].get<double>(),
                   rate_text(r["usage_hit_rate"])));
  const json& timing = r["engine_timing"];
  const auto ms_text = [](const json& v) {
    return v.is_number() ? fmt::format("{:.1f} ms", v.get<double>()) : std::string("n/a");
  };
  line(fmt::format("engine time  queue mean {}  prefill mean {}", ms_text(timing["queue_ms_mean"]),
                   ms_text(timing["prefill_ms_mean"])));
  for (const json& e : pc["engines"]) {
    line(fmt::format(
        "  {}  {}", e["url"].get<std::string>(),
        e.contains("error") ? e["error"].get<std::string>() : rate_text(e["hit_rate"])));
  }
  if (!r["pods"].empty()) {
    std::string pods;
    for (const auto& [pod, n] : r["pods"].items()) {
      pods += fmt::format("  {} {}", pod, n.get<uint64_t>());
    }
    line("pods        " + pods);
  }
  if (!r["errors"].empty()) {
    std::string errors;
    for (const auto& [kind, n] : r["errors"].items()) {
      errors += fmt::format("  {} {}", kind, n.get<uint64_t>());
    }
    line("errors      " + errors);
    for (const json& s : r["error_samples"]) line("  e.g. " + s.get<std::string>());
  }
  return out;
}

}  // namespace aibrix::loadgen
