# tokengate's module as an OCI image: one layer holding /plugin.wasm, the form Istio's
# WasmPlugin fetcher takes (and what `cargo xtask image` writes without Docker).
#   docker build -t registry.example.com/platform/tokengate:0.1.0 .
#   docker push registry.example.com/platform/tokengate:0.1.0
# The other stages serve docker compose (docker-compose.yaml, envoy/fleet/docker-compose.yaml).

# The module, built as `cargo xtask build` builds it (trimmed exports, wasm-opt from npm).
FROM rust:1.95-slim-bookworm AS module
RUN apt-get update && apt-get install -y --no-install-recommends npm && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo xtask build && cp target/wasm32-wasip1/release/tokengate.wasm /tokengate.wasm

# The mock IdP of the demo and the fleet: built and run on the same Debian release (glibc).
FROM rust:1.95-slim-bookworm AS mock-idp-build
WORKDIR /src
COPY . .
RUN cargo build --release -p mock-idp

FROM debian:bookworm-slim AS mock-idp
COPY --from=mock-idp-build /src/target/release/mock-idp /usr/local/bin/mock-idp
EXPOSE 9090
ENTRYPOINT ["mock-idp"]

# The official Envoy image, pinned to the version the tests run, with the module.
FROM envoyproxy/envoy:v1.40.0 AS envoy
COPY --from=module /tokengate.wasm /etc/envoy/tokengate.wasm

# openssl, for the demos' certificates below: CAs made at build time, on your machine, for
# these demos only (bring your own PKI in production).
FROM debian:bookworm-slim AS openssl
RUN apt-get update && apt-get install -y --no-install-recommends openssl && rm -rf /var/lib/apt/lists/*

# The compose demo's HTTPS listener (docker-compose.yaml): a CA and a certificate for
# localhost and 127.0.0.1. Its CA is /etc/envoy/tls/ca.crt in the envoy container:
#   docker compose cp envoy:/etc/envoy/tls/ca.crt target/demo/ca.crt
FROM openssl AS demo-certs
COPY envoy/make-demo-certs.sh /make-demo-certs.sh
RUN sh /make-demo-certs.sh /tls

FROM envoy AS envoy-demo
COPY --from=demo-certs /tls /etc/envoy/tls

# Certificates for the compose fleet's mutual TLS between edges and gateways.
FROM openssl AS fleet-certs
COPY envoy/fleet/make-certs.sh /make-certs.sh
RUN sh /make-certs.sh /tls

FROM envoy AS envoy-fleet
COPY --from=fleet-certs /tls /etc/envoy/tls

# Last, so a plain `docker build .` gives the module image.
FROM scratch
COPY --from=module /tokengate.wasm /plugin.wasm
