# parley image: a Debian bookworm build stage, then a slim runtime with only the shared libraries parley
# links (librdkafka, hiredis, libcurl, cJSON, libyaml, libuv, libmicrohttpd, OpenSSL) and a non-root user.
#   docker build -t parley:0.1.0 .
#   docker run --rm -v $PWD/configs/parley.yaml:/etc/parley/parley.yaml:ro -p 9090:9090 parley:0.1.0
# tests/integration/30_helm_chart.sh checks that the runtime packages exist and cover `ldd build/parley`.

FROM debian:bookworm AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential pkg-config \
      librdkafka-dev libhiredis-dev libcurl4-openssl-dev libcjson-dev libyaml-dev libuv1-dev \
      libmicrohttpd-dev libssl-dev libnghttp2-dev libmimalloc-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY cmd ./cmd
COPY internal ./internal
RUN make -j"$(nproc)" all && strip build/parley && ./build/parley --version

FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      librdkafka1 libhiredis0.14 libcurl4 libcjson1 libyaml-0-2 libuv1 libmicrohttpd12 libssl3 libnghttp2-14 libmimalloc2.0 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 parley \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin parley
COPY --from=build /src/build/parley /usr/local/bin/parley
COPY configs/parley.yaml /etc/parley/parley.yaml
USER 10001
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/parley"]
CMD ["worker", "-c", "/etc/parley/parley.yaml"]
