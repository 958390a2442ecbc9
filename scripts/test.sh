#!/usr/bin/env bash
# Installs dependencies, builds everything (build/, through ccache when present) and runs the
# whole test suite. The quick check a user runs; .ci/run adds the sanitizer, thread-safety
# and fuzz stages (scripts/sanitize.sh, scripts/thread-safety.sh, scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

jobs=${AIBRIX_JOBS:-2}
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
echo "== build and test (build/)"
# Optimised like the default build (-O2), without debug info to keep builds short.
# (-O3 is avoided: GCC 12 raises false -Wrestrict errors in std::string at -O3.)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -DNDEBUG" "${launcher[@]}" >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 300
echo "== all tests passed"
