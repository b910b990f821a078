# syntax=docker/dockerfile:1
# One build for both binaries; `--target api` or `--target bot` picks the image.
# Needs BuildKit (the default builder since Docker Engine 23) for RUN --mount.
FROM rust:1-bookworm AS build
WORKDIR /src
# Only what the release build reads: an edit to docs, scripts or the README
# leaves this layer, and the build below, cached.
COPY Cargo.toml Cargo.lock ./
COPY migrations migrations
COPY bot bot
COPY api api
# The crate registry and target/ live in cache mounts kept between builds, so
# a source edit recompiles the workspace crates only, not the dependencies
# and librdkafka. A cache mount is not part of the image: the binaries are
# copied out in the same step. `locked`: compose builds api and bot at once.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --workspace --locked \
 && mkdir -p /out \
 && cp target/release/feed-api target/release/feed-dead-letters target/release/feed-bot /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
USER nobody

FROM runtime AS api
COPY --from=build /out/feed-api /usr/local/bin/feed-api
# The operator's dead-letter tool (docs/OPERATIONS.md): docker compose exec api feed-dead-letters list
COPY --from=build /out/feed-dead-letters /usr/local/bin/feed-dead-letters
ENV HOST=0.0.0.0 PORT=8090 RUST_LOG=info
EXPOSE 8090
HEALTHCHECK --interval=5s --timeout=3s --retries=30 CMD curl -sf http://127.0.0.1:8090/api/ready || exit 1
CMD ["feed-api"]

FROM runtime AS bot
COPY --from=build /out/feed-bot /usr/local/bin/feed-bot
ENV RUST_LOG=info
CMD ["feed-bot"]
