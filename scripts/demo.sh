#!/usr/bin/env bash
# The main job: builds aibrix-cache, engine-sim and loadgen, then runs the demo — N engine-sims
# with KV events behind the service, the same workload once per routing algorithm, and the
# oracle — and prints the comparison table and figures (tools/demo/run_demo.py, docs/demo.md).
# Extra arguments go to the demo script (e.g. --algorithms random,prefix-cache-kv).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build >/dev/null
cmake --build build -j"${AIBRIX_JOBS:-2}" --target aibrix-cache engine-sim loadgen
exec python3 tools/demo/run_demo.py --build-dir build "$@"
