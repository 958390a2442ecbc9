# aibrix-cache container image: Debian 12, two stages.
#   docker build -t aibrix-cache:latest .
# The build stage installs the build dependencies with the same script as every other build
# (scripts/install-deps.sh) and builds the service in Release. The runtime stage is
# debian:12-slim with only the shared libraries the binary links (the list below; the test
# deploy_manifests_test checks it against the binary's own dependencies), run as a non-root
# user. deploy/kubernetes/ runs it; docs/deploy.md.

FROM debian:12 AS build
ENV DEBIAN_FRONTEND=noninteractive
COPY scripts/install-deps.sh /src/scripts/install-deps.sh
RUN bash /src/scripts/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . /src
WORKDIR /src
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DAIBRIX_BUILD_BENCH=OFF \
 && cmake --build /build -j"$(nproc)" --target aibrix-cache \
 && strip /build/bin/aibrix-cache

FROM debian:12-slim AS runtime
# runtime-packages-begin
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates \
      libabsl20220623 \
      libfmt9 \
      libprometheus-cpp-core1.0 \
      libsimdjson14 \
      libspdlog1.10 \
      libssl3 \
      libyaml-cpp0.7 \
      libzmq5 \
 && rm -rf /var/lib/apt/lists/*
# runtime-packages-end
RUN groupadd --system --gid 65532 aibrix \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin aibrix
COPY --from=build /build/bin/aibrix-cache /usr/local/bin/aibrix-cache
USER 65532:65532
EXPOSE 8090
ENTRYPOINT ["/usr/local/bin/aibrix-cache"]
CMD ["--discovery=kubernetes", "--http-addr=0.0.0.0:8090"]
