#!/usr/bin/env bash
# Builds aibrix-cache and runs it on the bundled example config (examples/static.yaml) until
# Ctrl-C. Extra arguments are service flags.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build >/dev/null
cmake --build build -j"${AIBRIX_JOBS:-2}" --target aibrix-cache
echo "aibrix-cache on http://127.0.0.1:8090 — try: curl -s 127.0.0.1:8090/cache/pods"
exec build/bin/aibrix-cache --static-config examples/static.yaml "$@"
