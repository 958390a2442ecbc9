// aibrix::profile::GpuProfile — one (model, deployment) performance profile written to Redis
// by AIBrix's GPU optimizer (spec §5): throughput, latency, TTFT and TPOT tables over a grid
// of (output tokens, input tokens), and the SLOs the deployment is held to.
//
//   auto profile = ParseGpuProfile(redis_value);        // the JSON document, untrusted
//   auto sig = profile->Signature({predicted_output, prompt_tokens});
//   double rps = *profile->Throughput(*sig);
//
// Thread safety: a plain value; const methods are safe from any thread.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace aibrix::profile {

// Rows of numbers: table[i][j] is the value at output-grid index i and input-grid index j.
using Table = std::vector<std::vector<double>>;

// The SLOs of a deployment (0 = not set). Seconds, requests/s or tokens/s.
struct Slos {
  int percentile = 0;
  double tput = 0;  // request throughput
  double tt = 0;    // token throughput
  double e2e = 0;   // end-to-end latency
  double ttft = 0;  // time to first token
  double tpat = 0;  // time per token, prompt and output together (normalised E2E)
  double tpot = 0;  // time per output token
};

struct GpuProfile {
  std::string deployment;  // "gpu": the deployment (GPU type) the profile was measured on
  double cost = 0;         // cost of the GPU per unit of time
  double created = 0;      // Unix seconds; a newer profile replaces an older one
  // indexes[0]: the output-token grid, indexes[1]: the input-token grid, ascending, as log2 of
  // the document's token counts.
  Table indexes;
  // Absent tables are nullopt ("no data"), as the reference's nil slices.
  std::optional<Table> tputs;  // max requests/s
  std::optional<Table> e2e;    // mean end-to-end latency, s
  std::optional<Table> ttft;   // mean time to first token, s
  std::optional<Table> tpot;   // mean time per output token, s
  Slos slos;

  // The grid cell of `features` ([output tokens, input tokens], token counts >= 0): per
  // dimension, the grid point nearest to log2(feature) (the upper one when exactly halfway;
  // 0 tokens → the first point; beyond either end → that end).
  // Errors (InvalidArgument): no features, a negative or non-finite feature, more features
  // than grid rows (the reference indexed past its grid here ⚠).
  absl::StatusOr<std::vector<int>> Signature(std::span<const double> features) const;

  // The table value at `signature`. Errors: NotFound when the profile has no such table,
  // InvalidArgument for fewer than 2 dimensions, OutOfRange outside the table.
  absl::StatusOr<double> Throughput(std::span<const int> signature) const;
  absl::StatusOr<double> Latency(std::span<const int> signature) const;
  absl::StatusOr<double> Ttft(std::span<const int> signature) const;
  absl::StatusOr<double> Tpot(std::span<const int> signature) const;
};

// Parses the JSON document (fields gpu, cost, created, indexes, tputs, e2e, ttft, tpot, slos;
// unknown fields are ignored) and takes log2 of every index. Untrusted input: anything else
// is an InvalidArgument naming the field — not JSON, not an object, a field of the wrong type,
// a non-finite number, an index grid with fewer than 2 rows, an empty row, a token count <= 0
// or a row that does not ascend.
absl::StatusOr<GpuProfile> ParseGpuProfile(std::string_view json);

}  // namespace aibrix::profile
