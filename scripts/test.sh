#!/usr/bin/env bash
# Installs dependencies, builds everything (build/, through ccache when present) and runs the
# whole test suite. The quick check a user runs; .ci/run adds the sanitizer and fuzz stages
# (scripts/sanitize.sh, scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

source scripts/lib.sh
echo "== build and test (build/)"
configure build
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 300
echo "== all tests passed"
