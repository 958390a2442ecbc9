// libFuzzer target: the static discovery YAML parser must answer any input with a config or
// an error naming the field and line, never crash. Seed corpus: examples/static.yaml.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "aibrix/discovery/static_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto config = aibrix::discovery::ParseStaticConfig(
      std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.yaml");
  if (config.ok()) {
    (void)aibrix::discovery::StaticPods(*config);
    (void)aibrix::discovery::StaticAdapters(*config);
  }
  return 0;
}
