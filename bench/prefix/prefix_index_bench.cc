// prefix-index-bench: the figures of the prefix-index issue (see docs/prefix-index.md).
// Prints `figure <name> <value> <unit>` lines at the end. Runs in well under 90 s.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "aibrix/common/huge_pages.h"
#include "aibrix/prefix/exact_index.h"
#include "benchmark/benchmark.h"

namespace aibrix::prefix {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kBs = 16;
constexpr int kPromptBlocks = 512;
const char* const kModel = "meta-llama/Llama-3.1-8B-Instruct";

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// CPU time of the calling thread: "per core" rates that do not count time spent descheduled
// on this shared machine.
double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

std::vector<uint32_t> RandomTokens(std::mt19937_64& rng, size_t n) {
  std::vector<uint32_t> t(n);
  for (auto& x : t) x = static_cast<uint32_t>(rng() % 151000);
  return t;
}

std::string PodName(int i) { return "default/llama-8b-deployment-7d9f8b6c4-" + std::to_string(i); }

// Feeds one whole prompt (chain from the root) to `pod` in events of 32 blocks.
// Stores the first `limit` blocks of `tokens` (all when 0) on `src`, 32 blocks per event.
void StorePrompt(ExactIndex& index, const kv::PodSource& src, const std::vector<uint32_t>& tokens,
                 uint64_t hash_base, size_t limit = 0) {
  const size_t blocks = limit == 0 ? tokens.size() / kBs : std::min(limit, tokens.size() / kBs);
  std::optional<uint64_t> parent;
  for (size_t b = 0; b < blocks; b += 32) {
    kv::BlockStored s;
    s.block_size = kBs;
    s.parent_block_hash = parent;
    const size_t n = std::min<size_t>(32, blocks - b);
    for (size_t i = 0; i < n; ++i) s.block_hashes.push_back(Mix64(hash_base + b + i));
    s.token_ids.assign(tokens.begin() + b * kBs, tokens.begin() + (b + n) * kBs);
    parent = s.block_hashes.back();
    kv::EventBatch batch;
    batch.events.push_back(std::move(s));
    index.ApplyBatch(src, batch);
  }
}

struct Percentiles {
  double p50, p99, mean;
};
Percentiles Summarise(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  return {v[v.size() / 2], v[v.size() * 99 / 100], mean};
}

// ---------------------------------------------------------------------------- hashing
double HashGbPerS(ChainScheme scheme) {
  std::mt19937_64 rng(1);
  const auto tokens = RandomTokens(rng, 8192);
  BlockHasher hasher(kBs, scheme);
  std::vector<BlockKey> keys(512);
  const int iters = 20000;
  const double t0 = ThreadCpuSeconds();  // per core: time descheduled is not counted
  for (int i = 0; i < iters; ++i) {
    hasher.HashInto(static_cast<BlockKey>(i + 1), tokens, keys.data());
    benchmark::DoNotOptimize(keys.data());
  }
  const double s = ThreadCpuSeconds() - t0;
  return static_cast<double>(iters) * 8192 * 4 / s / 1e9;
}

// ---------------------------------------------------------------------------- queries
struct QueryFigures {
  Percentiles full;
  double miss_us;
};

// `pods` pods all hold `shared` prompts of 512 blocks; each also holds `private_prompts`
// prompts of its own. Queries hit the shared prompts (fully matched by every pod), while a
// writer thread (when `with_writer`) keeps storing and removing 32-block events.
// `spread`: each pod holds a random prefix (1 to all blocks) of each shared prompt, so the
// holders of a query drop out at hundreds of different blocks (fleet-bench's shape).
QueryFigures MeasureQueries(int pods, int shared, int private_prompts, bool with_writer,
                            int queries, uint64_t* memberships_out, bool spread = false) {
  ExactIndex index;
  std::mt19937_64 rng(42);
  std::vector<std::vector<uint32_t>> prompts;
  for (int i = 0; i < shared; ++i) prompts.push_back(RandomTokens(rng, kPromptBlocks * kBs));
  uint64_t base = 1;
  for (int p = 0; p < pods; ++p) {
    kv::PodSource src{PodName(p), kModel, -1};
    for (int i = 0; i < shared; ++i) {
      const size_t limit = spread ? 1 + rng() % kPromptBlocks : 0;
      StorePrompt(index, src, prompts[i], (base += 1000), limit);
    }
    for (int i = 0; i < private_prompts; ++i) {
      StorePrompt(index, src, RandomTokens(rng, kPromptBlocks * kBs), (base += 1000));
    }
  }
  *memberships_out = index.memberships();

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> writer_events{0};
  std::thread writer;
  if (with_writer) {
    writer = std::thread([&] {
      std::mt19937_64 wrng(7);
      const auto toks = RandomTokens(wrng, 32 * kBs);
      uint64_t h = 1ULL << 60;
      std::vector<std::pair<int, std::vector<uint64_t>>> live;
      while (!stop.load(std::memory_order_relaxed)) {
        const int p = static_cast<int>(wrng() % pods);
        kv::BlockStored s;
        s.block_size = kBs;
        s.token_ids = toks;
        s.token_ids[0] = static_cast<uint32_t>(h);  // a new root chain
        for (int i = 0; i < 32; ++i) s.block_hashes.push_back(Mix64(++h));
        live.emplace_back(p, s.block_hashes);
        kv::EventBatch b;
        b.events.push_back(std::move(s));
        index.ApplyBatch(kv::PodSource{PodName(p), kModel, -1}, b);
        if (live.size() > 256) {  // steady state: remove the oldest event's blocks
          kv::BlockRemoved r;
          r.block_hashes.assign(live.front().second.rbegin(), live.front().second.rend());
          kv::EventBatch rb;
          rb.events.push_back(std::move(r));
          index.ApplyBatch(kv::PodSource{PodName(live.front().first), kModel, -1}, rb);
          live.erase(live.begin());
        }
        writer_events.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }

  std::vector<double> lat;
  lat.reserve(queries);
  uint64_t sink = 0;
  for (int q = 0; q < queries + 2000; ++q) {
    const auto& tokens = prompts[q % shared];
    const auto t0 = Clock::now();
    index.MatchTokens(HashContext{kModel, "", 0}, tokens,
                      [&](std::string_view pod, std::string_view, uint32_t blocks) {
                        sink += blocks + pod.size();
                      });
    const auto t1 = Clock::now();
    if (q >= 2000) lat.push_back(Seconds(t1 - t0) * 1e6);
  }
  // First block misses.
  std::vector<double> miss;
  auto other = RandomTokens(rng, kPromptBlocks * kBs);
  for (int q = 0; q < 20000; ++q) {
    other[0] = static_cast<uint32_t>(q);
    const auto t0 = Clock::now();
    index.MatchTokens(HashContext{kModel, "", 0}, other,
                      [&](std::string_view, std::string_view, uint32_t b) { sink += b; });
    miss.push_back(Seconds(Clock::now() - t0) * 1e6);
  }
  stop = true;
  if (writer.joinable()) writer.join();
  benchmark::DoNotOptimize(sink);
  const uint64_t expect = static_cast<uint64_t>(pods) * kPromptBlocks;
  if (!spread && sink < expect) std::fprintf(stderr, "warning: queries did not fully match\n");
  QueryFigures f{Summarise(lat), Summarise(miss).p50};
  std::fprintf(stderr,
               "queries: pods=%d memberships=%llu writer_events=%llu p50=%.2fus p99=%.2fus "
               "mean=%.2fus miss_p50=%.2fus\n",
               pods, static_cast<unsigned long long>(*memberships_out),
               static_cast<unsigned long long>(writer_events.load()), f.full.p50, f.full.p99,
               f.full.mean, f.miss_us);
  return f;
}

// ---------------------------------------------------------------------------- writes
struct WriteFigures {
  double store_per_s, remove_per_s, store_growing_per_s;
  uint64_t live;  // memberships live during the steady state
};

// 64 pods. Grows the index to `live_blocks` (timed as the growth-phase rate), then runs a
// steady state: each step stores a new 32-block event (chained 16 events deep into 512-block
// prompts) on one pod and removes the oldest live event of another, tail first (how engines
// evict). Store and remove time are measured separately.
WriteFigures MeasureWrites(int pods, uint64_t live_blocks, uint64_t steady_blocks) {
  ExactIndex index;
  std::mt19937_64 rng(3);
  std::vector<std::vector<uint32_t>> templates;  // 64 token templates of one event
  for (int i = 0; i < 64; ++i) templates.push_back(RandomTokens(rng, 32 * kBs));
  std::vector<kv::PodSource> srcs;
  for (int p = 0; p < pods; ++p) srcs.push_back({PodName(p), kModel, -1});

  kv::EventBatch sb;
  sb.events.emplace_back(kv::BlockStored{});
  auto& s = std::get<kv::BlockStored>(sb.events[0]);
  s.block_size = kBs;
  s.block_hashes.resize(32);
  kv::EventBatch rb;
  rb.events.emplace_back(kv::BlockRemoved{});
  auto& r = std::get<kv::BlockRemoved>(rb.events[0]);
  r.block_hashes.resize(32);

  // Prompts in store order; each is 16 events (first hash counter of each event).
  struct Prompt {
    int pod;
    std::vector<uint64_t> events;
  };
  std::vector<Prompt> prompts;
  std::vector<int> open(pods, -1);  // pod -> index of its prompt being stored
  size_t remove_prompt = 0;         // oldest prompt still (partly) live
  uint64_t h = 1, e = 0;
  const auto store_one = [&] {
    const int p = static_cast<int>(e % pods);
    s.token_ids = templates[e % 64];
    if (open[p] < 0 || prompts[open[p]].events.size() == 16) {
      open[p] = static_cast<int>(prompts.size());
      prompts.push_back({p, {}});
      s.token_ids[0] = static_cast<uint32_t>(e);  // a new prompt: a new root chain
      s.parent_block_hash.reset();
    } else {
      s.parent_block_hash = Mix64(prompts[open[p]].events.back() + 31);
    }
    prompts[open[p]].events.push_back(h + 1);
    for (auto& x : s.block_hashes) x = Mix64(++h);
    ++e;
    index.ApplyBatch(srcs[p], sb);
  };
  // Removes the last live event of the oldest prompt, its hashes tail first.
  const auto remove_one = [&] {
    Prompt& pr = prompts[remove_prompt];
    const uint64_t first = pr.events.back();
    pr.events.pop_back();
    for (int i = 0; i < 32; ++i) r.block_hashes[i] = Mix64(first + 31 - static_cast<uint64_t>(i));
    index.ApplyBatch(srcs[pr.pod], rb);
    if (pr.events.empty()) ++remove_prompt;
  };

  const auto t0 = Clock::now();
  while (index.memberships() < live_blocks) store_one();
  const double grow_s = Seconds(Clock::now() - t0);
  const uint64_t grown = index.memberships();

  // Alternate groups of 256 store events and 256 remove events (the live set moves by 8k
  // of 2M blocks), so the clock calls are amortised over the group.
  double store_cpu = 0, remove_cpu = 0;
  Clock::duration store_t{}, remove_t{};
  constexpr int kGroup = 256;
  for (uint64_t done = 0; done < steady_blocks; done += 32 * kGroup) {
    const auto a = Clock::now();
    const double ca = ThreadCpuSeconds();
    for (int i = 0; i < kGroup; ++i) store_one();
    const auto b = Clock::now();
    const double cb = ThreadCpuSeconds();
    for (int i = 0; i < kGroup; ++i) remove_one();
    remove_cpu += ThreadCpuSeconds() - cb;
    remove_t += Clock::now() - b;
    store_cpu += cb - ca;
    store_t += b - a;
  }
  std::fprintf(stderr,
               "writes: pods=%d live=%llu grow=%.3fs steady: %llu blocks stored in %.3fs wall "
               "%.3fs cpu, removed in %.3fs wall %.3fs cpu; memberships after=%llu\n",
               pods, static_cast<unsigned long long>(grown), grow_s,
               static_cast<unsigned long long>(steady_blocks), Seconds(store_t), store_cpu,
               Seconds(remove_t), remove_cpu, static_cast<unsigned long long>(index.memberships()));
  return {static_cast<double>(steady_blocks) / store_cpu,
          static_cast<double>(steady_blocks) / remove_cpu, static_cast<double>(grown) / grow_s,
          grown};
}

// ---------------------------------------------------------------------------- memory
// 10M memberships over 64 pods; each 512-block prompt is held by `replicas` pods (the
// routing spreads a prefix over a few pods).
double BytesPerMembership(uint64_t target, int pods, int replicas) {
  ExactIndexOptions opts;
  opts.max_memberships = 2 * target;
  ExactIndex index(opts);
  std::mt19937_64 rng(5);
  uint64_t base = 1;
  int next_pod = 0;
  std::vector<uint32_t> tokens = RandomTokens(rng, kPromptBlocks * kBs);
  for (uint64_t prompt = 0; index.memberships() < target; ++prompt) {
    tokens[0] = static_cast<uint32_t>(prompt);  // a distinct prompt (distinct chain)
    for (int r = 0; r < replicas; ++r) {
      kv::PodSource src{PodName(next_pod), kModel, -1};
      next_pod = (next_pod + 1) % pods;
      StorePrompt(index, src, tokens, (base += 1000));
    }
  }
  const double b = static_cast<double>(index.bytes()) / static_cast<double>(index.memberships());
  std::fprintf(stderr, "memory: pods=%d replicas=%d memberships=%llu bytes=%llu (%.1f B each)\n",
               pods, replicas, static_cast<unsigned long long>(index.memberships()),
               static_cast<unsigned long long>(index.bytes()), b);
  return b;
}

}  // namespace
}  // namespace aibrix::prefix

int main(int argc, char** argv) {
  aibrix::common::UseHugePagesForMalloc(argv);
  using namespace aibrix::prefix;
  // Optional section names (hash, query, scale, write, memory) select what runs.
  const auto want = [&](const char* name) {
    if (argc < 2) return true;
    for (int i = 1; i < argc; ++i) {
      if (std::string(argv[i]) == name) return true;
    }
    return false;
  };
  if (want("hash")) {
    const double mix = HashGbPerS(ChainScheme::kMixChain);
    const double seeded = HashGbPerS(ChainScheme::kSeededChain);
    std::printf("figure hash_gb_per_s %.2f GB/s\n", mix);
    std::printf("figure hash_seeded_chain_gb_per_s %.2f GB/s\n", seeded);
  }
  if (want("query")) {
    uint64_t mq = 0;
    const QueryFigures q = MeasureQueries(64, 16, 16, /*with_writer=*/true, 50000, &mq);
    std::printf("figure query_p50_us %.2f us\n", q.full.p50);
    std::printf("figure query_p99_us %.2f us\n", q.full.p99);
    std::printf("figure query_miss_us %.2f us\n", q.miss_us);
    std::printf("figure query_memberships_resident %llu memberships\n",
                static_cast<unsigned long long>(mq));
  }
  if (want("scale")) {
    uint64_t m = 0;
    const QueryFigures q1 = MeasureQueries(1, 16, 0, false, 20000, &m);
    const QueryFigures q64 = MeasureQueries(64, 16, 16, false, 20000, &m);
    const QueryFigures q1000 = MeasureQueries(1000, 2, 0, false, 10000, &m);
    std::printf("figure query_1pod_us %.2f us\n", q1.full.p50);
    std::printf("figure query_64pods_us %.2f us\n", q64.full.p50);
    std::printf("figure query_1000pods_us %.2f us\n", q1000.full.p50);
    const QueryFigures spread = MeasureQueries(1000, 16, 0, false, 10000, &m, /*spread=*/true);
    std::printf("figure query_1000pods_spread_us %.2f us\n", spread.full.p50);
    std::printf("figure query_1000pods_spread_p99_us %.2f us\n", spread.full.p99);
  }
  if (want("write")) {
    const WriteFigures w = MeasureWrites(64, 2'000'000, 4'000'000);
    std::printf("figure store_blocks_per_s %.0f blocks/s\n", w.store_per_s);
    std::printf("figure remove_blocks_per_s %.0f blocks/s\n", w.remove_per_s);
    std::printf("figure store_blocks_per_s_growing %.0f blocks/s\n", w.store_growing_per_s);
    std::printf("figure write_live_memberships %llu memberships\n",
                static_cast<unsigned long long>(w.live));
  }
  if (want("memory")) {
    const double bpm = BytesPerMembership(10'000'000, 64, 4);
    const double bpm1 = BytesPerMembership(10'000'000, 64, 1);
    std::printf("figure bytes_per_membership %.1f B\n", bpm);
    std::printf("figure bytes_per_membership_unshared %.1f B\n", bpm1);
  }
  return 0;
}
