# syntax=docker/dockerfile:1
#
# faultd image: the daemon and the shared libraries it needs (glibc, libgcc_s), on an empty base.
# Network partitions talk nf_tables netlink directly: no `nft` program, no nftables libraries.
# No shell, no package manager. `/usr/local/bin/chaos-daemon` links to faultd so Chaos Mesh's Helm
# chart (`command: [/usr/local/bin/chaos-daemon, --runtime, ..., --grpc-port, ...]`) runs it
# unchanged. Contents and size: deploy/README.md ("The image"); tests/deploy/test_image.py
# assembles the same filesystem with deploy/image/assemble-rootfs.sh and checks it.
#
#   docker build -t faultd:0.1.0 .
#
# Needs BuildKit (the default builder since Docker 23) for the cache mount.

# --- 1. build ---------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
# build.rs compiles proto/ with protox (pure Rust): no protoc needed.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto/ proto/
COPY src/ src/
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked --bin faultd

# --- 2. lay out the runtime filesystem ----------------------------------------------------------
# Same Debian release as the builder, so faultd's glibc comes from the release it was linked with.
FROM debian:bookworm-slim AS rootfs
COPY deploy/image/assemble-rootfs.sh /usr/local/sbin/assemble-rootfs.sh
COPY --from=builder /src/target/release/faultd /staging/faultd
# Byteman for JVMChaos: the distribution Chaos Mesh's rules expect (Byteman, LGPL-2.1, and Chaos
# Mesh's helper jars), unmodified, as chaos-daemon's image fetches it. Only the jars and their
# licence go into the image: no JRE (faultd attaches to the JVM and talks to Byteman itself).
ARG BYTEMAN_DIST=byteman-chaos-mesh-download-v4.0.24-0.12
ADD https://mirrors.chaos-mesh.org/${BYTEMAN_DIST}.tar.gz /staging/byteman.tar.gz
RUN mkdir -p /staging/byteman-dist /staging/byteman \
 && tar -xzf /staging/byteman.tar.gz -C /staging/byteman-dist \
 && for j in byteman.jar byteman-helper.jar chaos-agent.jar; do \
      f=$(find /staging/byteman-dist -name "$j" -type f | head -n 1); \
      if [ -n "$f" ]; then cp "$f" /staging/byteman/; fi; \
    done \
 && find /staging/byteman-dist -maxdepth 3 -type f \( -iname 'LICENSE*' -o -iname 'COPYING*' \) -exec cp {} /staging/byteman/ \; \
 && test -f /staging/byteman/byteman.jar
RUN sh /usr/local/sbin/assemble-rootfs.sh /staging/faultd /rootfs /staging/byteman

# --- 3. runtime ---------------------------------------------------------------------------------
FROM scratch
COPY --from=rootfs /rootfs/ /
LABEL org.opencontainers.image.title="faultd" \
      org.opencontainers.image.description="Node-level chaos injection daemon, wire-compatible with Chaos Mesh's chaos-daemon, with a rollback journal" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
# gRPC (mTLS) and HTTP (/metrics, /healthz, /readyz): Chaos Mesh's ports.
EXPOSE 31767 31766
# Runs as root: faultd needs capabilities in the host's namespaces (see deploy/README.md).
USER 0:0
ENTRYPOINT ["/usr/local/bin/faultd"]
