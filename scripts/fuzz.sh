#!/usr/bin/env bash
# Builds the libFuzzer targets in the ASan build (build-asan/, scripts/lib.sh) and runs each
# for SECONDS (default 60) on a copy of its seed corpus, one target per core at a time
# (AIBRIX_JOBS, default 2). A crash, a leak-free abort or a timeout fails the run.
# Usage: bash scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
source scripts/lib.sh
configure_asan
targets=()
declare -A corpus_of
while read -r name dir; do
  [ -n "$name" ] || continue
  targets+=("$name")
  corpus_of[$name]=$dir
done <build-asan/fuzz_targets.txt
if [ "${#targets[@]}" -eq 0 ]; then
  echo "fuzz: no targets in build-asan/fuzz_targets.txt" >&2
  exit 1
fi
cmake --build build-asan -j"$jobs" --target "${targets[@]}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
# Runs one target on a copy of its seeds; its verdict goes to $work/TARGET.status.
fuzz_one() {
  local target=$1
  local corpus="$work/$target" log="build-asan/$1.log"
  mkdir -p "$corpus"
  cp -r "${corpus_of[$target]}"/. "$corpus"/
  if build-asan/bin/"$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix=build-asan/ "$corpus" >"$log" 2>&1; then
    echo ok >"$work/$target.status"
  else
    echo failed >"$work/$target.status"
  fi
}
# One target per core at a time (each fuzzer is single-threaded).
for target in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  echo "== fuzz $target for ${seconds} s"
  fuzz_one "$target" &
done
wait
failed=0
for target in "${targets[@]}"; do
  log="build-asan/$target.log"
  if [ "$(cat "$work/$target.status" 2>/dev/null)" = ok ]; then
    echo "== fuzz $target: ok"
    tail -n 8 "$log"
  else
    grep -v '^#' "$log" | tail -n 60
    echo "fuzz: $target failed (log: $log; the input is in build-asan/crash-*)" >&2
    failed=1
  fi
done
exit "$failed"
