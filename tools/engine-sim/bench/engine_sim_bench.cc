// engine-sim-bench: the two engine-sim figures.
//
//   completions_per_s  one engine-sim at --time-scale 1000 on loopback, `--clients` threads
//                      with keep-alive connections sending non-streaming /v1/completions
//                      (`--prompt-tokens` bytes, `--max-tokens` output) for `--seconds`.
//   idle_rss_mb        `--instances` engine-sims started together (KV events and replay on),
//                      each served one completion and one /metrics scrape, then left idle
//                      for a second; the largest VmRSS among them.
//
// Prints `figure <name> <value> <unit>` lines at the end.
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace {

using namespace std::chrono_literals;

struct Child {
  pid_t pid = -1;
  int port = 0;
};

// Starts engine-sim with `args` and waits for its "listening" line.
Child Spawn(const std::string& bin, std::vector<std::string> args) {
  int fds[2];
  if (pipe(fds) != 0) return {};
  args.insert(args.begin(), bin);
  Child c;
  c.pid = fork();
  if (c.pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fds[0], POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    char ch;
    if (read(fds[0], &ch, 1) != 1 || ch == '\n') break;
    line += ch;
  }
  close(fds[0]);
  const size_t at = line.find(" port=");
  if (at != std::string::npos) c.port = std::atoi(line.c_str() + at + 6);
  return c;
}

void Kill(Child& c) {
  if (c.pid <= 0) return;
  kill(c.pid, SIGTERM);
  int status = 0;
  for (int i = 0; i < 500 && waitpid(c.pid, &status, WNOHANG) == 0; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  if (waitpid(c.pid, &status, WNOHANG) == 0) {
    kill(c.pid, SIGKILL);
    waitpid(c.pid, &status, 0);
  }
  c.pid = -1;
}

double RssMb(pid_t pid) {
  std::ifstream f(fmt::format("/proc/{}/status", pid));
  std::string key;
  while (f >> key) {
    if (key == "VmRSS:") {
      double kb = 0;
      f >> kb;
      return kb / 1024.0;
    }
    std::string rest;
    std::getline(f, rest);
  }
  return -1;
}

std::string SelfDir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, n);
  return p.substr(0, p.rfind('/'));
}

std::string Prompt(int salt, int len) {
  std::string s;
  s.reserve(len);
  for (int i = 0; i < len; ++i) s += static_cast<char>('a' + (salt * 13 + i * 7) % 26);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  std::string bin = SelfDir() + "/engine-sim";
  int clients = 16;
  double seconds = 5;
  int prompt_tokens = 128;
  int max_tokens = 16;
  int instances = 32;
  bool skip_rss = false, skip_throughput = false;
  CLI::App app{"engine-sim benchmarks (figures completions_per_s, idle_rss_mb)"};
  app.add_option("--engine-sim", bin, "engine-sim binary")->capture_default_str();
  app.add_option("--clients", clients, "client threads (keep-alive)")->capture_default_str();
  app.add_option("--seconds", seconds, "throughput run length")->capture_default_str();
  app.add_option("--prompt-tokens", prompt_tokens, "prompt length")->capture_default_str();
  app.add_option("--max-tokens", max_tokens, "output tokens per completion")->capture_default_str();
  app.add_option("--instances", instances, "engine-sims for the RSS figure")->capture_default_str();
  app.add_flag("--skip-rss", skip_rss);
  app.add_flag("--skip-throughput", skip_throughput);
  CLI11_PARSE(app, argc, argv);
  signal(SIGPIPE, SIG_IGN);

  double completions_per_s = -1;
  if (!skip_throughput) {
    Child sim = Spawn(bin, {"--port", "0", "--time-scale", "1000", "--log-level", "warn"});
    if (sim.port <= 0) {
      std::fprintf(stderr, "engine-sim did not start (%s)\n", bin.c_str());
      return 1;
    }
    std::atomic<bool> go{false}, stop{false};
    std::atomic<uint64_t> ok{0}, failed{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < clients; ++t) {
      threads.emplace_back([&, t] {
        httplib::Client c("127.0.0.1", sim.port);
        c.set_keep_alive(true);
        c.set_tcp_nodelay(true);  // body and headers go out in separate writes
        c.set_read_timeout(30, 0);
        std::vector<std::string> bodies;
        for (int i = 0; i < 8; ++i) {
          bodies.push_back(nlohmann::json({{"prompt", Prompt(t * 8 + i, prompt_tokens)},
                                           {"max_tokens", max_tokens}})
                               .dump());
        }
        while (!go.load()) std::this_thread::yield();
        for (uint64_t i = 0; !stop.load(); ++i) {
          auto r = c.Post("/v1/completions", bodies[i % bodies.size()], "application/json");
          if (r && r->status == 200) {
            ok.fetch_add(1, std::memory_order_relaxed);
          } else if (failed.fetch_add(1, std::memory_order_relaxed) < 3) {
            std::fprintf(stderr, "request failed: %s\n",
                         r ? fmt::format("HTTP {} {}", r->status, r->body).c_str()
                           : httplib::to_string(r.error()).c_str());
          }
        }
      });
    }
    // Warm-up, then measure.
    go.store(true);
    std::this_thread::sleep_for(500ms);
    const uint64_t ok0 = ok.load();
    const auto t0 = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    const uint64_t ok1 = ok.load();
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    stop.store(true);
    for (auto& th : threads) th.join();
    Kill(sim);
    completions_per_s = static_cast<double>(ok1 - ok0) / elapsed;
    std::printf(
        "throughput: %d clients, %d-token prompts, %d output tokens, %.1f s: %llu ok, "
        "%llu failed\n",
        clients, prompt_tokens, max_tokens, elapsed, static_cast<unsigned long long>(ok1 - ok0),
        static_cast<unsigned long long>(failed.load()));
  }

  double max_rss = -1, sum_rss = 0;
  if (!skip_rss) {
    std::vector<Child> sims;
    for (int i = 0; i < instances; ++i) {
      sims.push_back(Spawn(bin, {"--port", "0", "--time-scale", "1000", "--log-level", "warn",
                                 "--kv-events-endpoint", "tcp://127.0.0.1:*",
                                 "--kv-events-replay-endpoint", "tcp://127.0.0.1:*"}));
    }
    int up = 0;
    for (Child& s : sims) {
      if (s.port <= 0) continue;
      ++up;
      httplib::Client c("127.0.0.1", s.port);
      c.Post("/v1/completions", R"({"prompt":"warm up the code paths","max_tokens":8})",
             "application/json");
      c.Get("/metrics");
    }
    std::this_thread::sleep_for(1s);
    for (Child& s : sims) {
      if (s.port <= 0) continue;
      const double rss = RssMb(s.pid);
      max_rss = std::max(max_rss, rss);
      sum_rss += rss;
    }
    std::printf("rss: %d of %d engine-sims up, mean %.1f MB, max %.1f MB\n", up, instances,
                up ? sum_rss / up : 0.0, max_rss);
    for (Child& s : sims) Kill(s);
    if (up != instances) max_rss = -1;
  }

  if (completions_per_s >= 0)
    std::printf("figure completions_per_s %.0f req/s\n", completions_per_s);
  if (max_rss >= 0) std::printf("figure idle_rss_mb %.1f MB\n", max_rss);
  return 0;
}
