#include "bench/common/figures.h"

#include <cstdio>
#include <limits>

namespace aibrix::bench {
namespace {

// Keeps the console output and records the best time per run name.
class FigureReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.run_type != Run::RT_Iteration || run.iterations == 0) continue;
      const double ns =
          run.GetAdjustedRealTime() * (run.time_unit == benchmark::kNanosecond    ? 1.0
                                       : run.time_unit == benchmark::kMicrosecond ? 1e3
                                       : run.time_unit == benchmark::kMillisecond ? 1e6
                                                                                  : 1e9);
      auto [it, inserted] = best_.try_emplace(run.benchmark_name(), ns);
      if (!inserted && ns < it->second) it->second = ns;
    }
  }
  const std::map<std::string, double>& best() const { return best_; }

 private:
  std::map<std::string, double> best_;
};

}  // namespace

int RunAndPrintFigures(int argc, char** argv, const std::map<std::string, FigureSpec>& figures) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  FigureReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  for (const auto& [run, spec] : figures) {
    auto it = reporter.best().find(run);
    if (it == reporter.best().end()) continue;
    std::printf("figure %s %.1f %s\n", spec.figure.c_str(), it->second * spec.scale,
                spec.unit.c_str());
  }
  return 0;
}

void PrintFigure(std::string_view name, double value, std::string_view unit, int decimals) {
  std::printf("figure %.*s %.*f %.*s\n", static_cast<int>(name.size()), name.data(), decimals,
              value, static_cast<int>(unit.size()), unit.data());
  std::fflush(stdout);
}

}  // namespace aibrix::bench
