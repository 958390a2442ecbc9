#!/usr/bin/env bash
# Compiles every library and binary with clang and -Wthread-safety -Werror (build-clang/):
# members annotated ABSL_GUARDED_BY (store, prefix, kvevents, http, ...) must be touched
# only under their lock.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${AIBRIX_JOBS:-2}
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S . -B build-clang -DCMAKE_CXX_COMPILER=clang++-14 -DAIBRIX_BUILD_BENCH=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -DNDEBUG" \
  "${launcher[@]}" >/dev/null
cmake --build build-clang -j"$jobs" --target aibrix-cache engine-sim loadgen
