#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (build-fuzz/) and runs each for SECONDS (default 60)
# on a copy of its seed corpus. A crash, a leak-free abort or a timeout fails the run.
# Usage: bash scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
jobs=${AIBRIX_JOBS:-2}
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S . -B build-fuzz -DAIBRIX_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++-14 \
  -DAIBRIX_BUILD_BENCH=OFF "${launcher[@]}" >/dev/null
# Every target and its seed corpus, as CMake registered them (aibrix_fuzz ... CORPUS).
targets=()
declare -A corpus_of
while read -r name dir; do
  [ -n "$name" ] || continue
  targets+=("$name")
  corpus_of[$name]=$dir
done <build-fuzz/fuzz_targets.txt
if [ "${#targets[@]}" -eq 0 ]; then
  echo "fuzz: no targets in build-fuzz/fuzz_targets.txt" >&2
  exit 1
fi
cmake --build build-fuzz -j"$jobs" --target "${targets[@]}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
for target in "${targets[@]}"; do
  corpus="$work/$target"
  mkdir -p "$corpus"
  cp -r "${corpus_of[$target]}"/. "$corpus"/
  echo "== fuzz $target for ${seconds} s"
  log="build-fuzz/$target.log"
  if ! build-fuzz/bin/"$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix=build-fuzz/ "$corpus" >"$log" 2>&1; then
    grep -v '^#' "$log" | tail -n 60
    echo "fuzz: $target failed (log: $log; the input is in build-fuzz/crash-*)" >&2
    exit 1
  fi
  tail -n 8 "$log"
done
