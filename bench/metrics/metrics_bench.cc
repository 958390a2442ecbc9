// Engine metrics: the cost of one scrape's parse and the scraper's CPU on a fleet.
// Figures:
//  - metrics_parse_us: parse the vendored vLLM /metrics body (tests/testdata/metrics,
//    45 KB; Google Benchmark, best of 5). BM_ParseAndExtract (reported, not a figure) also
//    extracts the registered vLLM metrics from it, as each scrape does.
//  - scrape_cpu_pct: the Scraper scraping 100 fake engines (that body on 100 loopback ports,
//    served by a child process whose CPU is not counted) every 100 ms: the CPU time of this
//    process (which runs nothing but the scraper's thread meanwhile) over 10 s of wall time,
//    in % of one core.
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "aibrix/common/logging.h"
#include "aibrix/common/malloc_tuning.h"
#include "aibrix/metrics/exposition.h"
#include "aibrix/metrics/extract.h"
#include "aibrix/metrics/registry.h"
#include "aibrix/metrics/scraper.h"
#include "aibrix/store/store.h"
#include "bench/common/figures.h"
#include "fmt/format.h"

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

constexpr int kEngines = 100;
constexpr auto kInterval = std::chrono::milliseconds(100);
constexpr auto kWarmup = std::chrono::seconds(2);
constexpr auto kMeasure = std::chrono::seconds(10);

const std::string& Body() {
  static const std::string body = [] {
    std::ifstream in(std::string(AIBRIX_SOURCE_DIR) +
                     "/tests/testdata/metrics/vllm_metrics_sample.txt");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }();
  return body;
}

// What a scrape of a vLLM pod parses: only the families of the registered vLLM metrics.
struct VllmScrape {
  VllmScrape()
      : bindings(aibrix::metrics::EngineMetricRegistry::Default().BindingsFor("vllm")),
        names(aibrix::metrics::BoundNames(bindings)) {
    options.only_families = &names;
  }
  VllmScrape(const VllmScrape&) = delete;
  VllmScrape& operator=(const VllmScrape&) = delete;
  std::vector<aibrix::metrics::Binding> bindings;
  absl::flat_hash_set<std::string_view> names;  // views into `bindings`
  aibrix::metrics::ParseOptions options;
};

void ParseLoop(benchmark::State& state, const aibrix::metrics::ParseOptions& options) {
  const std::string& body = Body();
  size_t series = 0;
  for (auto _ : state) {
    auto parsed = aibrix::metrics::ParseExposition(body, options);
    series = parsed->series_count();
    benchmark::DoNotOptimize(parsed);
  }
  state.counters["series"] = static_cast<double>(series);
  state.counters["bytes"] = static_cast<double>(body.size());
}

// Every family (the figure metrics_parse_us).
void BM_Parse(benchmark::State& state) { ParseLoop(state, {}); }
BENCHMARK(BM_Parse)->UseRealTime()->Repetitions(5);

void BM_ParseForScrape(benchmark::State& state) {
  const VllmScrape scrape;
  ParseLoop(state, scrape.options);
}
BENCHMARK(BM_ParseForScrape)->UseRealTime()->Repetitions(5);

void BM_ParseAndExtract(benchmark::State& state) {
  const std::string& body = Body();
  const VllmScrape scrape;
  size_t values = 0;
  for (auto _ : state) {
    auto parsed = aibrix::metrics::ParseExposition(body, scrape.options);
    aibrix::metrics::Extractor extractor(scrape.bindings, "");
    extractor.Add(*parsed);
    auto out = extractor.Finish(std::chrono::steady_clock::now());
    values = out.model.size() + out.pod.size();
    benchmark::DoNotOptimize(out);
  }
  state.counters["values"] = static_cast<double>(values);
  state.counters["bytes"] = static_cast<double>(body.size());
}
BENCHMARK(BM_ParseAndExtract)->UseRealTime()->Repetitions(5);

// One keep-alive HTTP/1.1 connection answering every request with the body.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, const std::string& response)
      : socket_(std::move(socket)), response_(response) {}
  void Read() {
    asio::async_read_until(socket_, buffer_, "\r\n\r\n",
                           [self = shared_from_this()](boost::system::error_code ec, size_t n) {
                             if (ec) return;
                             self->buffer_.consume(n);
                             asio::async_write(self->socket_, asio::buffer(self->response_),
                                               [self](boost::system::error_code ec, size_t) {
                                                 if (!ec) self->Read();
                                               });
                           });
  }

 private:
  tcp::socket socket_;
  asio::streambuf buffer_;
  const std::string& response_;
};

void Accept(tcp::acceptor& acceptor, const std::string& response) {
  acceptor.async_accept([&acceptor, &response](boost::system::error_code ec, tcp::socket socket) {
    if (!ec) std::make_shared<Connection>(std::move(socket), response)->Read();
    Accept(acceptor, response);
  });
}

// The fake engines, in a child process: writes their ports to `out_fd`, serves until killed.
[[noreturn]] void ServeEngines(int out_fd) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  const std::string response = fmt::format(
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
      "Content-Length: {}\r\n\r\n{}",
      Body().size(), Body());
  asio::io_context io(1);
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
  std::vector<int> ports;
  for (int i = 0; i < kEngines; ++i) {
    auto acceptor =
        std::make_unique<tcp::acceptor>(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    ports.push_back(acceptor->local_endpoint().port());
    Accept(*acceptor, response);
    acceptors.push_back(std::move(acceptor));
  }
  if (write(out_fd, ports.data(), ports.size() * sizeof(int)) !=
      static_cast<ssize_t>(ports.size() * sizeof(int))) {
    _exit(1);
  }
  close(out_fd);
  io.run();
  _exit(0);
}

double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// Returns false when the measurement could not run.
bool MeasureScrapeCpu() {
  int fds[2];
  if (pipe(fds) != 0) return false;
  const pid_t child = fork();
  if (child < 0) return false;
  if (child == 0) {
    close(fds[0]);
    ServeEngines(fds[1]);
  }
  close(fds[1]);
  std::vector<int> ports(kEngines);
  size_t got = 0;
  while (got < ports.size() * sizeof(int)) {
    const ssize_t n =
        read(fds[0], reinterpret_cast<char*>(ports.data()) + got, ports.size() * sizeof(int) - got);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  close(fds[0]);
  if (got != ports.size() * sizeof(int)) {
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    return false;
  }

  aibrix::store::Store store;
  for (int i = 0; i < kEngines; ++i) {
    aibrix::store::PodObject pod;
    pod.ns = "bench";
    pod.name = fmt::format("engine-{}", i);
    pod.uid = pod.name;
    pod.labels[aibrix::store::kModelNameLabel] = "meta-llama/Llama-3.1-8B-Instruct";
    pod.labels[aibrix::store::kMetricPortLabel] = std::to_string(ports[static_cast<size_t>(i)]);
    pod.ip = "127.0.0.1";
    pod.phase = "Running";
    pod.ready_condition = true;
    store.AddPod(pod);
  }
  prometheus::Registry registry;
  aibrix::metrics::ScraperOptions options;
  options.interval = kInterval;
  aibrix::metrics::Scraper scraper(store, aibrix::metrics::EngineMetricRegistry::Default(), options,
                                   registry);
  const auto scrapes = [&registry](const std::string& result) {
    for (const auto& family : registry.Collect()) {
      if (family.name != "aibrix_cache_metric_scrapes_total") continue;
      for (const auto& metric : family.metric) {
        if (!metric.label.empty() && metric.label[0].value == result) return metric.counter.value;
      }
    }
    return 0.0;
  };
  if (!scraper.Start().ok()) return false;
  std::this_thread::sleep_for(kWarmup);
  const double ok_before = scrapes("ok");
  const double cpu_before = CpuSeconds();
  const auto wall_before = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(kMeasure);
  const double cpu = CpuSeconds() - cpu_before;
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_before).count();
  const double ok = scrapes("ok") - ok_before;
  scraper.Stop();
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  std::printf(
      "scrape: %d engines every %lld ms: %.0f successful scrapes in %.1f s (%.0f/s), "
      "cpu %.3f s\n",
      kEngines, static_cast<long long>(kInterval.count()), ok, wall, ok / wall, cpu);
  if (ok < 0.5 * kEngines * wall / std::chrono::duration<double>(kInterval).count()) {
    std::printf("scrape: fewer scrapes than expected; the figure is not meaningful\n");
    return false;
  }
  aibrix::bench::PrintFigure("scrape_cpu_pct", 100.0 * cpu / wall, "pct", 2);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  aibrix::common::TuneMalloc();  // as aibrix-cache does
  aibrix::common::SetLogLevel("error");
  const int rc = aibrix::bench::RunAndPrintFigures(
      argc, argv, {{"BM_Parse/repeats:5/real_time", {"metrics_parse_us", "us", 1e-3}}});
  if (rc != 0) return rc;
  return MeasureScrapeCpu() ? 0 : 1;
}
