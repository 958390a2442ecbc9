#!/usr/bin/env bash
# Installs every build, test and runtime dependency of aibrix-cache from Debian 12 packages.
# Idempotent; used by the README's commands and by .ci/run. Needs root or sudo.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git ca-certificates ccache
  clang-14 libclang-rt-14-dev clang-format-14
  libzmq3-dev cppzmq-dev libmsgpack-cxx-dev libboost-dev
  prometheus-cpp-dev libcurl4-openssl-dev libcpp-httplib-dev
  nlohmann-json3-dev libsimdjson-dev libxxhash-dev libabsl-dev
  libhiredis-dev redis-server
  libspdlog-dev libfmt-dev libcli11-dev libyaml-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-yaml curl
)

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
