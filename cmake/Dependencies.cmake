# Every dependency comes from a Debian 12 package (scripts/install-deps.sh); see
# ../shared/design/dependencies.md for how each one is found.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(absl REQUIRED)
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)
find_package(CLI11 REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(simdjson REQUIRED)
find_package(prometheus-cpp REQUIRED)
find_package(cppzmq REQUIRED)
find_package(msgpack REQUIRED)
find_package(CURL REQUIRED)
# Boost 1.74 (libboost-dev): header-only Asio and Beast for the HTTP server and client.
find_package(Boost 1.74 REQUIRED)
# OpenSSL (libssl-dev): TLS for the upstream client (asio::ssl), e.g. an https remote tokenizer.
find_package(OpenSSL REQUIRED)
# gRPC 1.51 and protobuf 3.21 (libgrpc++-dev, protobuf-compiler-grpc, libprotobuf-dev): the
# Envoy ext_proc server (src/aibrix/extproc), its generated protos and the tests' fake Envoy.
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_package(GTest REQUIRED)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
pkg_check_modules(HIREDIS REQUIRED IMPORTED_TARGET hiredis)
pkg_check_modules(NGHTTP2 REQUIRED IMPORTED_TARGET libnghttp2)
if(AIBRIX_BUILD_BENCH)
  find_package(benchmark REQUIRED)
endif()
