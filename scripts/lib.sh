# Sourced by the build scripts: one place for how each build directory is configured.
#   configure DIR [CMAKE_ARGS...]  RelWithDebInfo at -O2 -DNDEBUG (optimised like the default
#                                  build, no debug info to keep builds short; not -O3: GCC 12
#                                  raises false -Wrestrict errors in std::string there),
#                                  through ccache when present
#   configure_asan                 build-asan/: clang, ASan+UBSan, libFuzzer coverage and
#                                  -Wthread-safety -Werror — the tests, the fuzz targets and
#                                  the thread-safety check share its objects
jobs=${AIBRIX_JOBS:-2}

configure() {
  local dir=$1
  shift
  local launcher=()
  if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -DNDEBUG" "${launcher[@]}" "$@" >/dev/null
}

configure_asan() {
  configure build-asan -DCMAKE_CXX_COMPILER=clang++-14 -DAIBRIX_SANITIZE=asan -DAIBRIX_FUZZ=ON \
    -DAIBRIX_BUILD_BENCH=OFF
}
