#include "aibrix/metrics/scraper.h"

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <future>

#include "aibrix/common/strings.h"
#include "fmt/format.h"

namespace aibrix::metrics {

namespace asio = boost::asio;

struct Scraper::Loop {
  explicit Loop(asio::io_context& io) : timer(io), guard(asio::make_work_guard(io)) {}
  asio::steady_timer timer;
  asio::executor_work_guard<asio::io_context::executor_type> guard;
};

// One pod's scrape state. Scraper thread only.
struct Scraper::PodEntry {
  PodEntry(uint64_t id, CounterRateOptions drain_options) : id(id), drain(drain_options) {}
  const uint64_t id;  // tells a fetch of this entry from one of a removed entry of the key
  store::PodRef pod;
  // The scrape in flight.
  bool in_flight = false;
  TimePoint started{};
  size_t pending = 0;
  std::vector<std::shared_ptr<Fetch>> fetches;  // one per port, reused by every scrape
  std::string error;                            // the first failure's reason, and its detail
  std::string error_detail;
  // Scheduling.
  TimePoint next_attempt{};
  int failures = 0;
  // Derived rates.
  struct Throughput {
    CounterRate prompt;
    CounterRate generation;
  };
  absl::flat_hash_map<std::string, Throughput> throughput;  // by model
  CounterRate drain;
  // llm_engine_metrics_query_fail series of this pod, by reason (removed with the pod).
  absl::flat_hash_map<std::string, prometheus::Counter*> fail_counters;
};

// One port of a pod: runs its scrapes one after the other (the client decodes each body
// straight into body_, whose memory the next scrape reuses) and hands each outcome back to
// the scraper on its thread.
class Scraper::Fetch : public http::ResponseObserver,
                       public std::enable_shared_from_this<Scraper::Fetch> {
 public:
  Fetch(Scraper& scraper, std::string key, uint64_t id, size_t port, size_t max_body)
      : scraper_(scraper), key_(std::move(key)), id_(id), port_(port), max_body_(max_body) {}

  // Starts a scrape (none may be in flight).
  void Start(http::Client& client, asio::io_context& io, http::ClientRequest request) {
    reason_.clear();
    detail_.clear();
    body_.clear();
    call_ = client.Start(io, std::move(request), shared_from_this());
  }
  // Ends the scrape in flight, if any (its FetchDone runs before this returns).
  void Cancel() {
    if (auto call = call_) call->Cancel();
  }

  std::string* BodyTarget() override { return &body_; }
  void OnHead(int status, const http::Headers&) override {
    if (status == 200) return;
    reason_ = status >= 300 && status < 400 ? "redirect" : "status";
    detail_ = fmt::format("HTTP {}", status);
    call_->Cancel();
  }
  void OnBody(std::string_view) override {  // already appended to body_
    if (body_.size() > max_body_) {
      reason_ = "body_too_large";
      detail_ = fmt::format("body over {} bytes", max_body_);
      call_->Cancel();
      return;
    }
    call_->ReadMore();
  }
  void OnEnd(http::ClientError error, std::string_view detail) override {
    if (reason_.empty() && error != http::ClientError::kNone) {
      reason_ = std::string(http::ClientErrorName(error));
      detail_ = std::string(detail);
    }
    if (!reason_.empty()) std::string().swap(body_);  // a failed body's memory is not kept
    call_.reset();
    scraper_.FetchDone(key_, id_, port_, *this);
  }

  // The last scrape's outcome: why it failed (empty if it did not), and the body.
  const std::string& reason() const { return reason_; }
  const std::string& detail() const { return detail_; }
  const std::string& body() const { return body_; }

 private:
  Scraper& scraper_;
  const std::string key_;
  const uint64_t id_;
  const size_t port_;
  const size_t max_body_;
  std::shared_ptr<http::ClientCall> call_;
  std::string reason_;
  std::string detail_;
  std::string body_;
};

namespace {

http::ClientOptions ClientOptionsFor(const ScraperOptions& options) {
  http::ClientOptions client;
  client.connect_timeout = options.connect_timeout;
  client.first_byte_timeout = options.read_timeout;
  client.idle_timeout = options.read_timeout;
  client.total_timeout = options.connect_timeout + options.read_timeout;
  client.max_idle_per_address = 4;
  // A vLLM body is tens of KB: read it in a few large reads, not hundreds of 512-byte ones.
  client.read_buffer_bytes = 64 << 10;
  return client;
}

}  // namespace

Scraper::Scraper(store::Store& store, const EngineMetricRegistry& registry, ScraperOptions options,
                 prometheus::Registry& metrics)
    : store_(store),
      registry_(registry),
      options_(options),
      clock_(*options.clock),
      prompt_rate_def_(registry.Find("avg_prompt_throughput_toks_per_s")),
      generation_rate_def_(registry.Find("avg_generation_throughput_toks_per_s")),
      scrapes_(prometheus::BuildCounter()
                   .Name("aibrix_cache_metric_scrapes_total")
                   .Help("Engine /metrics scrapes by result: ok, or why the scrape failed")
                   .Register(metrics)),
      query_fail_(prometheus::BuildCounter()
                      .Name("llm_engine_metrics_query_fail")
                      .Help("Failed engine /metrics scrapes per pod, by reason")
                      .Register(metrics)),
      scrapes_ok_(scrapes_.Add({{"result", "ok"}})),
      bad_lines_(prometheus::BuildCounter()
                     .Name("aibrix_cache_metric_bad_lines_total")
                     .Help("Lines of engine /metrics bodies that did not parse (skipped)")
                     .Register(metrics)
                     .Add({})),
      client_(ClientOptionsFor(options)),
      log_limiter_(5, std::chrono::seconds(10)) {}

Scraper::~Scraper() { Stop(); }

absl::Status Scraper::Start() {
  if (thread_.joinable()) return absl::FailedPreconditionError("the scraper is already running");
  io_ = std::make_unique<asio::io_context>(1);
  stopping_ = false;
  loop_ = std::make_unique<Loop>(*io_);
  asio::post(*io_, [this] { Tick(); });
  thread_ = std::thread([this] { io_->run(); });
  return absl::OkStatus();
}

void Scraper::Stop() {
  if (!thread_.joinable()) return;
  std::promise<void> stopped;
  asio::post(*io_, [this, &stopped] {
    stopping_ = true;  // a tick already queued behind this must not re-arm the timer
    loop_->timer.cancel();
    for (auto& [key, entry] : pods_) Release(*entry);
    pods_.clear();
    tracked_.store(0);
    loop_->guard.reset();
    stopped.set_value();
  });
  stopped.get_future().wait();
  thread_.join();  // returns once the cancelled calls have ended
  loop_.reset();
  io_.reset();
}

const Scraper::EngineBindings& Scraper::BindingsFor(const std::string& engine) {
  auto it = bindings_.find(engine);
  if (it == bindings_.end()) {
    EngineBindings entry{registry_.BindingsFor(engine), {}};
    entry.names = BoundNames(entry.bindings);
    it = bindings_.emplace(engine, std::move(entry)).first;
  }
  return it->second;
}

void Scraper::Release(PodEntry& entry) {
  // Cancelling ends each call at once (OnEnd runs inside Cancel); with in_flight cleared
  // FetchDone ignores them.
  entry.in_flight = false;
  for (const auto& fetch : entry.fetches) fetch->Cancel();
  for (auto& [reason, counter] : entry.fail_counters) query_fail_.Remove(counter);
  entry.fail_counters.clear();
}

void Scraper::Tick() {
  if (stopping_) return;
  const TimePoint now = clock_.Now();
  const store::SnapshotRef snap = store_.snapshot();
  for (auto it = pods_.begin(); it != pods_.end();) {
    const store::PodRef* found = snap->pods.Find(it->first);
    if (found == nullptr || !(*found)->ready || (*found)->state != it->second->pod->state) {
      Release(*it->second);
      pods_.erase(it++);
    } else {
      ++it;
    }
  }
  snap->pods.ForEach([&](const store::PodRef& pod) {
    if (!pod->ready) return;
    const std::string& key = pod->key;
    auto& slot = pods_[key];
    if (!slot) slot = std::make_unique<PodEntry>(next_id_++, options_.drain_rate);
    PodEntry& entry = *slot;
    entry.pod = pod;
    UpdateDrainRate(entry, now);
    if (!entry.in_flight && now >= entry.next_attempt) StartScrape(key, entry, now);
  });
  tracked_.store(pods_.size(), std::memory_order_relaxed);
  // Idle keep-alive connections of pods that went away are closed now and then.
  if (ticks_.fetch_add(1, std::memory_order_relaxed) % 64 == 63) client_.Sweep();
  loop_->timer.expires_after(options_.interval);
  loop_->timer.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) Tick();
  });
}

void Scraper::UpdateDrainRate(PodEntry& entry, TimePoint now) {
  entry.drain.Observe(now, static_cast<double>(entry.pod->state->completed()));
  if (auto rate = entry.drain.Rate()) {
    store::MetricValue value;
    value.value = store::SimpleMetric{*rate, {}};
    value.scraped_at = now;
    entry.pod->state->SetMetric(kDrainRateMetric, std::move(value));
  }
}

void Scraper::StartScrape(const std::string& key, PodEntry& entry, TimePoint now) {
  const store::PodObject& object = entry.pod->object;
  const std::string engine = store::PodEngine(object);
  entry.started = now;
  entry.error.clear();
  entry.error_detail.clear();
  if (!registry_.Knows(engine)) {
    Fail(key, entry, "unsupported_engine", fmt::format("engine '{}' is not known", engine));
    return;
  }
  const int base = store::PodMetricPort(object);
  const int ranks = std::min(store::PodDataParallelSize(object), 65536 - base);
  entry.in_flight = true;
  entry.pending = static_cast<size_t>(ranks);
  entry.fetches.resize(static_cast<size_t>(ranks));
  const std::string target(EngineMetricRegistry::MetricsPath(engine));
  for (int rank = 0; rank < ranks; ++rank) {
    http::ClientRequest request;
    request.method = "GET";
    request.host = object.ip;
    request.port = static_cast<uint16_t>(base + rank);
    request.target = target;
    request.headers.Add("Accept", "text/plain;version=0.0.4");
    auto& fetch = entry.fetches[static_cast<size_t>(rank)];
    if (!fetch) {
      fetch = std::make_shared<Fetch>(*this, key, entry.id, static_cast<size_t>(rank),
                                      options_.max_body_bytes);
    }
    fetch->Start(client_, *io_, std::move(request));
  }
}

void Scraper::FetchDone(const std::string& key, uint64_t id, size_t port, const Fetch& fetch) {
  auto it = pods_.find(key);
  if (it == pods_.end() || it->second->id != id || !it->second->in_flight) return;
  PodEntry& entry = *it->second;
  if (!fetch.reason().empty() && entry.error.empty()) {
    entry.error = fetch.reason();
    entry.error_detail =
        fmt::format("port {}: {}", store::PodMetricPort(entry.pod->object) + port, fetch.detail());
  }
  if (--entry.pending > 0) return;
  entry.in_flight = false;
  if (!entry.error.empty()) {
    Fail(key, entry, entry.error, entry.error_detail);
  } else {
    Complete(key, entry);
  }
}

void Scraper::Complete(const std::string& key, PodEntry& entry) {
  const store::Pod& pod = *entry.pod;
  const EngineBindings& bindings = BindingsFor(store::PodEngine(pod.object));
  ParseOptions parse;
  parse.max_bytes = options_.max_body_bytes;
  parse.max_series = options_.max_series;
  parse.only_families = &bindings.names;  // the rest of the body is skipped
  std::vector<ParsedBody> parsed;
  parsed.reserve(entry.fetches.size());
  for (const auto& fetch : entry.fetches) {
    auto one = ParseExposition(fetch->body(), parse);
    if (!one.ok()) {
      Fail(key, entry, "parse", std::string(common::AsStd(one.status().message())));
      return;
    }
    if (one->bad_lines() > 0) {
      bad_lines_.Increment(static_cast<double>(one->bad_lines()));
      common::WarnLimited(log_limiter_, "metrics", "pod {}: {} bad lines in /metrics (first: {})",
                          key, one->bad_lines(), one->first_error());
    }
    if (one->dropped_series() > 0) {
      common::WarnLimited(log_limiter_, "metrics", "pod {}: {} series over the cap of {} dropped",
                          key, one->dropped_series(), options_.max_series);
    }
    parsed.push_back(std::move(*one));
  }
  Extractor extractor(bindings.bindings, pod.model);
  for (const ParsedBody& body : parsed) extractor.Add(body);
  const TimePoint now = clock_.Now();
  Extracted out = extractor.Finish(now);
  DeriveThroughput(entry, out, now);

  std::vector<store::PodState::MetricUpdate> pod_values;
  pod_values.reserve(out.pod.size());
  for (auto& [def, value] : out.pod) pod_values.push_back({{}, def->name, std::move(value)});
  std::vector<store::PodState::MetricUpdate> model_values;
  model_values.reserve(out.model.size());
  for (auto& v : out.model) model_values.push_back({v.model, v.def->name, std::move(v.value)});
  pod.state->SetMetrics(pod_values, model_values);
  scrapes_ok_.Increment();
  entry.failures = 0;
  entry.next_attempt = entry.started + options_.interval;
}

void Scraper::DeriveThroughput(PodEntry& entry, Extracted& out, TimePoint now) {
  if (prompt_rate_def_ == nullptr || generation_rate_def_ == nullptr) return;
  // Models whose engine reported the rate itself (vLLM V0, SGLang) keep the engine's.
  absl::flat_hash_map<std::string, std::pair<bool, bool>> seen;  // model -> has prompt/gen rate
  for (const ExtractedModelValue& v : out.model) {
    const std::string_view name = v.def->name;
    auto& has = seen[v.model];
    if (v.def == prompt_rate_def_) has.first = true;
    if (v.def == generation_rate_def_) has.second = true;
    if (name == "prompt_tokens_total")
      entry.throughput[v.model].prompt.Observe(now, v.value.Simple());
    if (name == "generation_tokens_total") {
      entry.throughput[v.model].generation.Observe(now, v.value.Simple());
    }
  }
  for (auto it = entry.throughput.begin(); it != entry.throughput.end();) {
    auto found = seen.find(it->first);
    if (found == seen.end()) {  // the model's counters are gone: so is their history
      entry.throughput.erase(it++);
      continue;
    }
    const auto add = [&](const EngineMetricDef* def, const CounterRate& rate) {
      auto value = rate.Rate();
      if (!value) return;
      store::MetricValue metric;
      metric.value = store::SimpleMetric{*value, {}};
      metric.scraped_at = now;
      out.model.push_back(ExtractedModelValue{it->first, def, std::move(metric)});
    };
    if (!found->second.first) add(prompt_rate_def_, it->second.prompt);
    if (!found->second.second) add(generation_rate_def_, it->second.generation);
    ++it;
  }
}

void Scraper::Fail(const std::string& key, PodEntry& entry, const std::string& reason,
                   const std::string& detail) {
  entry.in_flight = false;
  ++entry.failures;
  const int doublings = std::min(entry.failures - 1, 20);
  const auto backoff = std::min<std::chrono::milliseconds>(
      options_.backoff_max, options_.backoff_initial * (1LL << doublings));
  std::uniform_int_distribution<int64_t> jitter(backoff.count() / 2, backoff.count());
  const std::chrono::milliseconds wait(jitter(jitter_));
  entry.next_attempt = clock_.Now() + wait;
  scrapes_.Add({{"result", reason}}).Increment();
  auto& counter = entry.fail_counters[reason];
  if (counter == nullptr) {
    counter = &query_fail_.Add(
        {{"namespace", entry.pod->ns()}, {"pod", entry.pod->name()}, {"reason", reason}});
  }
  counter->Increment();
  common::WarnLimited(
      log_limiter_, "metrics",
      "pod {}: metrics scrape failed ({}: {}); failure {} in a row, next try in {} ms", key, reason,
      detail, entry.failures, wait.count());
}

}  // namespace aibrix::metrics
