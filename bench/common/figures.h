// Runs the registered Google Benchmarks and prints the figures an issue names, as lines
// `figure <name> <value> <unit>` after the normal report; PrintFigure prints one such line
// for benchmarks that measure by themselves.
//
// Thread safety: call from main only.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "benchmark/benchmark.h"

namespace aibrix::bench {

// Maps a benchmark run name (as Google Benchmark reports it) to the figure it yields; the
// value is the run's real time per iteration in nanoseconds, scaled by `scale`.
struct FigureSpec {
  std::string figure;
  std::string unit;
  double scale = 1.0;
};

// Initialises Google Benchmark with argc/argv, runs everything, then prints one figure line
// per matched run (the best of repetitions). Returns the process exit code.
int RunAndPrintFigures(int argc, char** argv, const std::map<std::string, FigureSpec>& figures);

// Prints one line `figure <name> <value> <unit>` with `decimals` digits after the point, for
// benchmarks that measure their figures themselves (not through Google Benchmark).
void PrintFigure(std::string_view name, double value, std::string_view unit, int decimals = 1);

}  // namespace aibrix::bench
