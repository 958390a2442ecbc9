// Randomized differential test: random event streams for many pods against a simple
// reference model that recomputes every answer from first principles.
#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "aibrix/prefix/exact_index.h"
#include "gtest/gtest.h"

namespace aibrix::prefix {
namespace {

constexpr int kBs = 4;  // small blocks keep the test fast; the logic is size-independent

// A trie of blocks: node 0 is the root (no tokens); every other node has a parent and kBs tokens.
struct Trie {
  std::vector<int> parent{-1};
  std::vector<std::vector<uint32_t>> tokens{{}};
  std::vector<int> depth{0};
  std::vector<std::vector<int>> kids{{}};

  int Add(int p, std::mt19937_64& rng) {
    const int id = static_cast<int>(parent.size());
    parent.push_back(p);
    std::vector<uint32_t> t(kBs);
    for (auto& x : t) x = static_cast<uint32_t>(rng() % 50000);
    tokens.push_back(t);
    depth.push_back(depth[p] + 1);
    kids.emplace_back();
    kids[p].push_back(id);
    return id;
  }
  std::vector<int> Path(int node) const {  // root excluded, top-down
    std::vector<int> p;
    for (int x = node; x != 0; x = parent[x]) p.push_back(x);
    std::reverse(p.begin(), p.end());
    return p;
  }
};

struct RefEntry {
  std::string ctx;  // adapter the chain was rooted with
  int node;
  uint64_t parent;  // engine hash, 0 = root
};

struct RefPod {
  std::string model;
  std::map<std::string, std::map<uint64_t, RefEntry>> tiers;  // tier -> engine hash -> entry
};

class Reference {
 public:
  std::map<std::string, RefPod> pods;

  // Mirrors ExactIndex::Stored for group-0 events with tokens.
  void Stored(const std::string& pod, const std::string& model, const std::string& tier,
              const std::string& ctx, std::optional<uint64_t> parent,
              const std::vector<uint64_t>& hashes, const std::vector<int>& nodes) {
    RefPod& p = pods[pod];
    p.model = model;
    std::string chain_ctx = ctx;
    if (parent) {
      const RefEntry* pe = FindAny(p, *parent, tier);
      if (pe == nullptr) return;  // unplaceable
      chain_ctx = pe->ctx;
    }
    auto& m = p.tiers[tier];
    for (size_t i = 0; i < hashes.size(); ++i) {
      const uint64_t par = i == 0 ? parent.value_or(0) : hashes[i - 1];
      m[hashes[i]] = RefEntry{chain_ctx, nodes[i], par};
    }
  }
  void TierAdd(const std::string& pod, const std::string& tier,
               const std::vector<uint64_t>& hashes) {
    RefPod& p = pods[pod];
    auto& m = p.tiers[tier];
    for (uint64_t h : hashes) {
      for (auto& [t, other] : p.tiers) {
        if (t == tier) continue;
        if (auto it = other.find(h); it != other.end()) {
          if (!m.contains(h)) m[h] = it->second;
          break;
        }
      }
    }
  }
  void Removed(const std::string& pod, const std::string& tier,
               const std::vector<uint64_t>& hashes) {
    auto pit = pods.find(pod);
    if (pit == pods.end()) return;
    auto tit = pit->second.tiers.find(tier);
    if (tit == pit->second.tiers.end()) return;
    for (uint64_t h : hashes) tit->second.erase(h);
  }
  void Clear(const std::string& pod) {
    if (auto it = pods.find(pod); it != pods.end()) it->second.tiers.clear();
  }

  // (pod, tier) -> leading blocks of `path` held, for a query (model, ctx).
  std::map<std::pair<std::string, std::string>, uint32_t> Query(const std::string& model,
                                                                const std::string& ctx,
                                                                const std::vector<int>& path) {
    std::map<std::pair<std::string, std::string>, uint32_t> out;
    for (auto& [pod, p] : pods) {
      if (p.model != model) continue;
      for (auto& [tier, m] : p.tiers) {
        std::set<int> held;
        std::map<uint64_t, bool> memo;
        for (auto& [h, e] : m) {
          if (e.ctx == ctx && Anchored(m, h, memo)) held.insert(e.node);
        }
        uint32_t l = 0;
        while (l < path.size() && held.contains(path[l])) ++l;
        if (l > 0) out[{pod, tier}] = l;
      }
    }
    return out;
  }

 private:
  static const RefEntry* FindAny(RefPod& p, uint64_t h, const std::string& first) {
    if (auto t = p.tiers.find(first); t != p.tiers.end()) {
      if (auto it = t->second.find(h); it != t->second.end()) return &it->second;
    }
    for (auto& [t, m] : p.tiers) {
      if (auto it = m.find(h); it != m.end()) return &it->second;
    }
    return nullptr;
  }
  // Every ancestor along the engine's parent links is held in this tier (memoised per
  // query: long chains would otherwise cost depth^2).
  static bool Anchored(const std::map<uint64_t, RefEntry>& m, uint64_t h,
                       std::map<uint64_t, bool>& memo) {
    std::vector<uint64_t> walked;
    bool result = false;
    for (int guard = 0; guard < 100000; ++guard) {
      if (auto k = memo.find(h); k != memo.end()) {
        result = k->second;
        break;
      }
      auto it = m.find(h);
      if (it == m.end()) break;
      walked.push_back(h);
      if (it->second.parent == 0) {
        result = true;
        break;
      }
      h = it->second.parent;
    }
    for (uint64_t w : walked) memo[w] = result;
    return result;
  }
};

struct Harness {
  // `long_chain` > 0 adds one chain of that many blocks below the root (adversarial runs).
  explicit Harness(uint64_t seed, ExactIndexOptions opts, int long_chain = 0)
      : rng(seed), index(opts) {
    for (int x = 0, i = 0; i < long_chain; ++i) {
      x = trie.Add(x, rng);
      chain.push_back(x);
    }
    for (int i = 0; i < 40; ++i) trie.Add(0, rng);  // first blocks
    while (trie.parent.size() < 600) {
      // Grow deep chains with some branching.
      const int p = static_cast<int>(rng() % trie.parent.size());
      if (trie.depth[p] < 40) trie.Add(p, rng);
    }
    for (int i = 0; i < kPods; ++i) {
      pod_names.push_back("ns/pod-" + std::to_string(i));
      // Engines 0 and 1 share a hash seed (like engines with a fixed PYTHONHASHSEED).
      pod_seed.push_back(i == 1 ? 1000 : 1000 + static_cast<uint64_t>(i));
    }
  }

  static constexpr int kPods = 10;
  std::mt19937_64 rng;
  Trie trie;
  ExactIndex index;
  Reference ref;
  std::vector<std::string> pod_names;
  std::vector<uint64_t> pod_seed;
  std::vector<int> chain;  // the long chain's nodes, top-down
  int nonempty = 0;
  int partial = 0;

  std::string ModelOf(int pod) const { return pod < 7 ? "m-a" : "m-b"; }

  uint64_t EngineHash(int pod, const std::string& ctx, int node) const {
    uint64_t h = Mix64(pod_seed[pod] ^ std::hash<std::string>()(ctx));
    for (int x : trie.Path(node)) h = Mix64(h ^ (static_cast<uint64_t>(x) * 0x9E3779B97F4A7C15ULL));
    return h == 0 ? 1 : h;
  }

  kv::PodSource Source(int pod) const { return kv::PodSource{pod_names[pod], ModelOf(pod), -1}; }

  void Apply(int pod, kv::Event ev) {
    kv::EventBatch b;
    b.events.push_back(std::move(ev));
    index.ApplyBatch(Source(pod), b);
  }

  std::string RandomTier() { return rng() % 4 == 0 ? "CPU" : "GPU"; }

  // A random downward path of up to `len` nodes starting below `start`.
  std::vector<int> Descend(int start, int len) {
    std::vector<int> out;
    int x = start;
    for (int i = 0; i < len && !trie.kids[x].empty(); ++i) {
      x = trie.kids[x][rng() % trie.kids[x].size()];
      out.push_back(x);
    }
    return out;
  }

  void RandomStore(int pod) {
    const std::string ctx = rng() % 8 == 0 ? "lora-x" : "";
    const std::string tier = RandomTier();
    int start = 0;
    std::optional<uint64_t> parent;
    if (rng() % 3 != 0) {
      start = static_cast<int>(rng() % trie.parent.size());
      if (start != 0) {
        parent = EngineHash(pod, ctx, start);
        if (rng() % 10 == 0) parent = *parent ^ 0xdeadbeef;  // unknown parent
      }
    }
    const std::vector<int> nodes = Descend(start, 1 + static_cast<int>(rng() % 12));
    if (nodes.empty()) return;
    kv::BlockStored s;
    s.block_size = kBs;
    s.parent_block_hash = parent;
    if (!ctx.empty()) s.lora_name = ctx;
    if (tier != "GPU" || rng() % 2) s.medium = tier == "GPU" ? "gpu" : tier;  // case-insensitive
    for (int x : nodes) {
      s.block_hashes.push_back(EngineHash(pod, ctx, x));
      s.token_ids.insert(s.token_ids.end(), trie.tokens[x].begin(), trie.tokens[x].end());
    }
    ref.Stored(pod_names[pod], ModelOf(pod), tier, ctx, parent, s.block_hashes, nodes);
    Apply(pod, std::move(s));
  }

  std::vector<uint64_t> HeldHashes(int pod, const std::string& tier) {
    std::vector<uint64_t> out;
    auto it = ref.pods.find(pod_names[pod]);
    if (it == ref.pods.end()) return out;
    auto t = it->second.tiers.find(tier);
    if (t == it->second.tiers.end()) return out;
    for (auto& [h, e] : t->second) out.push_back(h);
    return out;
  }

  void RandomRemove(int pod) {
    const std::string tier = RandomTier();
    auto held = HeldHashes(pod, tier);
    kv::BlockRemoved r;
    if (tier != "GPU") r.medium = "cpu";
    if (!held.empty() && rng() % 2 == 0) {
      // Tail first along the parent links (how engines evict); the chain may reach a parent
      // this tier does not hold.
      const auto& m = ref.pods.at(pod_names[pod]).tiers.at(tier);
      uint64_t x = held[rng() % held.size()];
      for (size_t len = 1 + rng() % 6; len > 0 && x != 0; --len) {
        r.block_hashes.push_back(x);
        const auto it = m.find(x);
        x = it == m.end() ? 0 : it->second.parent;
      }
    } else {
      std::shuffle(held.begin(), held.end(), rng);
      const size_t k = held.empty() ? 0 : 1 + rng() % std::min<size_t>(held.size(), 6);
      r.block_hashes.assign(held.begin(), held.begin() + k);
    }
    if (rng() % 5 == 0) r.block_hashes.push_back(rng());  // never stored
    ref.Removed(pod_names[pod], tier, r.block_hashes);
    Apply(pod, std::move(r));
  }

  void RandomTierAdd(int pod) {
    auto held = HeldHashes(pod, "GPU");
    if (held.empty()) return;
    kv::BlockStored s;
    s.block_size = kBs;
    s.medium = "CPU";
    std::shuffle(held.begin(), held.end(), rng);
    s.block_hashes.assign(held.begin(), held.begin() + std::min<size_t>(held.size(), 5));
    ref.TierAdd(pod_names[pod], "CPU", s.block_hashes);
    Apply(pod, std::move(s));
  }

  // After budget evictions: drop from the reference what the index evicted.
  void Resync() {
    for (int p = 0; p < kPods; ++p) {
      for (const std::string tier : {"GPU", "CPU"}) {
        auto have = index.EngineHashesForTest(pod_names[p], tier);
        std::set<uint64_t> kept(have.begin(), have.end());
        std::vector<uint64_t> gone;
        for (uint64_t h : HeldHashes(p, tier)) {
          if (!kept.contains(h)) gone.push_back(h);
        }
        ref.Removed(pod_names[p], tier, gone);
      }
    }
  }

  // Adversarial streams (hostile engines): multi-event batches of removals and re-stores of
  // heads, middles, parents and children of held chains, duplicates included. Each event is
  // mirrored into the reference in order; the index must agree after every batch.

  // The BlockStored that re-stores held hash `h` of `tier` (its recorded parent and node).
  std::optional<kv::BlockStored> Restore(int pod, const std::string& tier, uint64_t h,
                                         const RefEntry& e) {
    kv::BlockStored s;
    s.block_size = kBs;
    if (e.parent != 0) s.parent_block_hash = e.parent;
    if (!e.ctx.empty()) s.lora_name = e.ctx;
    if (tier != "GPU") s.medium = tier;
    s.block_hashes = {h};
    s.token_ids = trie.tokens[e.node];
    ref.Stored(pod_names[pod], ModelOf(pod), tier, e.ctx, s.parent_block_hash, s.block_hashes,
               {e.node});
    return s;
  }
  kv::BlockRemoved Remove(int pod, const std::string& tier, std::vector<uint64_t> hashes) {
    kv::BlockRemoved r;
    if (tier != "GPU") r.medium = tier;
    r.block_hashes = std::move(hashes);
    ref.Removed(pod_names[pod], tier, r.block_hashes);
    return r;
  }

  // Stores the long chain on `pod` (events of up to 64 blocks).
  void StoreLongChain(int pod, const std::string& tier) {
    for (size_t at = 0; at < chain.size(); at += 64) {
      kv::BlockStored s;
      s.block_size = kBs;
      if (tier != "GPU") s.medium = tier;
      std::vector<int> nodes(chain.begin() + static_cast<long>(at),
                             chain.begin() + static_cast<long>(std::min(chain.size(), at + 64)));
      if (at > 0) s.parent_block_hash = EngineHash(pod, "", chain[at - 1]);
      for (int x : nodes) {
        s.block_hashes.push_back(EngineHash(pod, "", x));
        s.token_ids.insert(s.token_ids.end(), trie.tokens[x].begin(), trie.tokens[x].end());
      }
      ref.Stored(pod_names[pod], ModelOf(pod), tier, "", s.parent_block_hash, s.block_hashes,
                 nodes);
      Apply(pod, std::move(s));
    }
  }

  // One hostile batch on `pod`; `carry` holds re-stores left for the next batch (pairs that
  // straddle a batch boundary).
  void AdversarialBatch(int pod, std::vector<std::pair<std::string, uint64_t>>& carry) {
    kv::EventBatch b;
    const auto& refpod = ref.pods[pod_names[pod]];
    (void)refpod;
    // Re-stores carried over from the previous batch come first.
    for (auto& [tier, h] : carry) {
      if (auto it = saved.find({tier, h}); it != saved.end()) {
        b.events.push_back(*Restore(pod, tier, h, it->second));
      }
    }
    carry.clear();
    const int events = 1 + static_cast<int>(rng() % 24);
    for (int k = 0; k < events; ++k) {
      const std::string tier = rng() % 5 == 0 ? "CPU" : "GPU";
      auto held = HeldHashes(pod, tier);
      if (held.empty()) {
        if (tier == "GPU" && !chain.empty() && rng() % 4 == 0) {
          b.events.push_back(kv::AllBlocksCleared{});  // applied in order: flush first
          ref.Clear(pod_names[pod]);
        }
        continue;
      }
      const auto& m = ref.pods[pod_names[pod]].tiers[tier];
      // Prefer chain heads (parent 0) and blocks with children: they hurt the most.
      uint64_t x = held[rng() % held.size()];
      if (rng() % 2 == 0) {
        for (int tries = 0; tries < 8; ++tries) {
          const uint64_t y = held[rng() % held.size()];
          if (m.at(y).parent == 0) {
            x = y;
            break;
          }
        }
      }
      const RefEntry e = m.at(x);
      saved[{tier, x}] = e;
      const uint64_t r = rng() % 100;
      if (r < 40) {  // remove, re-store (the hostile pair), maybe twice
        b.events.push_back(Remove(pod, tier, {x}));
        b.events.push_back(*Restore(pod, tier, x, e));
        if (rng() % 4 == 0) b.events.push_back(*Restore(pod, tier, x, e));  // duplicate
      } else if (r < 55) {  // remove now, re-store in the next batch
        b.events.push_back(Remove(pod, tier, {x}));
        carry.push_back({tier, x});
      } else if (r < 70 && e.parent != 0 && m.contains(e.parent)) {
        // Interleaved parents: remove parent and child, re-store in either order (child
        // first is unplaceable while its parent is absent).
        const uint64_t p = e.parent;
        const RefEntry pe = m.at(p);
        saved[{tier, p}] = pe;
        b.events.push_back(Remove(
            pod, tier, rng() % 2 ? std::vector<uint64_t>{x, p} : std::vector<uint64_t>{p, x}));
        if (rng() % 2) {
          b.events.push_back(*Restore(pod, tier, p, pe));
          b.events.push_back(*Restore(pod, tier, x, e));
        } else {
          b.events.push_back(*Restore(pod, tier, x, e));
          b.events.push_back(*Restore(pod, tier, p, pe));
        }
      } else if (r < 80) {  // remove twice (the second is unknown), re-store
        b.events.push_back(Remove(pod, tier, {x, x}));
        if (rng() % 2) b.events.push_back(*Restore(pod, tier, x, e));
      } else if (r < 90) {  // plain remove
        b.events.push_back(Remove(pod, tier, {x}));
      } else {  // re-store of a held block (idempotent)
        b.events.push_back(*Restore(pod, tier, x, e));
      }
    }
    index.ApplyBatch(Source(pod), b);
  }

  // Queries along the long chain (prefixes of random length, all contexts of the pods).
  void CheckChainQueries(int count) {
    for (int q = 0; q < count && !chain.empty(); ++q) {
      const int pod = static_cast<int>(rng() % kPods);
      const std::string model = ModelOf(pod);
      std::vector<int> path(chain.begin(),
                            chain.begin() + 1 + static_cast<long>(rng() % chain.size()));
      std::vector<uint32_t> tokens;
      for (int x : path) tokens.insert(tokens.end(), trie.tokens[x].begin(), trie.tokens[x].end());
      auto want = ref.Query(model, "", path);
      nonempty += !want.empty();
      for (auto& [k, v] : want) partial += v < path.size();
      std::map<std::pair<std::string, std::string>, uint32_t> got;
      for (const PodMatch& m : index.Match(HashContext{model, "", 0}, tokens)) {
        got[{m.pod, m.tier}] = m.matched_blocks;
      }
      ASSERT_EQ(got, want) << "chain query " << q << " model " << model << " blocks "
                           << path.size();
    }
  }

  std::map<std::pair<std::string, uint64_t>, RefEntry> saved;  // removed entries, to re-store

  void CheckRandomQueries(int count) {
    for (int q = 0; q < count; ++q) {
      const int pod = static_cast<int>(rng() % kPods);
      const std::string model = ModelOf(pod);
      const std::string ctx = rng() % 8 == 0 ? "lora-x" : "";
      std::vector<int> path = Descend(0, 1 + static_cast<int>(rng() % 40));
      if (path.empty()) continue;
      std::vector<uint32_t> tokens;
      for (int x : path) tokens.insert(tokens.end(), trie.tokens[x].begin(), trie.tokens[x].end());
      if (rng() % 4 == 0) tokens.push_back(7);  // partial tail is ignored
      auto want = ref.Query(model, ctx, path);
      nonempty += !want.empty();
      for (auto& [k, v] : want) partial += v < path.size();
      std::map<std::pair<std::string, std::string>, uint32_t> got;
      for (const PodMatch& m : index.Match(HashContext{model, ctx, 0}, tokens)) {
        got[{m.pod, m.tier}] = m.matched_blocks;
      }
      ASSERT_EQ(got, want) << "query " << q << " model " << model << " ctx '" << ctx << "' blocks "
                           << path.size();
    }
  }
};

void RunRandom(uint64_t seed, ExactIndexOptions opts, int steps, bool budgeted) {
  Harness h(seed, opts);
  for (int step = 0; step < steps; ++step) {
    const int pod = static_cast<int>(h.rng() % Harness::kPods);
    const uint64_t r = h.rng() % 100;
    if (r < 55) {
      h.RandomStore(pod);
    } else if (r < 80) {
      h.RandomRemove(pod);
    } else if (r < 88) {
      h.RandomTierAdd(pod);
    } else if (r < 91) {
      kv::EventBatch b;
      b.events.push_back(kv::AllBlocksCleared{});
      h.index.ApplyBatch(h.Source(pod), b);
      h.ref.Clear(h.pod_names[pod]);
    } else if (r < 93) {
      h.index.ClearPod(h.pod_names[pod]);
      h.ref.Clear(h.pod_names[pod]);
    } else if (r < 95) {
      h.index.RemovePod(h.pod_names[pod]);
      h.ref.pods.erase(h.pod_names[pod]);
    }
    if (budgeted) {
      h.Resync();
      ASSERT_LE(h.index.memberships(), opts.max_memberships + 64);
    }
    if (step % 50 == 0) {
      ASSERT_NO_FATAL_FAILURE(h.CheckRandomQueries(20)) << "seed " << seed << " step " << step;
    }
  }
  ASSERT_NO_FATAL_FAILURE(h.CheckRandomQueries(200)) << "seed " << seed;
  // The streams must exercise real answers, including partial matches.
  EXPECT_GT(h.nonempty, 50) << "seed " << seed;
  EXPECT_GT(h.partial, 20) << "seed " << seed;
  // Clearing everything leaves nothing behind.
  for (const auto& p : h.pod_names) h.index.RemovePod(p);
  EXPECT_EQ(h.index.memberships(), 0u);
}

TEST(ExactIndexRandomTest, MatchesReferenceModel) {
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    ExactIndexOptions opts;
    opts.block_size = kBs;
    ASSERT_NO_FATAL_FAILURE(RunRandom(seed, opts, 3000, false));
  }
}

// Hostile engines: long chains, then batches of (remove, re-store) pairs of heads and
// middles, pairs straddling batches, interleaved parents and duplicates, mixed with the
// ordinary random stream. The index is exact at batch boundaries.
void RunAdversarial(uint64_t seed, int steps) {
  ExactIndexOptions opts;
  opts.block_size = kBs;
  Harness h(seed, opts, /*long_chain=*/200);
  std::vector<std::vector<std::pair<std::string, uint64_t>>> carry(Harness::kPods);
  for (int p = 0; p < Harness::kPods; p += 2) h.StoreLongChain(p, p % 4 == 0 ? "GPU" : "CPU");
  for (int step = 0; step < steps; ++step) {
    const int pod = static_cast<int>(h.rng() % Harness::kPods);
    const uint64_t r = h.rng() % 100;
    if (r < 50) {
      h.AdversarialBatch(pod, carry[pod]);
    } else if (r < 75) {
      h.RandomStore(pod);
    } else if (r < 88) {
      h.RandomRemove(pod);
    } else if (r < 93) {
      h.RandomTierAdd(pod);
    } else if (r < 97) {
      h.StoreLongChain(pod, h.rng() % 2 ? "GPU" : "CPU");
    } else if (r < 98) {
      h.index.ClearPod(h.pod_names[pod]);
      h.ref.Clear(h.pod_names[pod]);
    }
    if (step % 25 == 0) {
      ASSERT_NO_FATAL_FAILURE(h.CheckRandomQueries(10)) << "seed " << seed << " step " << step;
      ASSERT_NO_FATAL_FAILURE(h.CheckChainQueries(5)) << "seed " << seed << " step " << step;
    }
  }
  ASSERT_NO_FATAL_FAILURE(h.CheckRandomQueries(100)) << "seed " << seed;
  ASSERT_NO_FATAL_FAILURE(h.CheckChainQueries(50)) << "seed " << seed;
  EXPECT_GT(h.nonempty, 50) << "seed " << seed;
  EXPECT_GT(h.partial, 20) << "seed " << seed;
  for (const auto& p : h.pod_names) h.index.RemovePod(p);
  EXPECT_EQ(h.index.memberships(), 0u);
}

TEST(ExactIndexRandomTest, MatchesReferenceModelUnderAdversarialRemoveRestore) {
  for (uint64_t seed = 200; seed < 224; ++seed) {
    ASSERT_NO_FATAL_FAILURE(RunAdversarial(seed, 1000));
  }
}

TEST(ExactIndexRandomTest, MatchesReferenceModelUnderBudgetEviction) {
  for (uint64_t seed = 100; seed <= 105; ++seed) {
    ExactIndexOptions opts;
    opts.block_size = kBs;
    opts.max_memberships = 300;
    opts.max_memberships_per_pod = 60;
    opts.evict_fraction = 0.1;
    ASSERT_NO_FATAL_FAILURE(RunRandom(seed, opts, 1500, true));
  }
}

}  // namespace
}  // namespace aibrix::prefix
