#include "aibrix/routing/internal.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "aibrix/prefix/approx_index.h"
#include "aibrix/prefix/match.h"

namespace aibrix::routing::internal {

HashTarget ResolveHashTarget(const RouteRequest& request, const store::ModelPods& pods) {
  std::string_view base = request.model;
  for (const store::PodRef& pod : pods.ready) {
    if (!pod->model.empty()) {
      base = pod->model;
      break;
    }
  }
  if (!request.lora.empty()) return {base, request.lora};
  if (request.model != base) return {base, request.model};
  return {base, {}};
}

std::vector<Candidate> BaseCandidates(const store::ModelPods& pods) {
  std::vector<Candidate> out;
  out.reserve(pods.ready.size());
  for (const store::PodRef& pod : pods.ready) {
    out.push_back(Candidate{pod, 0.0, 0, pod->state->total_running()});
  }
  return out;
}

namespace {

// Reservoir-style uniform pick among the minima of key(i).
template <typename Key>
int PickMin(size_t n, RandomSource& random, std::span<const char> eligible, Key key) {
  int chosen = -1;
  double best = std::numeric_limits<double>::infinity();
  size_t ties = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!eligible.empty() && !eligible[i]) continue;
    const double k = key(i);
    if (std::isnan(k)) continue;
    if (chosen < 0 || k < best) {
      chosen = static_cast<int>(i);
      best = k;
      ties = 1;
    } else if (k == best) {
      ++ties;
      if (random.Uniform(ties) == 0) chosen = static_cast<int>(i);
    }
  }
  return chosen;
}

}  // namespace

int PickLowest(std::span<const Candidate> candidates, RandomSource& random,
               std::span<const char> eligible) {
  return PickMin(candidates.size(), random, eligible,
                 [&](size_t i) { return candidates[i].score; });
}

int PickHighest(std::span<const Candidate> candidates, RandomSource& random,
                std::span<const char> eligible) {
  return PickMin(candidates.size(), random, eligible,
                 [&](size_t i) { return -candidates[i].score; });
}

int PickLeastRunning(std::span<const Candidate> candidates, RandomSource& random,
                     std::span<const char> eligible) {
  return PickMin(candidates.size(), random, eligible,
                 [&](size_t i) { return static_cast<double>(candidates[i].running); });
}

int FindReady(const store::ModelPods& pods, std::string_view pod_key) {
  auto it =
      std::lower_bound(pods.ready.begin(), pods.ready.end(), pod_key,
                       [](const store::PodRef& p, std::string_view key) { return p->key < key; });
  if (it == pods.ready.end() || (*it)->key != pod_key) return -1;
  return static_cast<int>(it - pods.ready.begin());
}

const prefix::BlockHasher* IndexHasher(const AlgorithmEnv& env) {
  if (env.deps.matcher != nullptr) return &env.deps.matcher->hasher();
  if (env.deps.approx != nullptr) return &env.deps.approx->hasher();
  return nullptr;
}

PrefixMatches MatchPrefix(const AlgorithmEnv& env, const RouteRequest& request,
                          const store::ModelPods& pods) {
  PrefixMatches m;
  m.exact.assign(pods.ready.size(), 0);
  m.approx.assign(pods.ready.size(), 0);
  const prefix::BlockHasher* hasher = IndexHasher(env);
  if (hasher == nullptr) return m;
  m.block_size = hasher->block_size();
  const HashTarget target = ResolveHashTarget(request, pods);
  m.keys = hasher->Hash(prefix::HashContext{target.model, target.adapter, 0}, request.tokens);
  if (m.keys.empty()) return m;
  const auto visit = [&](std::vector<uint32_t>& into) {
    return [&pods, &into](std::string_view pod, std::string_view /*tier*/, uint32_t blocks) {
      const int i = FindReady(pods, pod);
      if (i >= 0) into[i] = std::max(into[i], blocks);
    };
  };
  if (env.deps.matcher != nullptr) {
    // One pass over both indexes through the facade, split by source.
    env.deps.matcher->VisitKeys(m.keys, [&](std::string_view pod, std::string_view /*tier*/,
                                            uint32_t blocks, prefix::MatchSource source) {
      const int i = FindReady(pods, pod);
      if (i < 0) return;
      auto& into = source == prefix::MatchSource::kEvents ? m.exact : m.approx;
      into[i] = std::max(into[i], blocks);
    });
  } else {
    env.deps.approx->MatchKeys(m.keys, visit(m.approx));
  }
  return m;
}

Decision MakeDecision(std::string_view algorithm, std::vector<Candidate> candidates, int chosen,
                      uint32_t total_blocks) {
  Decision d;
  d.pod = candidates[chosen].pod;
  d.algorithm = std::string(algorithm);
  d.matched_blocks = candidates[chosen].matched_blocks;
  d.total_blocks = total_blocks;
  d.candidates = std::move(candidates);
  return d;
}

}  // namespace aibrix::routing::internal
