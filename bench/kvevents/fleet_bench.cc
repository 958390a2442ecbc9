// fleet-bench: the aibrix-cache service in this process, fed KV events by an in-process Fleet
// of N simulated vLLM engines (default 1,000). Phases (each bounded in time; a phase that
// cannot finish prints its figure with the value reached and a "note:" line), in this order:
//  * subscribe: pods_subscribed (pods whose SUB is connected, from /metrics'
//    aibrix_kvcache_zmq_connection_status) and subscribe_all_s (time until all are).
//  * flood: engine 1 sends --flood-bytes of 60 MB BlockRemoved messages (1-byte hashes);
//    flood_rss_mb = this process's RSS afterwards (service + fleet).
//  * ingest: the fleet publishes as fast as it can; fleet_ingest_blocks_per_s (blocks stored
//    + removed by the exact index, aibrix_prefix_index_blocks_total) and
//    query_p99_us_during_ingest (PrefixMatcher::Match of 8k-token prompts the fleet stores).
//  * hostile: engine 0 builds a chain of --hostile-chain blocks, then streams (remove head,
//    re-store head) pairs; hostile_api_p99_ms of GET /healthz and GET /cache/pods over HTTP.
//  * shutdown: shutdown_1000_pods_ms = Service::Stop with every pod subscribed.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <future>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "aibrix/common/logging.h"
#include "aibrix/discovery/static_config.h"
#include "aibrix/kvpublish/fleet.h"
#include "aibrix/metrics/exposition.h"
#include "aibrix/prefix/match.h"
#include "aibrix/server/service.h"
#include "bench/common/figures.h"
#include "fmt/format.h"
#include "httplib.h"

namespace {

using Clock = std::chrono::steady_clock;
using aibrix::bench::PrintFigure;
namespace kvpublish = aibrix::kvpublish;
namespace prefix = aibrix::prefix;

struct Flags {
  int engines = 1000;
  std::string phase = "all";
  double phase_seconds = 10;
  double subscribe_timeout_s = 60;
  double rate = 20000;  // blocks/s outside the ingest phase
  int min_blocks_per_event = 16;
  int max_blocks_per_event = 128;
  int batches_per_turn = 1;
  size_t replay_bytes = 256u << 10;  // per engine
  int64_t hostile_chain = 1'000'000;
  uint64_t flood_bytes = uint64_t{1} << 30;
  size_t flood_message_bytes = 60'000'000;
  std::string first_address;  // default: derived from the pid
  std::string log_level = "error";
};

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  // Nearest rank: with few samples p99 is the maximum, never the minimum.
  const auto rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

double StatusKb(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(std::string(key).size()));
  }
  return 0;
}

// Runs `fn` on a thread and waits up to `timeout`; false (thread left running) on timeout.
bool RunBounded(std::function<void()> fn, double timeout_s) {
  auto task = std::make_shared<std::packaged_task<void()>>(std::move(fn));
  auto done = task->get_future();
  std::thread([task] { (*task)(); }).detach();
  return done.wait_for(std::chrono::duration<double>(timeout_s)) == std::future_status::ready;
}

// One number out of the service's parsed /metrics (0 when no series matches).
double Sum(const aibrix::metrics::ParsedBody& body, std::string_view name,
           std::initializer_list<aibrix::metrics::Label> with = {}) {
  return aibrix::metrics::SumSeries(body, name, with).value_or(0);
}

// The same out of the /metrics text, parsed by the service's exposition parser.
double SumSeries(const std::string& text, std::string_view name,
                 std::initializer_list<aibrix::metrics::Label> with = {}) {
  auto body = aibrix::metrics::ParseExposition(text);
  return body.ok() ? Sum(*body, name, with) : 0;
}

// Pods with at least one connected SUB (aibrix_kvcache_zmq_connection_status == 1).
size_t ConnectedPods(const std::string& text) {
  auto body = aibrix::metrics::ParseExposition(text);
  if (!body.ok()) return 0;
  const aibrix::metrics::Family* status = body->Find("aibrix_kvcache_zmq_connection_status");
  if (status == nullptr) return 0;
  std::set<std::string_view> pods;
  for (const auto& series : status->series) {
    if (series.value < 1) continue;
    if (auto pod = body->LabelValue(series, "pod_key")) pods.insert(*pod);
  }
  return pods.size();
}

class Bench {
 public:
  explicit Bench(Flags flags) : flags_(std::move(flags)) {}

  bool Wants(const std::string& phase) const {
    return flags_.phase == "all" || flags_.phase == phase;
  }

  int Run() {
    aibrix::common::SetLogLevel(flags_.log_level);
    // The service's sockets and connections need descriptors too (two per pod and rank in
    // today's subscriber, each with a mailbox), plus HTTP clients.
    if (auto st = kvpublish::EnsureFdLimit(static_cast<uint64_t>(flags_.engines) * 12 + 1024);
        !st.ok()) {
      std::fprintf(stderr, "fleet-bench: %s\n", std::string(st.message()).c_str());
      return 1;
    }
    kvpublish::FleetOptions fo;
    fo.engines = flags_.engines;
    fo.first_address = flags_.first_address.empty()
                           ? fmt::format("127.{}.1.1", 100 + getpid() % 120)
                           : flags_.first_address;
    fo.blocks_per_s = flags_.rate;
    fo.batches_per_turn = flags_.batches_per_turn;
    fo.buffer_bytes = flags_.replay_bytes;
    fo.workload.seed = 2024;
    // Prefill-sized events: a vLLM step with chunked prefill caches up to 2,048 tokens of a
    // request (128 blocks) at once, several requests per step.
    fo.workload.min_blocks_per_event = flags_.min_blocks_per_event;
    fo.workload.max_blocks_per_event = flags_.max_blocks_per_event;
    fo.workload.capacity_blocks = 16384;
    fo.fault.hostile_chain_blocks = flags_.hostile_chain;
    fo.fault.huge_message_bytes = flags_.flood_message_bytes;
    fo.fault.huge_total_bytes = flags_.flood_bytes;
    fleet_ = std::make_unique<kvpublish::Fleet>(fo);
    if (auto st = fleet_->Start(); !st.ok()) {
      std::fprintf(stderr, "fleet-bench: %s\n", std::string(st.message()).c_str());
      return 1;
    }
    config_path_ = fmt::format("/tmp/fleet-bench-{}.yaml", getpid());
    if (auto st = fleet_->WriteDiscoveryFile(config_path_); !st.ok()) {
      std::fprintf(stderr, "fleet-bench: %s\n", std::string(st.message()).c_str());
      return 1;
    }
    auto config = aibrix::discovery::LoadStaticConfig(config_path_);
    if (!config.ok()) {
      std::fprintf(stderr, "fleet-bench: %s\n", config.status().ToString().c_str());
      return 1;
    }
    for (const auto& pod : aibrix::discovery::StaticPods(*config)) pod_keys_.push_back(pod.Key());
    std::printf("fleet: %d engines on %s.. (ports %d/%d), config %s\n", flags_.engines,
                fo.first_address.c_str(), fleet_->engines()[0].pub_port,
                fleet_->engines()[0].replay_port, config_path_.c_str());

    aibrix::server::ServiceConfig sc;
    sc.http_addr = "127.0.0.1:0";
    sc.extproc_addr = "";
    sc.static_config = config_path_;
    sc.kv_event_sync = true;
    sc.io_threads = 2;
    sc.log_level = flags_.log_level;
    sc.shutdown_delay_ms = 0;
    service_ = std::make_unique<aibrix::server::Service>(sc);
    absl::Status started;
    const auto start_begin = Clock::now();
    if (!RunBounded([&] { started = service_->Start(); }, 60)) {
      std::printf("note: Service::Start did not return within 60 s; giving up\n");
      std::fflush(stdout);
      _exit(1);
    }
    if (!started.ok()) {
      std::fprintf(stderr, "fleet-bench: service: %s\n", started.ToString().c_str());
      return 1;
    }
    Subscribe(start_begin);
    // The flood first: its figure is the process's RSS, which must show the event path's
    // budget holding, not what the later phases leave (the index after the ingest, the
    // hostile chain, the fleet's filled replay buffers).
    if (Wants("flood")) Flood();
    if (Wants("ingest")) Ingest();
    if (Wants("hostile")) Hostile();
    Shutdown();
    fleet_->Stop();
    std::remove(config_path_.c_str());
    return 0;
  }

 private:
  std::string Metrics() const { return service_->RenderMetrics(); }

  void Subscribe(Clock::time_point begin) {
    const auto deadline = begin + std::chrono::duration<double>(flags_.subscribe_timeout_s);
    size_t connected = 0;
    while (true) {
      connected = ConnectedPods(Metrics());
      if (connected >= static_cast<size_t>(flags_.engines) || Clock::now() >= deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    const double elapsed = Seconds(Clock::now() - begin);
    subscribed_ = connected;
    if (!Wants("subscribe")) return;
    PrintFigure("pods_subscribed", static_cast<double>(connected), "pods", 0);
    PrintFigure("subscribe_all_s", elapsed, "s", 2);
    if (connected < static_cast<size_t>(flags_.engines)) {
      std::printf(
          "note: subscribe_all_s: only %zu of %d pods connected within %.0f s (the figure is "
          "the time waited, not reached)\n",
          connected, flags_.engines, flags_.subscribe_timeout_s);
    }
  }

  void Ingest() {
    const std::string model = fleet_->options().model;
    std::vector<std::vector<uint32_t>> prompts;
    for (int p = 0; p < 16; ++p) {
      prompts.push_back(kvpublish::PromptTokens(fleet_->options().workload.seed, p, 512));
    }
    auto applied = [&] {
      const std::string text = Metrics();
      auto body = aibrix::metrics::ParseExposition(text);
      if (!body.ok()) return 0.0;
      return Sum(*body, "aibrix_prefix_index_blocks_total", {{"op", "stored"}}) +
             Sum(*body, "aibrix_prefix_index_blocks_total", {{"op", "removed"}});
    };
    const double before = applied();
    const auto fleet_before = fleet_->stats();
    fleet_->SetRate(0);
    const auto t0 = Clock::now();
    const QueryRun during = RunQueries(model, prompts, flags_.phase_seconds);
    const double after = applied();
    const double seconds = Seconds(Clock::now() - t0);
    const auto fleet_after = fleet_->stats();
    fleet_->SetRate(flags_.rate);
    // The same queries on the index as the ingest left it, the fleet back at its slow rate:
    // what the index costs, apart from the CPU the ingest takes.
    const QueryRun quiet = RunQueries(model, prompts, 2.0);
    PrintFigure("fleet_ingest_blocks_per_s", (after - before) / seconds, "blocks/s", 0);
    PrintFigure("query_p99_us_during_ingest", Percentile(during.latencies, 99), "us", 1);
    std::printf(
        "note: ingest: fleet published %.0f blocks/s (stored+removed) to %zu subscribed pods; "
        "%zu queries of 8k tokens, p50 %.1f us, %zu with a match; after the ingest, at %.0f "
        "blocks/s: p50 %.1f us, p99 %.1f us\n",
        static_cast<double>(fleet_after.blocks_stored + fleet_after.blocks_removed -
                            fleet_before.blocks_stored - fleet_before.blocks_removed) /
            seconds,
        subscribed_, during.latencies.size(), Percentile(during.latencies, 50), during.hits,
        flags_.rate, Percentile(quiet.latencies, 50), Percentile(quiet.latencies, 99));
  }

  struct QueryRun {
    std::vector<double> latencies;  // microseconds
    size_t hits = 0;
  };
  // Routing queries on this thread for `seconds`, one every 2 ms, cycling over `prompts`:
  // what a routing decision asks the index — hash the prompt once, then visit the holders of
  // its leading blocks (routing/internal.cc MatchPrefix).
  QueryRun RunQueries(const std::string& model, const std::vector<std::vector<uint32_t>>& prompts,
                      double seconds) const {
    QueryRun run;
    const prefix::PrefixMatcher& matcher = service_->matcher();
    const auto end = Clock::now() + std::chrono::duration<double>(seconds);
    for (size_t i = 0; Clock::now() < end; ++i) {
      const auto t0 = Clock::now();
      const std::vector<prefix::BlockKey> keys =
          matcher.Keys(model, "", prompts[i % prompts.size()]);
      uint32_t longest = 0;
      matcher.VisitKeys(keys,
                        [&longest](std::string_view, std::string_view, uint32_t blocks,
                                   prefix::MatchSource) { longest = std::max(longest, blocks); });
      run.latencies.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      if (longest > 0) ++run.hits;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return run;
  }

  void Hostile() {
    const auto chain = static_cast<uint64_t>(flags_.hostile_chain);
    const std::string& pod = pod_keys_[0];
    (void)fleet_->AddFault({kvpublish::FaultKind::kHostile, 0});
    // The chain first (bounded), then the index must hold it for the attack to bite.
    const auto build_deadline = Clock::now() + std::chrono::seconds(120);
    while (fleet_->stats().hostile_chain_blocks < chain && Clock::now() < build_deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    double held = 0;
    const auto index_deadline = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < index_deadline) {
      held = SumSeries(Metrics(), "aibrix_prefix_index_pod_blocks", {{"pod", pod}});
      if (held >= 0.9 * static_cast<double>(chain)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    // One client per path, each on its own thread: a slow /cache/pods must not starve the
    // /healthz samples. A request still running at the end is bounded by the 5 s timeout.
    std::vector<double> healthz, pods;
    std::atomic<int> failures{0};
    const auto end = Clock::now() + std::chrono::duration<double>(flags_.phase_seconds);
    auto poll = [&](const char* path, std::vector<double>* out) {
      httplib::Client client("127.0.0.1", service_->http_port());
      client.set_connection_timeout(5);
      client.set_read_timeout(5);
      client.set_keep_alive(true);
      while (Clock::now() < end) {
        const auto begin = Clock::now();
        auto res = client.Get(path);
        out->push_back(std::chrono::duration<double, std::milli>(Clock::now() - begin).count());
        if (!res || res->status != 200) ++failures;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    };
    std::thread a(poll, "/healthz", &healthz), b(poll, "/cache/pods", &pods);
    a.join();
    b.join();
    const auto stats = fleet_->stats();
    fleet_->ClearFaults(0);
    // The worse endpoint's p99: pooling would let many fast /healthz samples hide a few
    // /cache/pods timeouts.
    PrintFigure("hostile_api_p99_ms", std::max(Percentile(healthz, 99), Percentile(pods, 99)), "ms",
                2);
    std::printf(
        "note: hostile: chain %llu of %llu blocks published, %.0f held by the index for %s; "
        "%llu pairs streamed; p99 /healthz %.2f ms (%zu requests), /cache/pods %.2f ms (%zu "
        "requests); %d failed or timed out (5 s)\n",
        static_cast<unsigned long long>(stats.hostile_chain_blocks),
        static_cast<unsigned long long>(chain), held, pod_keys_[0].c_str(),
        static_cast<unsigned long long>(stats.hostile_pairs), Percentile(healthz, 99),
        healthz.size(), Percentile(pods, 99), pods.size(), failures.load());
    Settle(0);
  }

  // Waits (bounded) until the service has applied everything it received from `engine`'s
  // pod, so one phase's backlog does not land in the next phase's figure.
  void Settle(int engine) {
    const std::string& pod = pod_keys_[engine];
    const auto t0 = Clock::now();
    double received = 0, processed = 0;
    while (Clock::now() - t0 < std::chrono::seconds(60)) {
      const std::string text = Metrics();
      if (auto body = aibrix::metrics::ParseExposition(text); body.ok()) {
        received = Sum(*body, "aibrix_kvcache_zmq_events_received_total", {{"pod_key", pod}});
        processed = Sum(*body, "aibrix_kvcache_zmq_events_processed_total", {{"pod_key", pod}});
      }
      if (processed >= received) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    std::printf("note: settle %s: %.0f of %.0f received events applied after %.1f s%s\n",
                pod_keys_[engine].c_str(), processed, received, Seconds(Clock::now() - t0),
                processed >= received ? "" : " (gave up after 60 s)");
  }

  void Flood() {
    const double baseline_mb = StatusKb("VmRSS:") / 1024;
    const std::string& pod = pod_keys_[1];
    // A flood message arrives as one BlockRemoved event received, or, when its decoding
    // would pass the pod's queue budget, as one too_large error (dropped, the pod resynced).
    auto received = [&] {
      const std::string text = Metrics();
      return SumSeries(text, "aibrix_kvcache_zmq_events_received_total",
                       {{"pod_key", pod}, {"event_type", "BlockRemoved"}}) +
             SumSeries(text, "aibrix_kvcache_zmq_errors_total",
                       {{"pod_key", pod}, {"error_type", "too_large"}});
    };
    const double received_before = received();
    const uint64_t huge_before = fleet_->stats().huge_messages;
    const uint64_t messages =
        (flags_.flood_bytes + flags_.flood_message_bytes - 1) / flags_.flood_message_bytes;
    (void)fleet_->AddFault({kvpublish::FaultKind::kHuge, 1});
    const auto t0 = Clock::now();
    const auto send_deadline = t0 + std::chrono::seconds(120);
    while (fleet_->stats().huge_messages - huge_before < messages && Clock::now() < send_deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    const uint64_t sent = fleet_->stats().huge_messages - huge_before;
    // The engine's normal traffic also counts, so this is a lower bound on when the flood
    // has arrived.
    const auto recv_deadline = Clock::now() + std::chrono::seconds(60);
    double got = 0;
    while (Clock::now() < recv_deadline) {
      got = received() - received_before;
      if (got >= static_cast<double>(sent)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));  // let the applier finish
    const double rss_mb = StatusKb("VmRSS:") / 1024;
    PrintFigure("flood_rss_mb", rss_mb, "MB", 0);
    std::printf(
        "note: flood: %llu of %llu messages of %zu bytes sent and taken in %.1f s (%.0f "
        "BlockRemoved events or too_large drops for %s); RSS before %.0f MB, peak %.0f MB "
        "(process = service + fleet; the fleet holds one shared copy of the message)\n",
        static_cast<unsigned long long>(sent), static_cast<unsigned long long>(messages),
        flags_.flood_message_bytes, Seconds(Clock::now() - t0), got, pod_keys_[1].c_str(),
        baseline_mb, StatusKb("VmHWM:") / 1024);
  }

  void Shutdown() {
    const auto t0 = Clock::now();
    const bool done = RunBounded([this] { service_->Stop(); }, 60);
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (Wants("shutdown")) {
      PrintFigure("shutdown_1000_pods_ms", ms, "ms", 0);
      std::printf("note: shutdown: %d pods configured, %zu subscribed%s\n", flags_.engines,
                  subscribed_, done ? "" : "; Service::Stop did not finish within 60 s");
    }
    if (!done) {
      std::fflush(stdout);
      _exit(0);
    }
  }

  const Flags flags_;
  std::unique_ptr<kvpublish::Fleet> fleet_;
  std::unique_ptr<aibrix::server::Service> service_;
  std::string config_path_;
  std::vector<std::string> pod_keys_;
  size_t subscribed_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  aibrix::server::ApplyProcessSettings(argv);  // as aibrix-cache does
  Flags flags;
  CLI::App app("fleet-bench: the service fed by an in-process fleet of simulated vLLM engines");
  app.add_option("--engines", flags.engines, "Pods (simulated engines)")
      ->check(CLI::Range(2, 30000));
  app.add_option("--phase", flags.phase, "all, subscribe, ingest, hostile, flood or shutdown")
      ->check(CLI::IsMember({"all", "subscribe", "ingest", "hostile", "flood", "shutdown"}));
  app.add_option("--phase-seconds", flags.phase_seconds, "Measuring time of ingest and hostile");
  app.add_option("--subscribe-timeout", flags.subscribe_timeout_s,
                 "Longest wait for every pod to connect, in seconds");
  app.add_option("--rate", flags.rate, "Fleet blocks/s outside the ingest phase");
  app.add_option("--min-blocks-per-event", flags.min_blocks_per_event,
                 "Smallest BlockStored run the engines emit")
      ->check(CLI::Range(1, 4096));
  app.add_option("--max-blocks-per-event", flags.max_blocks_per_event,
                 "Largest BlockStored run the engines emit (a 2,048-token prefill chunk: 128)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--batches-per-turn", flags.batches_per_turn,
                 "Batches an engine publishes back to back on its turn")
      ->check(CLI::Range(1, 1024));
  app.add_option("--replay-bytes", flags.replay_bytes,
                 "Each engine's replay buffer, in bytes (the newest batch is always kept)");
  app.add_option("--hostile-chain", flags.hostile_chain, "Blocks of the hostile chain");
  app.add_option("--flood-bytes", flags.flood_bytes, "Bytes of huge messages in the flood");
  app.add_option("--flood-message-bytes", flags.flood_message_bytes, "Size of one message");
  app.add_option("--first-address", flags.first_address,
                 "Address of engine 0 in 127/8 (default 127.<100 + pid % 120>.1.1)");
  app.add_option("--log-level", flags.log_level, "Service and fleet log level");
  CLI11_PARSE(app, argc, argv);
  return Bench(flags).Run();
}
