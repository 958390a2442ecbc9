#!/usr/bin/env bash
# Builds and runs the tests under a sanitizer, in build-<name>/:
#   asan  AddressSanitizer + UBSan, the whole suite
#   tsan  ThreadSanitizer, the tests of the concurrent modules (HTTP server and client,
#         gateway, store, prefix index, KV event subscriber and manager, static discovery's
#         file watcher and reloads, proxy and service integration), suppressions in
#         tests/sanitizers/tsan.supp
# Usage: bash scripts/sanitize.sh asan|tsan
set -euo pipefail
cd "$(dirname "$0")/.."
sanitizer=${1:?usage: sanitize.sh asan|tsan}
jobs=${AIBRIX_JOBS:-2}
dir="build-$sanitizer"
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S . -B "$dir" -DAIBRIX_SANITIZE="$sanitizer" -DAIBRIX_BUILD_BENCH=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -DNDEBUG" \
  "${launcher[@]}" >/dev/null
case "$sanitizer" in
  asan)
    # Leak checking is off: uninstrumented Debian libraries (libzmq, httplib) keep
    # allocations alive at exit, which LSan would report from processes stopped on purpose.
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    cmake --build "$dir" -j"$jobs"
    ctest --test-dir "$dir" --output-on-failure -j"$jobs" --timeout 300
    ;;
  tsan)
    export TSAN_OPTIONS="suppressions=$PWD/tests/sanitizers/tsan.supp halt_on_error=1 second_deadlock_stack=1"
    targets=(http_test gateway_test store_test prefix_test tracking_test kvevents_subscriber_test
             kvevents_manager_test discovery_test static_reload_test proxy_failure_test
             aibrix-cache engine-sim)
    cmake --build "$dir" -j"$jobs" --target "${targets[@]}"
    ctest --test-dir "$dir" --output-on-failure -j"$jobs" --timeout 600 \
      -R '^(HttpServer|HttpParser|Router|Client|UsageScanner|RequestBody|Store|Pod|RequestTable|MetricValue|ExactIndex|ApproxIndex|EngineMap|BlockHash|Mix64|HolderTable|Match|Prefix|RequestTrace|OutputPredictor|RequestTracker|Subscriber|Manager|ProxyFailure|StaticProvider|FileWatcher|StaticReload|TokenizerLog|ModelTokenizers)'
    ;;
  *)
    echo "unknown sanitizer '$sanitizer' (asan or tsan)" >&2
    exit 2
    ;;
esac
