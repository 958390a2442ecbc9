// Helpers shared by the algorithms (not part of the module's API).
//
// Thread safety: pure functions over immutable snapshots; RandomSource is thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "aibrix/prefix/types.h"
#include "aibrix/routing/algorithm.h"
#include "aibrix/routing/random_source.h"
#include "aibrix/store/store.h"

namespace aibrix::prefix {
class BlockHasher;
class PrefixMatcher;
}  // namespace aibrix::prefix

namespace aibrix::routing::internal {

// The (model, adapter) the prompt's blocks are hashed under: the base model of the ready pods
// (the first with one, else the request's model), and the request's lora, else the request's
// model when it is not that base model (an adapter name), else "" (the base model itself).
struct HashTarget {
  std::string_view model;
  std::string_view adapter;
};
HashTarget ResolveHashTarget(const RouteRequest& request, const store::ModelPods& pods);

// One candidate per ready pod, in order, with `running` filled (PodState::total_running():
// this process's requests and those other replicas report) and score 0.
std::vector<Candidate> BaseCandidates(const store::ModelPods& pods);

// Index of a candidate with the lowest non-NaN score, ties broken uniformly at random; only
// candidates with eligible[i] (when `eligible` is non-empty). -1 when none qualifies.
int PickLowest(std::span<const Candidate> candidates, RandomSource& random,
               std::span<const char> eligible = {});

// Index of a candidate with the highest non-NaN score, ties random (eligible as above).
int PickHighest(std::span<const Candidate> candidates, RandomSource& random,
                std::span<const char> eligible = {});

// Index of a candidate with the fewest running requests, ties random (eligible as above).
int PickLeastRunning(std::span<const Candidate> candidates, RandomSource& random,
                     std::span<const char> eligible = {});

// Index of `pod_key` in `pods.ready` (sorted by key), -1 when absent.
int FindReady(const store::ModelPods& pods, std::string_view pod_key);

// The block hasher of the indexes (the matcher's, else the approximate index's); null when the
// router has neither.
const prefix::BlockHasher* IndexHasher(const AlgorithmEnv& env);

// The prompt's block keys and, per ready pod, the leading blocks held according to each index
// (the best tier of the exact index; 0 when not held or no index).
struct PrefixMatches {
  std::vector<uint64_t> keys;
  int block_size = 0;
  std::vector<uint32_t> exact;   // per ready pod
  std::vector<uint32_t> approx;  // per ready pod
};
PrefixMatches MatchPrefix(const AlgorithmEnv& env, const RouteRequest& request,
                          const store::ModelPods& pods);

// A decision for candidates[chosen].
Decision MakeDecision(std::string_view algorithm, std::vector<Candidate> candidates, int chosen,
                      uint32_t total_blocks = 0);

}  // namespace aibrix::routing::internal
