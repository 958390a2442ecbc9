#!/usr/bin/env bash
# Installs dependencies, builds everything, and runs the whole test suite: once in a normal
# build (build/) and once under AddressSanitizer+UBSan (build-asan/). Set AIBRIX_SANITIZERS
# to choose the sanitizer builds ("asan tsan", "tsan", or "" for none).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

jobs=${AIBRIX_JOBS:-2}
run_suite() {
  local dir=$1; shift
  cmake -S . -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  ctest --test-dir "$dir" --output-on-failure -j"$jobs" --timeout 300
}

echo "== build and test (build/)"
run_suite build
for sanitizer in ${AIBRIX_SANITIZERS-asan}; do
  echo "== build and test under $sanitizer (build-$sanitizer/)"
  run_suite "build-$sanitizer" -DAIBRIX_SANITIZE="$sanitizer" -DAIBRIX_BUILD_BENCH=OFF
done
echo "== all tests passed"
