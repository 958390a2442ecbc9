#!/usr/bin/env bash
# Installs every build, test and runtime dependency of aibrix-cache from Debian 12 packages.
# Idempotent; used by the README's commands and by .ci/run. Needs root or sudo.
# Also fetches Envoy's API protos (Debian does not package them) into third_party/ (gitignored):
# the npm package @grpc/grpc-js-xds ships the whole closure of Envoy's ext_proc service; the
# version and the tarball's sha512 are pinned below, and CMake only compiles what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config git ca-certificates ccache
  clang-14 libclang-rt-14-dev clang-format-14
  libzmq3-dev cppzmq-dev libmsgpack-cxx-dev libboost-dev
  prometheus-cpp-dev libcurl4-openssl-dev libcpp-httplib-dev
  nlohmann-json3-dev libsimdjson-dev libxxhash-dev libabsl-dev
  libhiredis-dev redis-server libnghttp2-dev
  libspdlog-dev libfmt-dev libcli11-dev libyaml-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libgrpc++-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev grpc-proto
  python3 python3-yaml curl openssl
)

# Envoy's API protos, from the npm registry through npm itself (the machine's Node.js).
xds_package="@grpc/grpc-js-xds"
xds_version="1.14.1"
xds_integrity="sha512-F2mVXwEeMWw1znPUrp+8ykjsIOVnf7Rv+EyIvXOfz73w5tNolCnzokpLkE/d2Ehx30PJmZXqCQdMpx8DcBJohA=="
xds_dir="third_party/grpc-js-xds"
fetch_envoy_protos() {
  if [ "$(cat "$xds_dir/VERSION" 2>/dev/null)" = "$xds_version $xds_integrity" ]; then
    return 0
  fi
  if ! command -v npm >/dev/null; then
    echo "install-deps: npm is needed to fetch $xds_package (Envoy's API protos)" >&2
    exit 1
  fi
  local work
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent "$xds_package@$xds_version" >/dev/null)
  local tarball got
  tarball=$(ls "$work"/*.tgz)
  got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
  if [ "$got" != "$xds_integrity" ]; then
    echo "install-deps: $xds_package@$xds_version checksum mismatch: got $got" >&2
    rm -rf "$work"
    exit 1
  fi
  rm -rf "$xds_dir"
  mkdir -p "$xds_dir"
  tar xzf "$tarball" -C "$work" package/deps
  mv "$work"/package/deps/envoy-api "$work"/package/deps/xds "$work"/package/deps/protoc-gen-validate \
    "$xds_dir"/
  echo "$xds_version $xds_integrity" >"$xds_dir/VERSION"
  rm -rf "$work"
  echo "install-deps: Envoy API protos from $xds_package@$xds_version in $xds_dir"
}

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  fetch_envoy_protos
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fetch_envoy_protos
