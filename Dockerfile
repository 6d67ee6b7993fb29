# syntax=docker/dockerfile:1.7
#
# Images of the KEDA HTTP Add-on, one target per component, plus the e2e suite's sample app:
#
#   docker buildx build --target interceptor|scaler|operator|e2e-echo \
#       --platform linux/amd64,linux/arm64 .
#
# (`cargo xtask images` builds all four.) The build stages run on the build machine's own
# platform and cross-compile fully static musl binaries with cargo-zigbuild, so an arm64 image
# costs no emulation. The runtime images are distroless/static: no shell, no package manager,
# CA certificates only, running as the non-root user 65532.
#
# Expected size: about 2 MB of distroless base plus one stripped static binary of 10-15 MB,
# so 12-17 MB per image (compressed about half of that).

ARG RUST_VERSION=1.95
ARG ZIGBUILD_VERSION=0.24.1
ARG ZIG_VERSION=0.14.1

FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-slim-bookworm AS toolchain
ARG ZIGBUILD_VERSION
ARG ZIG_VERSION
ARG TARGETARCH
# zig is the cross C compiler and linker for ring's C code and the final link. python3-pip comes
# from the base image's Debian release; the tools it installs are pinned. The Rust target of
# TARGETARCH is written to /rust-target for the build stages.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-pip \
    && rm -rf /var/lib/apt/lists/* \
    && pip3 install --no-cache-dir --break-system-packages \
        "ziglang==${ZIG_VERSION}" "cargo-zigbuild==${ZIGBUILD_VERSION}" \
    && case "${TARGETARCH}" in \
        amd64) target=x86_64-unknown-linux-musl ;; \
        arm64) target=aarch64-unknown-linux-musl ;; \
        *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac \
    && rustup target add "${target}" \
    && echo "${target}" > /rust-target
WORKDIR /src
COPY . .
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=always

# The components, in one cargo invocation.
FROM toolchain AS build
ARG TARGETARCH
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,id=http-add-on-target-${TARGETARCH},sharing=locked \
    target="$(cat /rust-target)" \
    && cargo zigbuild --locked --release --target "${target}" \
        --bin interceptor --bin scaler --bin operator \
    && mkdir -p /out \
    && for bin in interceptor scaler operator; do cp "target/${target}/release/${bin}" /out/; done

# The e2e sample app (the simulated cluster's pod app), built apart so that the components'
# dependency features are not unified with the simulator's.
FROM toolchain AS build-echo
ARG TARGETARCH
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,id=http-add-on-target-${TARGETARCH},sharing=locked \
    target="$(cat /rust-target)" \
    && cargo zigbuild --locked --release --target "${target}" \
        --package http-add-on-sim --bin echo \
    && mkdir -p /out \
    && cp "target/${target}/release/echo" /out/

FROM gcr.io/distroless/static-debian12:nonroot AS runtime
USER 65532:65532

# The HTTP proxy: proxy 8080, admin 9090, metrics 2223.
FROM runtime AS interceptor
COPY --from=build /out/interceptor /usr/local/bin/interceptor
EXPOSE 8080 9090 2223
ENTRYPOINT ["/usr/local/bin/interceptor"]

# The KEDA external scaler: gRPC 9090, metrics 2223.
FROM runtime AS scaler
COPY --from=build /out/scaler /usr/local/bin/scaler
EXPOSE 9090 2223
ENTRYPOINT ["/usr/local/bin/scaler"]

# The operator: metrics 8080, health probes 8081.
FROM runtime AS operator
COPY --from=build /out/operator /usr/local/bin/operator
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/operator"]

# The e2e suite's sample app: echoes every request as JSON, `/status/<code>`, `/delay/<duration>`;
# configured by PORT, POD_NAME, POD_NAMESPACE, POD_IP, ECHO_STARTUP_DELAY, ECHO_RESPONSE_DELAY.
FROM runtime AS e2e-echo
COPY --from=build-echo /out/echo /usr/local/bin/echo
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/echo"]
