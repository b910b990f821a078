# One build for both binaries; `--target api` or `--target bot` picks the image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --workspace --locked

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
USER nobody

FROM runtime AS api
COPY --from=build /src/target/release/feed-api /usr/local/bin/feed-api
# The operator's dead-letter tool (docs/OPERATIONS.md): docker compose exec api feed-dead-letters list
COPY --from=build /src/target/release/feed-dead-letters /usr/local/bin/feed-dead-letters
ENV HOST=0.0.0.0 PORT=8090 RUST_LOG=info
EXPOSE 8090
HEALTHCHECK --interval=5s --timeout=3s --retries=30 CMD curl -sf http://127.0.0.1:8090/api/ready || exit 1
CMD ["feed-api"]

FROM runtime AS bot
COPY --from=build /src/target/release/feed-bot /usr/local/bin/feed-bot
ENV RUST_LOG=info
CMD ["feed-bot"]
