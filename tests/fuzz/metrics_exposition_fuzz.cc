// libFuzzer target: the whole path an engine's /metrics body takes in the service — the
// exposition parser, then the extraction of every engine's registered metrics (as one body
// and as two data-parallel ports' bodies) into store values, and the parse a scrape does (only
// the registered families). Any input must end in a parsed body or an error, never a crash;
// what is parsed must be self-consistent.
// Seed corpus: tests/testdata/metrics.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "aibrix/metrics/exposition.h"
#include "aibrix/metrics/extract.h"
#include "aibrix/metrics/registry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace aibrix::metrics;
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  ParseOptions options;
  options.max_bytes = 1 << 20;
  options.max_series = 1000;
  auto parsed = ParseExposition(body, options);
  if (!parsed.ok()) return 0;
  if (parsed->series_count() > options.max_series) std::abort();
  size_t series = 0;
  for (const Family& family : parsed->families()) {
    series += family.series.size();
    for (const Series& s : family.series) {
      if (s.labels_begin > s.labels_end) std::abort();
      for (const Label& label : parsed->labels(s)) {
        if (label.name.empty()) std::abort();
      }
    }
  }
  if (series != parsed->series_count()) std::abort();
  // As a scrape parses it: only the families of the registered vLLM metrics. A skipped family
  // has no series.
  static const auto vllm_names = BoundNames(EngineMetricRegistry::Default().BindingsFor("vllm"));
  ParseOptions only = options;
  only.only_families = &vllm_names;
  if (auto filtered = ParseExposition(body, only); filtered.ok()) {
    size_t kept = 0;
    for (const Family& family : filtered->families()) {
      if (family.skipped && !family.series.empty()) std::abort();
      kept += family.series.size();
    }
    if (kept != filtered->series_count()) std::abort();
  }
  // The two halves of the input as two ports of one pod.
  auto half = ParseExposition(body.substr(size / 2), options);
  for (std::string_view engine : {"vllm", "sglang", "trtllm", "xllm"}) {
    const auto bindings = EngineMetricRegistry::Default().BindingsFor(engine);
    Extractor extractor(bindings, "pod-model");
    extractor.Add(*parsed);
    if (half.ok()) extractor.Add(*half);
    const Extracted out = extractor.Finish({});
    for (const auto& value : out.model) {
      if (value.model.empty()) std::abort();
    }
  }
  return 0;
}
